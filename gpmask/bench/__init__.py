"""Latency, memory, work-rate and quality benchmarks of a bundle on every backend here.

:func:`run_benchmark` measures every available backend x precision x frame size side
by side against torch eager (the reference, rebuilt from the bundle's checkpoint) and
returns one report; :func:`write_report` writes it as ``bench.json``, ``bench.md`` and
PNG plots. ``gpmask bench`` is the command line over the two. Torch is imported here
and never by :mod:`gpmask.runtime`.
"""

from gpmask.bench.report_files import write_report
from gpmask.bench.runner import run_benchmark

__all__ = ["run_benchmark", "write_report"]
