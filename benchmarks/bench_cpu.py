"""CPU inference side by side: gpmask's paths against what an x86 user would otherwise pick.

Every candidate restores the same frame with the bundle's first weather, in one
process, interleaved (each round runs every candidate in turn, so a change in machine
load hits all of them), and the medians are compared:

- gpmask: ONNX Runtime fp32 and int8-cpu; OpenVINO (gpmask's backend) fp32, bf16
  (where the CPU has it), int8 (the TensorRT-format graph), int8-cpu and int8-openvino;
- references: OpenVINO's ``compile_model`` with no options on the bundle's fp32 graph
  (what an x86 user gets without gpmask; bf16 on a CPU that has it), OpenVINO fp32 on
  the same graph with only the f32 hint, torch eager, and optionally torch.compile
  and NNCF's int8 quantization of the fp32 graph for OpenVINO.

For each candidate: median latency, PSNR of its output against ONNX Runtime fp32 on
the frame, work rate (2 x MACs of the fp32 graph / median) and its fraction of the
instruction-throughput limit of the precision it computes in
(:mod:`gpmask.bench.instruction_limit`). Then the goals of issue 13:

- gpmask's fastest CPU path with PSNR >= 45 dB: <= 0.8x OpenVINO's default latency;
- gpmask's best int8 path: >= 60 % of the int8 limit on the demo network, >= 85 % on a
  wide one;
- gpmask's OpenVINO fp32: no slower than OpenVINO fp32 on the same graph.

Usage::

    python benchmarks/bench_cpu.py                          # the shipped demo network
    python benchmarks/bench_cpu.py --arch msunet            # a wide network, random weights
    python benchmarks/bench_cpu.py --bundle B --checkpoint FILE --torch-compile --nncf

Without ``--bundle`` it exports the checkpoint (``--checkpoint``, default the shipped
demo; with ``--arch``, a random checkpoint of that architecture: timings depend on the
architecture, not on the trained values) and calibrates its int8, int8-cpu and
int8-openvino graphs into ``--workdir`` (default a temporary folder; give one to reuse
it with ``--bundle``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpmask.bench.fixtures import prepared_bundle, random_checkpoint
from gpmask.bench.inputs import bench_frames
from gpmask.bench.instruction_limit import instruction_limits
from gpmask.bench.macs import count_macs
from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.host import physical_cores
from gpmask.metrics import psnr
from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend
from gpmask.runtime.backends.openvino import (
    OPENVINO_DEFAULTS,
    CompileSettings,
    OpenVinoBackend,
    precision_refusal,
)
from gpmask.sizes import parse_size

QUALITY_DB = 45.0
DEMO_ARCHS = ("demo", "tiny", "msunet-tiny")


@dataclass
class Candidate:
    """One way to restore a frame: its label, who makes it, its precision's limit."""

    label: str
    gpmask: bool
    limit: str
    run: Callable[[np.ndarray], np.ndarray]
    times: dict[str, list[float]] = field(default_factory=dict)
    psnr: dict[str, float] = field(default_factory=dict)


def prepare_bundle(args: argparse.Namespace, folder: Path) -> tuple[Path, Path | None]:
    """The bundle to measure (exported and calibrated unless given) and its checkpoint."""
    if args.bundle:
        return Path(args.bundle), Path(args.checkpoint) if args.checkpoint else None
    from gpmask.calibration.options import CalibrationOptions

    source = random_checkpoint(args.arch) if args.arch else args.checkpoint or "demo"
    return prepared_bundle(folder, source, ("int8", "int8-cpu", "int8-openvino"),
                           CalibrationOptions(max_psnr_drop=args.max_psnr_drop), progress=True)


def candidates(bundle: Bundle, checkpoint: Path | None, args: argparse.Namespace,
               weather: str) -> tuple[list[Candidate], list[str]]:
    """Everything that can run here, and a line for each that cannot."""
    made, skipped = [], []
    only = [weather]

    def backend_run(backend) -> Callable[[np.ndarray], np.ndarray]:
        return lambda batch: backend.run(weather, batch)

    made.append(Candidate("gpmask onnxruntime fp32", True, "fp32",
                          backend_run(OnnxRuntimeBackend(bundle, "fp32", weathers=only))))
    made.append(Candidate("gpmask onnxruntime int8-cpu", True, "int8",
                          backend_run(OnnxRuntimeBackend(bundle, "int8-cpu", weathers=only))))
    default = OpenVinoBackend(bundle, "fp32", settings=OPENVINO_DEFAULTS, weathers=only)
    made.append(Candidate(f"openvino default ({default.inference_precision})", False,
                          "bf16" if default.inference_precision == "bf16" else "fp32",
                          backend_run(default)))
    plain = CompileSettings(performance_hint=None, threads=None)
    made.append(Candidate("openvino fp32 (f32 hint only)", False, "fp32",
                          backend_run(OpenVinoBackend(bundle, "fp32", plain, only))))
    for precision, limit in (("fp32", "fp32"), ("bf16", "bf16"), ("int8", "int8"),
                             ("int8-cpu", "int8"), ("int8-openvino", "int8")):
        refusal = precision_refusal(precision)
        if refusal:
            skipped.append(f"gpmask openvino {precision}: {refusal}")
            continue
        try:
            backend = OpenVinoBackend(bundle, precision, weathers=only)
        except GpmaskError as exc:
            skipped.append(f"gpmask openvino {precision}: {exc}")
            continue
        made.append(Candidate(f"gpmask openvino {precision}", True, limit, backend_run(backend)))
    if args.nncf:
        try:
            made.append(nncf_candidate(bundle, weather))
        except ImportError:
            skipped.append("nncf: not installed (pip install -e '.[bench]')")
    made.extend(torch_candidates(bundle, checkpoint, args, weather, skipped))
    return made, skipped


def torch_candidates(bundle: Bundle, checkpoint: Path | None, args: argparse.Namespace,
                     weather: str, skipped: list[str]) -> list[Candidate]:
    from gpmask.bench.torch_reference import (
        TorchCompileBackend,
        TorchEagerBackend,
        reference_checkpoint,
        torch_compile_refusal,
    )

    try:
        source, note = reference_checkpoint(bundle, str(checkpoint) if checkpoint else None)
    except GpmaskError as exc:
        source, note = None, str(exc)
    if source is None:
        skipped.append(f"torch: {note}")
        return []
    threads = physical_cores()
    eager = TorchEagerBackend(source, [weather], "cpu", threads)
    made = [Candidate("torch eager", False, "fp32", lambda b: eager.run(weather, b))]
    refusal = torch_compile_refusal() if args.torch_compile else "not asked (--torch-compile)"
    if refusal:
        skipped.append(f"torch.compile: {refusal}")
    else:
        model = TorchCompileBackend(source, [weather], "cpu", threads)
        made.append(Candidate("torch.compile", False, "fp32", lambda b: model.run(weather, b)))
    return made


def nncf_candidate(bundle: Bundle, weather: str) -> Candidate:
    """NNCF's int8 quantization of the fp32 graph (OpenVINO's own tool), compiled for latency.

    Calibrated on the same synthetic frames as gpmask's int8 graphs; overflow fix on
    every layer (7-bit weights), as gpmask's, so it is exact on CPUs without VNNI too.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from gpmask.calibration.frame_sets import synthetic_calibration_frames, to_batch
    from gpmask.runtime.backends.openvino import core

    frames = synthetic_calibration_frames(weather, bundle.weathers, 32, (128, 128))
    model = nncf.quantize(
        core().read_model(str(bundle.graph_path(weather))),
        nncf.Dataset([to_batch(frame) for frame in frames.degraded]),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
    request = core().compile_model(model, "CPU", CompileSettings().config("int8")) \
        .create_infer_request()
    return Candidate("nncf int8 on openvino", False, "int8",
                     lambda batch: request.infer({0: batch})[0])


def measure(items: list[Candidate], size: str, batch: np.ndarray, rounds: int,
            per_round: int) -> None:
    """Interleaved timing of every candidate at one size, and PSNR against the first."""
    reference = np.clip(np.array(items[0].run(batch)), 0, 1)
    for item in items:
        output = np.clip(np.array(item.run(batch)), 0, 1)
        item.psnr[size] = psnr(output, reference)
        item.run(batch)  # second warm-up run
        item.times[size] = []
    for _ in range(rounds):
        for item in items:
            for _ in range(per_round):
                start = time.perf_counter()
                item.run(batch)
                item.times[size].append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder with int8 and int8-cpu graphs "
                                         "(default: export and calibrate one)")
    parser.add_argument("--checkpoint", help="the bundle's checkpoint (for torch; default demo)")
    parser.add_argument("--arch", help="export a random checkpoint of this architecture "
                                       "(e.g. msunet) instead of --checkpoint")
    parser.add_argument("--workdir", help="folder for the exported bundle (default: temporary)")
    parser.add_argument("--max-psnr-drop", type=float, default=0.3,
                        help="int8 calibration budget when exporting (default 0.3 dB)")
    parser.add_argument("--sizes", default="256x256,720x1280", help="HxW list")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--per-round", type=int, default=3,
                        help="runs of each candidate per round (default 3)")
    parser.add_argument("--torch-compile", action="store_true", help="add torch.compile")
    parser.add_argument("--nncf", action="store_true", help="add NNCF int8 on OpenVINO")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(args.workdir or temp)
        folder.mkdir(parents=True, exist_ok=True)
        root, checkpoint = prepare_bundle(args, folder)
        bundle = Bundle.open(root)
        weather = bundle.weathers[0]
        items, skipped = candidates(bundle, checkpoint, args, weather)
        limits = instruction_limits(physical_cores())
        macs = {}
        for size in args.sizes.split(","):
            height, width = parse_size(size)
            frame = bench_frames(height, width, [weather], bundle.size_multiple)[0]
            macs[size] = count_macs(bundle.graph_path(weather), frame.batch.shape)
            measure(items, size, frame.batch, args.rounds, args.per_round)
    report(items, skipped, limits, macs, args, bundle)


def report(items: list[Candidate], skipped: list[str], limits: dict, macs: dict[str, int],
           args: argparse.Namespace, bundle: Bundle) -> None:
    arch = args.arch or (bundle.manifest.get("checkpoint") or {}).get("metadata", {}).get(
        "arch", "demo")
    print(f"network {arch}, weather {bundle.weathers[0]}, {physical_cores()} threads, "
          f"{args.rounds} rounds x {args.per_round} runs interleaved, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("limits: " + "; ".join(
        f"{p} {v.gops:.0f} GOP/s ({v.instruction})" if v.gops else f"{p}: {v.reason}"
        for p, v in limits.items()))
    medians = {item.label: {s: statistics.median(t) * 1000 for s, t in item.times.items()}
               for item in items}
    for size in macs:
        print(f"\n{size}: {macs[size] / 1e9:.2f} GMAC (fp32 graph)")
        print(f"  {'path':36s} {'median ms':>10s} {'PSNR dB':>8s} {'GOP/s':>7s} {'of limit':>14s}")
        for item in items:
            ms = medians[item.label][size]
            gops = 2 * macs[size] / (ms / 1000) / 1e9
            limit = limits.get(item.limit)
            fraction = f"{gops / limit.gops:.0%} {item.limit}" if limit and limit.gops else "-"
            quality = item.psnr[size]
            print(f"  {item.label:36s} {ms:10.1f} {quality:8.1f} {gops:7.1f} {fraction:>14s}")
        goals(items, medians, size, macs[size], limits, arch)
    for line in skipped:
        print(f"skipped: {line}")


def goals(items: list[Candidate], medians: dict, size: str, macs: int, limits: dict,
          arch: str) -> None:
    by_label = {item.label: item for item in items}
    default = next(item for item in items if item.label.startswith("openvino default"))
    within = [item for item in items if item.gpmask and item.psnr[size] >= QUALITY_DB]
    if within:
        best = min(within, key=lambda item: medians[item.label][size])
        ratio = medians[best.label][size] / medians[default.label][size]
        print(f"  goal: fastest gpmask path >= {QUALITY_DB:.0f} dB ({best.label}, "
              f"{best.psnr[size]:.1f} dB) / {default.label}: {ratio:.2f}x (goal <= 0.80x)")
    int8 = [item for item in items if item.gpmask and item.limit == "int8"]
    limit = limits.get("int8")
    if int8 and limit and limit.gops:
        best = min(int8, key=lambda item: medians[item.label][size])
        fraction = 2 * macs / (medians[best.label][size] / 1000) / 1e9 / limit.gops
        goal = 0.60 if arch in DEMO_ARCHS else 0.85
        print(f"  goal: best gpmask int8 ({best.label}) at {fraction:.0%} of the int8 limit "
              f"(goal >= {goal:.0%})")
    ours, theirs = by_label.get("gpmask openvino fp32"), by_label.get(
        "openvino fp32 (f32 hint only)")
    if ours and theirs:
        ratio = medians[ours.label][size] / medians[theirs.label][size]
        print(f"  goal: gpmask openvino fp32 / openvino fp32 on the same graph: {ratio:.2f}x "
              f"(goal <= 1.00x)")


if __name__ == "__main__":
    sys.exit(main())
