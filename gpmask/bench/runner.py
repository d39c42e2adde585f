"""``run_benchmark``: every available backend x precision x size, side by side, as one report.

The run is ordered so that every comparison is made on numbers from this same run:
torch eager (the reference) is measured first (without it, the first exact fp32
target: never ``openvino-default``, which may compute in bf16), then the other
references, then each backend at each precision, all on the same frames. Derived
figures come from the recorded ones:

- ``vs_torch``: the target's p50 latency / torch eager's p50 at the same size (below 1
  is faster). The median is used for ratios because it is what a frame typically
  costs, and a shared machine's stalls move it least;
- ``switching.ratio``: p50 of the run changing weather every frame / p50 of the run
  keeping one weather;
- ``work``: MACs counted from the ONNX graph at the size (:mod:`gpmask.bench.macs`),
  ``gflops = 2 * MACs / p50``, and that as a fraction of the measured float32 matmul
  peak of the device the target ran on (for fp16/int8, a fraction of the fp32 peak);
  for CPU targets also as a fraction of the instruction-throughput limit of the
  precision the target computes in (``limit``: :mod:`gpmask.bench.instruction_limit`);
- ``psnr_db``: mean PSNR over the frames of the target's output against the quality
  reference's (torch eager fp32 when it ran, else the first fp32 target).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from gpmask.bench.inputs import BenchFrame, bench_frames
from gpmask.bench.instruction_limit import InstructionLimit, instruction_limits
from gpmask.bench.machine import describe_machine, matmul_peak_gflops, runtime_versions
from gpmask.bench.macs import count_macs
from gpmask.bench.measure import (
    TargetMeasurement,
    TimingPlan,
    measure_target,
    target_device,
)
from gpmask.bench.targets import Target, plan_targets, reference_specs
from gpmask.bench.torch_reference import reference_checkpoint
from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.metrics import psnr
from gpmask.precision import AUTO, NAMES, check_precision
from gpmask.precision import precision as definition
from gpmask.runtime.backends.onnxruntime import SessionSettings
from gpmask.runtime.backends.openvino import CompileSettings
from gpmask.runtime.frame_batch import padded_size
from gpmask.sizes import format_size, parse_size

#: Version of the ``bench.json`` layout.
REPORT_SCHEMA = 1
DEFAULT_BACKENDS = ("torch", "openvino-default", "openvino", "onnxruntime-cpu",
                    "onnxruntime-cuda", "tensorrt")
#: ``auto``: each backend at the precision ``--precision auto`` takes there (what a user
#: of ``gpmask run`` gets); name precisions (or ``all``) to compare them.
DEFAULT_PRECISIONS = (AUTO,)
#: References that do not stand for an exact fp32 computation (OpenVINO's default may
#: run in bf16), so never the quality reference.
INEXACT_REFERENCES = ("openvino-default",)
DEFAULT_SIZES = ("256x256", "480x854", "720x1280")


def _check_sizes_fit(bundle: Bundle, sizes: dict[str, tuple[int, int]]) -> None:
    """Refuse, before any target loads, a size whose frames this machine cannot hold."""
    from gpmask.runtime.memory import WorkingMemory

    memory = WorkingMemory.of_bundle(bundle)
    for size in sizes.values():
        memory.check(padded_size(*size, bundle.size_multiple), "--sizes")


def run_benchmark(
    bundle: str | os.PathLike,
    backends: Sequence[str] = DEFAULT_BACKENDS,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    sizes: Sequence[str] = DEFAULT_SIZES,
    iters: int = 20,
    warmup: int = 3,
    checkpoint: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Benchmark ``bundle``; returns the report (schema: see :mod:`gpmask.bench.report_files`).

    Args:
        backends: names from :data:`gpmask.bench.targets.BENCH_BACKENDS`.
        precisions: graph (or engine) precisions; those the bundle lacks are skipped.
        sizes: ``HxW`` frame sizes (:mod:`gpmask.sizes`), batch 1.
        iters, warmup: recorded and unrecorded runs per size and target.
        checkpoint: the checkpoint the bundle was exported from, for torch eager
            (default: the shipped demo when the manifest records it).
        progress: show a tqdm progress bar on stderr.
    """
    if iters < 1 or warmup < 0:
        raise GpmaskError(f"--iters must be >= 1 and --warmup >= 0 (got {iters}, {warmup})")
    parsed = {format_size(parse_size(size)): parse_size(size) for size in sizes}
    if "all" in precisions:
        precisions = [AUTO, *NAMES]
    for precision in precisions:
        check_precision(precision, "--precisions", allow_auto=True)
    opened = Bundle.open(bundle)
    _check_sizes_fit(opened, parsed)
    source, torch_note = reference_checkpoint(opened, checkpoint) \
        if {"torch", "torch-compile"} & set(backends) else (None, None)
    settings = SessionSettings()
    threads = settings.intra_op_threads
    targets, skipped = plan_targets(
        opened, list(backends), list(precisions),
        reference_specs(source, None if source else torch_note, threads))
    exact = next((t for t in targets if t.precision == "fp32"
                  and t.backend not in INEXACT_REFERENCES), None)
    if exact is not None:  # the quality reference first, so every target is compared with it
        targets = [exact, *(t for t in targets if t is not exact)]
    source_name = torch_note if source else None
    multiple = opened.size_multiple
    frames = {size: bench_frames(h, w, opened.weathers, multiple)
              for size, (h, w) in parsed.items()}
    macs = _macs_by_size(opened, parsed, precisions)
    peaks = {device: matmul_peak_gflops(device, threads)
             for device in sorted({target_device(t).split(":")[0] for t in targets})}
    limits = instruction_limits(threads) if "cpu" in peaks else {}
    results = []
    reference: dict[str, list[np.ndarray]] | None = None
    reference_label = None
    with tqdm(total=len(targets) * len(parsed), desc="bench", unit="run",
              disable=not progress) as bar:
        for target in targets:
            bar.set_postfix_str(target.label)
            measured = measure_target(
                target, str(opened.root), frames, opened.default_weather,
                TimingPlan(iters, warmup), step=lambda size: bar.update(),
            )
            if (reference is None and target.precision == "fp32"
                    and target.backend not in INEXACT_REFERENCES):
                reference = {size: m.outputs for size, m in measured.sizes.items()}
                reference_label = target.label
            results.append(_target_record(target, measured, frames, reference, macs, peaks,
                                          limits))
    _add_torch_ratios(results)
    return {
        "schema": REPORT_SCHEMA,
        "bundle": {"path": str(opened.root), "weathers": opened.weathers,
                   "keep_weather": opened.default_weather, "checkpoint": source_name},
        "settings": {"backends": list(backends), "precisions": list(precisions),
                     "sizes": list(parsed), "iters": iters, "warmup": warmup, "batch": 1,
                     "threads": threads, "onnxruntime_session": settings.describe(),
                     "openvino_compile": CompileSettings().describe()},
        "machine": {**describe_machine(threads), "matmul_peak_gflops": peaks,
                    "instruction_limits": {p: limit.to_dict() for p, limit in limits.items()}},
        "versions": runtime_versions(),
        "reference": {"latency": "torch/fp32" if source else None, "quality": reference_label},
        "macs": macs,
        "results": results,
        "skipped": [{"backend": s.backend, "precision": s.precision, "reason": s.reason,
                     "line": s.line()} for s in skipped],
    }


def _macs_by_size(bundle: Bundle, sizes: dict[str, tuple[int, int]],
                  precisions: Sequence[str]) -> dict[str, int]:
    """MACs of the keep weather's network per size, from its fp32 graph when it has one."""
    have = bundle.precisions(bundle.default_weather)
    precision = "fp32" if "fp32" in have else next((p for p in precisions if p in have), have[0])
    graph = bundle.graph_path(bundle.default_weather, precision)
    multiple = bundle.size_multiple
    return {size: count_macs(graph, (1, 3, *padded_size(h, w, multiple)))
            for size, (h, w) in sizes.items()}


def _quality(frames: list[BenchFrame], outputs: list[np.ndarray],
             reference: list[np.ndarray] | None) -> float | str | None:
    """Mean PSNR of ``outputs`` against ``reference`` over the frames (``"inf"``: identical)."""
    if reference is None:
        return None
    value = float(np.mean([psnr(frame.image(out), frame.image(ref))
                           for frame, out, ref in zip(frames, outputs, reference, strict=True)]))
    return "inf" if math.isinf(value) else value


def _target_record(target: Target, measured: TargetMeasurement,
                   frames: dict[str, list[BenchFrame]],
                   reference: dict[str, list[np.ndarray]] | None,
                   macs: dict[str, int], peaks: dict[str, float],
                   limits: dict[str, InstructionLimit]) -> dict[str, Any]:
    peak = peaks[measured.device.split(":")[0]]
    limit_precision = ("bf16" if measured.inference_precision == "bf16"
                       else definition(target.precision).instruction_limit)
    limit = limits.get(limit_precision) if measured.device == "cpu" else None
    sizes = []
    for size, m in measured.sizes.items():
        gflops = 2 * macs[size] / (m.keep["p50_ms"] / 1000) / 1e9
        sizes.append({
            "size": size,
            "latency": m.keep,
            "switching": {"latency": m.switch, "ratio": m.switch["p50_ms"] / m.keep["p50_ms"]},
            "work": {"macs": macs[size], "gflops": gflops, "peak_gflops": peak,
                     "roofline_fraction": gflops / peak,
                     "limit": None if limit is None else {
                         "precision": limit_precision, "instruction": limit.instruction,
                         "gops": limit.gops,
                         "fraction": gflops / limit.gops if limit.gops else None}},
            "psnr_db": _quality(frames[size], m.outputs,
                                reference[size] if reference else None),
        })
    return {"backend": target.backend, "precision": target.precision, "label": target.label,
            "auto": target.auto,
            "device": measured.device, "inference_precision": measured.inference_precision,
            "load_s": measured.load_s,
            "cold_start_s": measured.cold_start_s, "cold_start_size": sizes[0]["size"],
            "memory": measured.memory, "sizes": sizes}


def _add_torch_ratios(results: list[dict[str, Any]]) -> None:
    """Each size's ``vs_torch``: p50 latency over torch eager's p50 at that size."""
    torch_p50 = {entry["size"]: entry["latency"]["p50_ms"]
                 for record in results if record["backend"] == "torch"
                 for entry in record["sizes"]}
    for record in results:
        for entry in record["sizes"]:
            base = torch_p50.get(entry["size"])
            entry["vs_torch"] = entry["latency"]["p50_ms"] / base if base else None
