"""Say what this machine can run: libraries, working providers, GPU, CPU flags, bundle pairs.

Reports Python, gpmask and torch; ONNX Runtime and the execution providers that start a
session and compute correctly here (not merely those listed); OpenVINO, its devices and
the CPU capabilities it reports; TensorRT (the full library or the lean runtime), the
GPU and its compute capability; the CUDA driver and runtime; the CPU's notable flags.
Given a bundle, it lists every backend x precision pair of the backend registry with
whether it runs here and why each other one does not, and what `--backend auto
--precision auto` would load.

examples:
  gpmask check
  gpmask check bundle/
  gpmask check bundle/ --json > check.json
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import path_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", nargs="?", type=path_argument,
                        help="a bundle folder: also list which backend x precision pairs run "
                             "it here and why the others do not (default: the machine only)")
    parser.add_argument("--json", action="store_true",
                        help="print the report as JSON instead of text")


def run(args: argparse.Namespace) -> int:
    import json

    from gpmask.runtime.check import check

    report = check(args.bundle)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0
