"""A benchmark's figures as a JSON record: what was measured, when, how, and on what.

Every figure the README and docs/benchmarks.md show is read from such a record in
``benchmarks/results/`` by ``benchmarks/report.py``, never typed by hand, so each one
carries the date, the exact command that reproduces it and the machine it ran on
(CPU model and its notable flags, cores, the runtimes' versions).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from gpmask.bench.machine import describe_machine, runtime_versions
from gpmask.fileio import write_text_atomic
from gpmask.host import cpu_model, notable_cpu_flags, physical_cores


def record(benchmark: str, figures: dict[str, Any]) -> dict[str, Any]:
    """``figures`` with the benchmark's name, today's date, the command line that ran it
    (as typed from the repository root) and the machine."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return {"benchmark": benchmark, "date": datetime.date.today().isoformat(),
            "command": " ".join(["python", script.as_posix(), *sys.argv[1:]]),
            "machine": {**describe_machine(physical_cores()),
                        "load_average": list(os.getloadavg())},
            "versions": runtime_versions(), **figures}


def machine_banner(threads: int) -> str:
    """The line a benchmark prints first: the CPU, its notable flags, the threads it
    uses and the load average, so a figure read off the terminal carries its machine."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    flags = " ".join(notable_cpu_flags()) or "no notable flags"
    return f"machine {cpu_model()}, flags {flags}, {threads} threads, load average {load}"


def write_record(path: str | os.PathLike, benchmark: str, figures: dict[str, Any]) -> None:
    """Write :func:`record` of ``figures`` to ``path`` as JSON, atomically."""
    write_text_atomic(path, json.dumps(record(benchmark, figures), indent=2) + "\n")
