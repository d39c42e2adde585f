"""What a benchmark ran on: CPU, GPU, thread count, runtime versions, and the peak to beat.

Every latency figure is only meaningful next to the machine that produced it, and a
work rate only next to that machine's physical limit. The limit measured here is the
single-precision matrix-product rate: a large square ``float32`` matmul is the most
efficient dense arithmetic a BLAS library (oneDNN/MKL inside torch) gets from the
cores, with the same number of threads the benchmarked sessions use.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import Any

from gpmask import __version__
from gpmask.host import cpu_model, gpu, gpu_problem, notable_cpu_flags, physical_cores

#: Distributions whose versions a report records (absent ones are recorded as null).
RUNTIME_PACKAGES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt",
                    "polygraphy", "opencv-python-headless")


def runtime_versions() -> dict[str, str | None]:
    """Installed versions of gpmask and every runtime a benchmark may use."""
    versions: dict[str, str | None] = {"gpmask": __version__, "python": platform.python_version()}
    for package in RUNTIME_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def describe_machine(threads: int) -> dict[str, Any]:
    """CPU model, physical cores, logical CPUs, threads used, GPU, OS."""
    return {"cpu": cpu_model(), "cpu_flags": notable_cpu_flags(),
            "physical_cores": physical_cores(),
            "logical_cpus": os.cpu_count(), "threads": threads,
            "gpu": None if gpu_problem() else gpu().name,
            "platform": platform.platform()}


def matmul_peak_gflops(device: str, threads: int, size: int = 2048, repeats: int = 5) -> float:
    """The best float32 GFLOP/s of ``size``-square matrix products on ``device``.

    The best of ``repeats`` (after one warm-up) is the machine's reachable peak: a
    shared or throttled machine only ever makes a product slower, never faster.
    """
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(size, size, generator=generator).to(device) for _ in range(2))
    best = float("inf")
    for index in range(repeats + 1):
        start = time.perf_counter()
        torch.mm(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        if index:
            best = min(best, elapsed)
    return 2 * size**3 / best / 1e9
