"""Restoration quality of a checkpoint as a benchmark record: ``gpmask eval``'s report, dated.

Runs ``gpmask eval`` (the same code and options; ``gpmask eval --help``) and writes its
JSON report inside a record (:mod:`gpmask.bench.records`: date, command, machine), which
``benchmarks/report.py`` renders into the README's quality table.

    python benchmarks/bench_quality.py -o benchmarks/results/quality.json
    python benchmarks/bench_quality.py --count 6 --size 192x192 -o quality.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from gpmask.bench.records import write_record
from gpmask.cli import main as gpmask_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo", help="checkpoint file (default demo)")
    parser.add_argument("--count", default="6", help="images per weather and style (default 6)")
    parser.add_argument("--size", default="192x192", help="HxW of the images (default 192x192)")
    parser.add_argument("-o", "--output", required=True, help="the record to write (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        report = Path(temp) / "eval.json"
        code = gpmask_main(["eval", args.checkpoint, "--count", args.count, "--size", args.size,
                            "--no-progress", "-o", str(report)])
        if code:
            return code
        figures = json.loads(report.read_text())
    figures["checkpoint"] = args.checkpoint  # the name given, not this machine's path
    write_record(args.output, "quality", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
