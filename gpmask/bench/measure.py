"""Measuring one backend at one precision: cold start, latency, switching, memory, outputs.

The order of work matters for honest numbers:

- the peak resident set is restarted just before loading, so the target's peak is its
  own (see :mod:`gpmask.bench.memory`);
- cold start is wall time from opening the bundle (or, for torch, baking the
  checkpoint) to the first restored frame, in this already-running process: imports
  and the OS file cache are warm, so it is the cost a long-lived service pays per load;
- each timed run starts with warm-up iterations that are not recorded (allocator
  arenas, kernel selection, caches);
- every backend's ``run`` returns a host array, so the device has finished before the
  clock is read (torch on a GPU synchronises explicitly; ONNX Runtime and TensorRT
  copy the output back to the host inside ``run``);
- the *keep* run restores every frame with one weather, the *switch* run gives each
  frame its own weather, so consecutive frames always change weather; the frames are
  the same, so their ratio is the cost of switching alone.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpmask.bench.inputs import BenchFrame
from gpmask.bench.memory import device_memory_used_mib, reset_peak_rss, rss_mib
from gpmask.bench.stats import latency_summary
from gpmask.bench.targets import Target
from gpmask.bundle import Bundle


@dataclass(frozen=True)
class TimingPlan:
    """How long to time each size: ``iters`` recorded runs after ``warmup`` unrecorded."""

    iters: int
    warmup: int


@dataclass
class SizeMeasurement:
    """One target at one size: keep and switch latencies, outputs of each frame."""

    keep: dict[str, float]
    switch: dict[str, float]
    outputs: list[np.ndarray]


@dataclass
class TargetMeasurement:
    """One target at every size, with its load, cold-start and memory figures.

    ``inference_precision`` is the float precision the engine chose, where it says
    (OpenVINO: ``f32`` or ``bf16``), else None.
    """

    device: str
    inference_precision: str | None
    load_s: float
    cold_start_s: float
    memory: dict[str, Any]
    sizes: dict[str, SizeMeasurement]


def target_device(target: Target) -> str:
    """``cpu`` or ``cuda:0``: where ``target`` does its arithmetic."""
    return "cpu" if target.spec.device == "cpu" else "cuda:0"


def timed_runs(run: Callable[[int], object], plan: TimingPlan) -> dict[str, float]:
    """Latency summary of ``plan.iters`` calls ``run(i)`` after ``plan.warmup`` untimed ones."""
    for index in range(plan.warmup):
        run(index)
    times = []
    for index in range(plan.iters):
        start = time.perf_counter()
        run(index)
        times.append((time.perf_counter() - start) * 1000)
    return latency_summary(times)


def measure_target(
    target: Target,
    bundle_root: str,
    frames_by_size: dict[str, list[BenchFrame]],
    keep_weather: str,
    plan: TimingPlan,
    step: Callable[[str], None],
) -> TargetMeasurement:
    """Load ``target``, time it at every size, and record memory; ``step(size)`` after each."""
    device = target_device(target)
    gc.collect()
    peak_is_own = reset_peak_rss()
    before = rss_mib()
    device_before = device_memory_used_mib(0) if device != "cpu" else None
    start = time.perf_counter()
    # run_benchmark verified every file of the bundle when it opened it; here, as in
    # earlier reports, the load time covers the backend checking the files it reads.
    backend = target.spec.load(Bundle.open(bundle_root, verify=False), target.precision, 0)
    load_s = time.perf_counter() - start
    inference_precision = getattr(backend, "inference_precision", None)
    first = next(iter(frames_by_size.values()))
    backend.run(keep_weather, first[0].batch)
    cold_start_s = time.perf_counter() - start
    device_samples = []
    sizes = {}
    try:
        for size, frames in frames_by_size.items():
            keep = timed_runs(lambda i, f=frames: backend.run(keep_weather, f[i % len(f)].batch),
                              plan)
            switch = timed_runs(
                lambda i, f=frames: backend.run(f[i % len(f)].weather, f[i % len(f)].batch), plan)
            outputs = [np.array(backend.run(frame.weather, frame.batch)) for frame in frames]
            if device_before is not None:
                device_samples.append(device_memory_used_mib(0))
            sizes[size] = SizeMeasurement(keep, switch, outputs)
            step(size)
        after = rss_mib()
    finally:
        backend.close()
    # The kernel keeps VmHWM lazily from approximate per-CPU counters, so it can read a
    # fraction of a MiB below a VmRSS sampled inside the same window; the window's peak is
    # at least every sample taken in it.
    peak = max(after["peak_rss_mib"], after["rss_mib"], before["rss_mib"])
    memory = {"rss_before_load_mib": before["rss_mib"], "peak_rss_mib": peak,
              "peak_rss_above_before_mib": peak - before["rss_mib"],
              "peak_scope": "target" if peak_is_own else "process",
              "device_memory_mib": (max(device_samples) - device_before
                                    if device_samples else None)}
    return TargetMeasurement(device, inference_precision, load_s, cold_start_s, memory, sizes)
