"""CPU inference side by side: gpmask's default against what an x86 user would otherwise run.

For each network (the shipped demo model, and the paper's ``ggpm-unet`` at its full
size with random weights: latency depends on the architecture, not the values) and
each frame size, every path restores the same frame of the first weather, in one
process, interleaved (each round runs every path in turn, so a change in machine load
hits all of them), and the medians are compared. The paths:

- gpmask's default: ``Restorer(bundle)`` with no options, on a freshly exported bundle
  (compact layout) and on the same bundle calibrated (int8, int8-cpu, int8-openvino);
  its backend and precision are what ``auto`` chose on this machine;
- gpmask's explicit paths: OpenVINO at every precision, ONNX Runtime fp32 and int8-cpu;
- the peers, as a user would run them on a plain dense export of one weather's network
  (``layout dense``): OpenVINO's ``compile_model`` with no options (bf16 on a CPU that
  has it), NNCF's int8 ``quantize`` with its default settings, ONNX Runtime with its
  default session options, torch eager and (``--torch-compile``) torch.compile; and,
  so that the layout's cost shows, OpenVINO's default and NNCF on the bundle's compact
  graph (``layout compact``).

For each path: median latency, PSNR of its output against the fp32 reference (torch
eager where it runs, else ONNX Runtime on the dense export), work rate (2 x MACs of the
fp32 graph / median) and its fraction of the instruction-throughput limit of the
precision it computes in, AMX tiles included where the CPU has them
(:mod:`gpmask.bench.instruction_limit`). Then the goals:

- gpmask's default on a fresh bundle: <= 1.0x OpenVINO's default on the dense export;
- gpmask's default on a calibrated bundle: <= 0.8x OpenVINO's default on the dense
  export, and <= 1.0x NNCF int8 on it;
- gpmask's fastest int8 path: <= 0.9x NNCF int8 on the dense export;
- no path above 100 % of its precision's limit.

Usage::

    python benchmarks/bench_cpu.py                                   # demo and ggpm-unet
    python benchmarks/bench_cpu.py --networks demo --sizes 256x256 -o cpu.json
    python benchmarks/bench_cpu.py --networks ggpm-unet --round-seconds 2 --torch-compile

``-o`` writes every row as JSON (machine, CPU flags, date and command included), which
``benchmarks/report.py`` turns into the README's table.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bench.fixtures import UNBOUNDED_DB, checkpoint_file, random_checkpoint
from gpmask.bench.inputs import bench_frames
from gpmask.bench.instruction_limit import (
    best_limits,
    instruction_limits,
    measure_instruction_limits,
)
from gpmask.bench.macs import count_macs
from gpmask.bench.records import machine_banner, write_record
from gpmask.bundle import Bundle
from gpmask.host import physical_cores
from gpmask.metrics import psnr
from gpmask.precision import precision as definition
from gpmask.sizes import parse_size

#: Networks this benchmark knows: name -> (architecture, its keyword arguments); ``demo``
#: is the shipped checkpoint, the others random checkpoints of their full size.
NETWORKS = {"demo": None, "ggpm-unet": ("ggpm-unet", {})}
CALIBRATED = ("int8", "int8-cpu", "int8-openvino")
GOALS = {"fresh default / openvino default (dense)": 1.0,
         "calibrated default / openvino default (dense)": 0.8,
         "calibrated default / nncf int8 default (dense)": 1.0,
         "best gpmask int8 / nncf int8 default (dense)": 0.9}


@dataclass
class Candidate:
    """One way to restore a frame, and what was measured of it."""

    label: str
    gpmask: bool
    layout: str
    precision: str
    run: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    times: list[float] = field(default_factory=list)
    psnr_db: float | None = None


def _last_reason(exc: Exception) -> str:
    """The innermost line of a runtime's nested exception text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _backend_run(backend: Any, weather: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda batch: backend.run(weather, batch)


def _openvino_default(graph: Path) -> tuple[Callable, str]:
    """OpenVINO's ``compile_model(read_model(graph), "CPU")`` with no options."""
    from gpmask.runtime.backends.openvino import core

    compiled = core().compile_model(core().read_model(str(graph)), "CPU")
    request = compiled.create_infer_request()
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return (lambda batch: request.infer({0: batch})[0]), ("bf16" if hint == "bf16" else "fp32")


def _nncf_default(graph: Path, bundle: Bundle, weather: str) -> Callable:
    """NNCF's ``quantize`` with its default settings on ``graph``, compiled by default."""
    import nncf

    from gpmask.calibration.frame_sets import synthetic_calibration_frames, to_batch
    from gpmask.runtime.backends.openvino import core

    frames = synthetic_calibration_frames(weather, bundle.weathers, 32, (128, 128))
    model = nncf.quantize(core().read_model(str(graph)),
                          nncf.Dataset([to_batch(frame) for frame in frames.degraded]))
    request = core().compile_model(model, "CPU").create_infer_request()
    return lambda batch: request.infer({0: batch})[0]


def _onnxruntime_default(graph: Path) -> Callable:
    import onnxruntime as ort

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def prepare(network: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The network's checkpoint file, fresh and calibrated bundles, and dense export."""
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle
    from gpmask.export import export_bundle

    arch = NETWORKS[network]
    source = checkpoint_file(random_checkpoint(*arch, made_by="benchmarks/bench_cpu.py")
                             if arch else "demo", folder)
    fresh = export_bundle(source, folder / "fresh", verify=False).root
    calibrated = Path(shutil.copytree(fresh, folder / "calibrated"))
    # Random weights: every layer quantized, on a few frames; the trained demo keeps the
    # budget.
    options = CalibrationOptions(max_psnr_drop=UNBOUNDED_DB, synthetic=8) if arch else \
        CalibrationOptions(max_psnr_drop=args.max_psnr_drop)
    for precision in CALIBRATED:
        calibrate_bundle(calibrated, precision, options)
    weather = Bundle.open(fresh).weathers[0]
    dense = export_bundle(source, folder / "dense", weathers=[weather], layout="dense",
                          verify=False).root
    return {"checkpoint": source, "fresh": fresh, "calibrated": calibrated, "dense": dense,
            "weather": weather}


def make_paths(made: dict[str, Any], args: argparse.Namespace) -> tuple[list[Candidate], list[str]]:
    """Every path that can run here, and a line for each that cannot."""
    from gpmask.runtime import Restorer
    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend
    from gpmask.runtime.backends.openvino import OpenVinoBackend, refusal

    weather, skipped = made["weather"], []
    fresh, calibrated = Bundle.open(made["fresh"]), Bundle.open(made["calibrated"])
    dense_graph = Bundle.open(made["dense"]).graph_path(weather)
    paths: list[Candidate] = []
    for name, bundle in (("fresh", fresh), ("calibrated", calibrated)):
        restorer = Restorer(bundle)
        paths.append(Candidate(f"gpmask default, {name} bundle ({restorer.backend_name} "
                           f"{restorer.precision})", True, bundle.layout, restorer.precision,
                           _backend_run(restorer.backend, weather)))
    for precision in ("fp32", "bf16", *CALIBRATED):
        problem = refusal(calibrated, precision)
        if problem:
            skipped.append(f"gpmask openvino {precision}: {problem}")
            continue
        try:
            backend = OpenVinoBackend(calibrated, precision, weathers=[weather])
        except RuntimeError as exc:  # OpenVINO refusing a graph gpmask wrote: a finding
            skipped.append(f"gpmask openvino {precision}: OpenVINO failed to compile it: "
                           f"{_last_reason(exc)}")
            continue
        paths.append(Candidate(f"gpmask openvino {precision}", True, calibrated.layout, precision,
                           _backend_run(backend, weather)))
    for precision in ("fp32", "int8-cpu"):
        backend = OnnxRuntimeBackend(calibrated, precision, weathers=[weather])
        paths.append(Candidate(f"gpmask onnxruntime {precision}", True, calibrated.layout,
                           precision, _backend_run(backend, weather)))
    for layout, graph in (("dense", dense_graph), ("compact", fresh.graph_path(weather))):
        run, precision = _openvino_default(graph)
        paths.append(Candidate(f"openvino default ({layout})", False, layout, precision, run))
        if args.no_nncf:
            continue
        try:
            paths.append(Candidate(f"nncf int8 default ({layout})", False, layout, "int8",
                               _nncf_default(graph, fresh, weather)))
        except ImportError:
            skipped.append("nncf: not installed (pip install -e '.[bench]')")
    paths.append(Candidate("onnxruntime default (dense)", False, "dense", "fp32",
                       _onnxruntime_default(dense_graph)))
    paths.extend(_torch_paths(made, args, weather, skipped))
    return paths, skipped


def _torch_paths(made: dict[str, Any], args: argparse.Namespace, weather: str,
                 skipped: list[str]) -> list[Candidate]:
    from gpmask.bench.torch_reference import (
        TorchCompileBackend,
        TorchEagerBackend,
        torch_compile_refusal,
    )
    from gpmask.masking.checkpoint import MaskedCheckpoint

    source = MaskedCheckpoint.load(made["checkpoint"])
    threads = physical_cores()
    paths = [Candidate("torch eager", False, "module", "fp32",
                   _backend_run(TorchEagerBackend(source, [weather], "cpu", threads), weather))]
    refusal = torch_compile_refusal() if args.torch_compile else "not asked (--torch-compile)"
    if refusal:
        skipped.append(f"torch.compile: {refusal}")
    else:
        compiled = TorchCompileBackend(source, [weather], "cpu", threads)
        paths.append(Candidate("torch.compile", False, "module", "fp32",
                           _backend_run(compiled, weather)))
    return paths


def measure(paths: list[Candidate], batch: np.ndarray, rounds: int, round_seconds: float) -> None:
    """Interleaved timing at one size (about ``round_seconds`` of each path per round, the
    paths shuffled each round), and PSNR against the reference: torch eager where it runs,
    else ONNX Runtime's default."""
    reference_label = "torch eager" if any(p.label == "torch eager" for p in paths) \
        else "onnxruntime default (dense)"
    outputs, repeats = {}, {}
    for path in paths:
        path.times = []
        start = time.perf_counter()
        outputs[path.label] = np.clip(np.array(path.run(batch)), 0, 1)
        path.run(batch)  # warm-up: caches, kernel choice, arenas
        repeats[path.label] = max(1, round(round_seconds / max(time.perf_counter() - start, 1e-6)
                                           * 2))
    reference = outputs[reference_label]
    for path in paths:
        path.psnr_db = psnr(outputs[path.label], reference)
    # each round in a new order: on a shared machine whose speed drifts within a round, no
    # path keeps the same place in it
    order = np.random.default_rng(0)
    for _ in range(rounds):
        for index in order.permutation(len(paths)):
            path = paths[index]
            for _ in range(repeats[path.label]):
                start = time.perf_counter()
                path.run(batch)
                path.times.append(time.perf_counter() - start)


def rows_of(paths: list[Candidate], macs: int, limits: dict) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        ms = statistics.median(path.times) * 1000
        gops = 2 * macs / (ms / 1000) / 1e9
        kind = definition(path.precision).instruction_limit
        limit = limits.get(kind)
        rows.append({"path": path.label, "gpmask": path.gpmask, "layout": path.layout,
                     "precision": path.precision, "median_ms": ms, "runs": len(path.times),
                     "psnr_db": None if path.psnr_db == float("inf") else path.psnr_db,
                     "gops": gops, "limit": kind,
                     "limit_fraction": gops / limit.gops if limit and limit.gops else None})
    return rows


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's goals as ratios of medians, each with its bar and whether it is met."""
    def ms(prefix: str) -> float | None:
        row = next((r for r in rows if r["path"].startswith(prefix)), None)
        return row["median_ms"] if row else None

    int8 = [r for r in rows if r["gpmask"] and definition(r["precision"]).instruction_limit
            == "int8"]
    measured = {
        "fresh default / openvino default (dense)": (ms("gpmask default, fresh"),
                                                     ms("openvino default (dense)")),
        "calibrated default / openvino default (dense)": (ms("gpmask default, calibrated"),
                                                          ms("openvino default (dense)")),
        "calibrated default / nncf int8 default (dense)": (ms("gpmask default, calibrated"),
                                                           ms("nncf int8 default (dense)")),
        "best gpmask int8 / nncf int8 default (dense)": (
            min((r["median_ms"] for r in int8), default=None),
            ms("nncf int8 default (dense)")),
    }
    result = []
    for name, (ours, theirs) in measured.items():
        ratio = ours / theirs if ours and theirs else None
        result.append({"goal": name, "ratio": ratio, "bar": GOALS[name],
                       "met": None if ratio is None else ratio <= GOALS[name]})
    over = [r["path"] for r in rows if (r["limit_fraction"] or 0) > 1.0]
    result.append({"goal": "no path above 100 % of its limit", "ratio": None, "bar": None,
                   "met": not over, "over": over})
    return result


def print_size(network: str, size: str, macs: int, rows: list[dict], met: list[dict]) -> None:
    print(f"\n{network} {size}: {macs / 1e9:.2f} GMAC (fp32 graph)")
    print(f"  {'path':52s} {'layout':8s} {'ms':>9s} {'PSNR dB':>8s} {'GOP/s':>7s} "
          f"{'of limit':>13s}")
    for row in rows:
        quality = "exact" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
        fraction = (f"{row['limit_fraction']:.0%} {row['limit']}"
                    if row["limit_fraction"] is not None else "-")
        print(f"  {row['path']:52s} {row['layout']:8s} {row['median_ms']:9.1f} {quality:>8s} "
              f"{row['gops']:7.1f} {fraction:>13s}")
    for goal in met:
        if goal["ratio"] is not None:
            mark = "met" if goal["met"] else "MISSED"
            print(f"  goal {goal['goal']}: {goal['ratio']:.2f}x (<= {goal['bar']:.1f}x) {mark}")
        elif goal["bar"] is None:
            print(f"  goal {goal['goal']}: {'met' if goal['met'] else 'MISSED: '}"
                  f"{', '.join(goal['over'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="demo,ggpm-unet",
                        help=f"from {','.join(NETWORKS)} (default demo,ggpm-unet)")
    parser.add_argument("--sizes", default="256x256,720x1280", help="HxW list")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--round-seconds", type=float, default=0.5,
                        help="about how long each path runs per round (default 0.5)")
    parser.add_argument("--max-psnr-drop", type=float, default=0.3,
                        help="the demo's int8 calibration budget (default 0.3 dB)")
    parser.add_argument("--torch-compile", action="store_true", help="add torch.compile")
    parser.add_argument("--no-nncf", action="store_true", help="leave NNCF out")
    parser.add_argument("-o", "--output", help="write the rows as JSON here")
    args = parser.parse_args()
    threads = physical_cores()
    limits = instruction_limits(threads)
    print(machine_banner(threads))
    print("limits: " + "; ".join(
        f"{p} {v.gops:.0f} GOP/s ({v.instruction})" if v.gops else f"{p}: {v.reason}"
        for p, v in limits.items()))
    report: dict[str, Any] = {"limits": {p: v.to_dict() for p, v in limits.items()},
                              "networks": {}}
    for network in args.networks.split(","):
        with tempfile.TemporaryDirectory() as temp:
            made = prepare(network, Path(temp), args)
            paths, skipped = make_paths(made, args)
            graph = Bundle.open(made["dense"]).graph_path(made["weather"])
            entry: dict[str, Any] = {"weather": made["weather"], "skipped": skipped,
                                     "sizes": {}}
            for size in args.sizes.split(","):
                height, width = parse_size(size)
                frame = bench_frames(height, width, [made["weather"]],
                                     Bundle.open(made["fresh"]).size_multiple)[0]
                macs = count_macs(graph, frame.batch.shape)
                measure(paths, frame.batch, args.rounds, args.round_seconds)
                # measured again beside every size: a VM's reachable peak moves over a run
                limits = best_limits(limits, measure_instruction_limits(threads))
                rows = rows_of(paths, macs, limits)
                met = goals(rows)
                print_size(network, size, macs, rows, met)
                entry["sizes"][size] = {"macs": macs, "rows": rows, "goals": met}
                report["networks"][network] = entry
                if args.output:  # after every size: a run stopped short keeps what it measured
                    report["limits"] = {p: v.to_dict() for p, v in limits.items()}
                    write_record(args.output, "bench_cpu", report)
            for line in skipped:
                print(f"  skipped: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
