"""Compact vs dense bundles: bytes stored, bit-identical outputs, cold start, resident memory.

The same checkpoint is exported in both layouts (``gpmask export --layout compact|dense``).
Figures, each printed with the numbers it comes from:

- bytes: weights file and whole bundle (weights + graphs) of each layout, against one
  network's weights (4 bytes x parameters); the goal for compact is at most
  (1 + N (d + 1/32) + 5 %) x one network, d the fraction of elements a weather changes
  (measured here from the baked weights), N the weathers; dense is about N + 1;
- outputs: every weather's graph of both layouts on ONNX Runtime, max abs difference
  (goal 0 in fp32), and the compact graphs' folded weights against the dense bake;
- cold start, bundle open to the first restored frame with every weather loaded as
  the runtime loads them (``OnnxRuntimeBackend``), and resident memory (VmRSS) after
  one frame per weather: each in a fresh process, layouts interleaved A, B, A, B,
  medians (goals: cold start compact / dense <= 1.2x; memory no worse than dense);
- with ``--precisions fp16,int8``: the same bytes and outputs for calibrated graphs,
  and for int8 how much of a weather's int8 weights differs from the common graph's
  (why int8 graphs stay dense).

    python benchmarks/bench_compact.py                      # msunet (6.5M), random, d = 0.1
    python benchmarks/bench_compact.py --checkpoint demo    # the shipped demo model
    python benchmarks/bench_compact.py --arch ggpm-unet --precisions fp16,int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpmask.bench.fixtures import random_checkpoint
from gpmask.sizes import parse_size


def changed_fraction(checkpoint, weather: str) -> float:
    """Fraction of elements whose baked bits differ from the common network's."""
    baked, common = checkpoint.bake_numpy(weather), checkpoint.bake_numpy("common")
    changed = sum(int((baked[n].view(f"u{v.itemsize}") != v.view(f"u{v.itemsize}")).sum())
                  for n, v in common.items())
    return changed / checkpoint.num_parameters()


def bundle_bytes(root: Path, precision: str) -> tuple[int, int]:
    """(weights file, weights file + graph files) of ``precision``."""
    from gpmask.bundle import COMMON, Bundle

    bundle = Bundle.open(root)
    weights = f"weights.{precision}.bin" if precision != "fp32" else "weights.bin"
    stored = (root / weights).stat().st_size
    graphs = sum(bundle.graph_path(w, precision).stat().st_size
                 for w in [COMMON, *bundle.weathers])
    return stored, stored + graphs


def max_output_difference(roots: dict[str, Path], precision: str, size: tuple[int, int]) -> dict:
    """Per graph, max abs difference between the layouts' outputs on one random frame."""
    import onnxruntime as ort

    from gpmask.bundle import COMMON, Bundle

    image = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    bundles = {layout: Bundle.open(root) for layout, root in roots.items()}
    differences = {}
    for weather in [COMMON, *bundles["dense"].weathers]:
        outputs = [ort.InferenceSession(str(b.graph_path(weather, precision)),
                                        providers=["CPUExecutionProvider"])
                   .run(None, {"image": image})[0] for b in bundles.values()]
        differences[weather] = float(np.max(np.abs(outputs[0] - outputs[1])))
    return differences


def folded_equals_bake(root: Path, checkpoint) -> bool:
    """Whether every compact graph's folded weights are the checkpoint's bake, bit for bit."""
    import onnx
    from onnx import numpy_helper

    from gpmask.bundle import COMMON, Bundle
    from gpmask.graph.fold import fold_rebuild

    bundle = Bundle.open(root)
    for weather in [COMMON, *bundle.weathers]:
        folded = fold_rebuild(onnx.load(str(bundle.graph_path(weather))))
        values = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
        for name, baked in checkpoint.bake_numpy(weather).items():
            if name in values and not np.array_equal(values[name].view(np.uint8),
                                                     baked.view(np.uint8)):
                return False
    return True


def int8_changed_fraction(root: Path) -> float:
    """Of the elements of a weather's int8 weights, the fraction that differs from the
    common graph's (averaged over weathers)."""
    import onnx
    from onnx import numpy_helper

    from gpmask.bundle import COMMON, Bundle

    bundle = Bundle.open(root)

    def int8_weights(weather: str) -> dict[str, np.ndarray]:
        model = onnx.load(str(bundle.graph_path(weather, "int8")))
        return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
                if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4}

    common = int8_weights(COMMON)
    fractions = []
    for weather in bundle.weathers:
        own = int8_weights(weather)
        names = [n for n in own if n in common and own[n].shape == common[n].shape]
        changed = sum(int((own[n] != common[n]).sum()) for n in names)
        fractions.append(changed / max(sum(own[n].size for n in names), 1))
    return float(np.mean(fractions))


def child(root: str, size: tuple[int, int]) -> dict:
    """Cold start and resident memory of the runtime on ``root`` (runs in its own process)."""
    from gpmask.bench.memory import rss_mib
    from gpmask.bundle import Bundle
    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend

    image = np.random.default_rng(0).random((1, 3, *size), dtype=np.float32)
    start = time.perf_counter()
    bundle = Bundle.open(root)
    backend = OnnxRuntimeBackend(bundle)
    loaded = time.perf_counter() - start
    backend.run(bundle.default_weather, image)
    cold = time.perf_counter() - start
    for weather in backend.weathers:
        backend.run(weather, image)
    memory = rss_mib()
    return {"load_s": loaded, "cold_start_s": cold, "rss_mib": memory["rss_mib"],
            "peak_rss_mib": memory["peak_rss_mib"]}


def measure_runtime(roots: dict[str, Path], size: str, repeats: int) -> dict[str, dict]:
    """Medians over ``repeats`` fresh processes per layout, interleaved."""
    samples: dict[str, list[dict]] = {layout: [] for layout in roots}
    for _ in range(repeats):
        for layout, root in roots.items():
            result = subprocess.run([sys.executable, __file__, "--child", str(root),
                                     "--size", size], check=True, capture_output=True, text=True)
            samples[layout].append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {layout: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
            for layout, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="msunet",
                        help="architecture of the random checkpoint (default msunet)")
    parser.add_argument("--checkpoint", help="a checkpoint file or 'demo' instead of random")
    parser.add_argument("--weathers", type=int, default=3, help="weathers (random, default 3)")
    parser.add_argument("--density", type=float, default=0.1,
                        help="mask density per tensor (random, default 0.1)")
    parser.add_argument("--size", default="256x256", help="frame HxW (default 256x256)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per layout for cold start and memory (default 3)")
    parser.add_argument("--precisions", default="",
                        help="also calibrate these (fp16, int8, int8-cpu; comma-separated)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = parse_size(args.size)
    if args.child:
        print(json.dumps(child(args.child, size)))
        return

    from gpmask.bundle.summary import format_bytes
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle
    from gpmask.export import export_bundle
    from gpmask.masking.checkpoint import MaskedCheckpoint

    if args.checkpoint:
        checkpoint = MaskedCheckpoint.load(args.checkpoint)
    else:
        from gpmask.data.synthetic import WEATHERS

        names = [*WEATHERS, *(f"weather{i}" for i in range(len(WEATHERS), args.weathers))]
        checkpoint = random_checkpoint(args.arch, weathers=names[:args.weathers],
                                       density=args.density, spread=0.02,
                                       made_by="benchmarks/bench_compact.py")
    weathers = len(checkpoint.weathers)
    network = 4 * checkpoint.num_parameters()
    density = float(np.mean([changed_fraction(checkpoint, w) for w in checkpoint.weathers]))
    goal = 1 + weathers * (density + 1 / 32) + 0.05
    print(f"model       {args.checkpoint or 'random ' + args.arch}: "
          f"{checkpoint.num_parameters():,} parameters ({format_bytes(network)} in fp32), "
          f"{weathers} weathers, elements changed per weather d = {density:.4f}")
    with tempfile.TemporaryDirectory() as temp:
        roots = {layout: Path(temp) / layout for layout in ("compact", "dense")}
        for layout, root in roots.items():
            start = time.perf_counter()
            export_bundle(checkpoint, root, verify=False, progress=False, layout=layout)
            print(f"export      {layout}: {time.perf_counter() - start:.2f} s")
        for layout, root in roots.items():
            stored, total = bundle_bytes(root, "fp32")
            print(f"bytes fp32  {layout:8s} weights {format_bytes(stored)} = "
                  f"{stored / network:.3f}x one network; with graphs {format_bytes(total)} = "
                  f"{total / network:.3f}x")
        print(f"goal        compact <= (1 + N (d + 1/32) + 5 %) = {goal:.3f}x; "
              f"dense about N + 1 = {weathers + 1}x")
        differences = max_output_difference(roots, "fp32", size)
        print(f"outputs     fp32 compact vs dense, max abs difference per graph: {differences}")
        print(f"weights     compact graphs folded == dense bake, bit for bit: "
              f"{folded_equals_bake(roots['compact'], checkpoint)}")
        for precision in filter(None, args.precisions.split(",")):
            options = CalibrationOptions(synthetic=8, calibration_size=(64, 64), eval_size=(64, 64),
                                         max_psnr_drop=100)
            for root in roots.values():
                calibrate_bundle(root, precision, options)
            sizes = {layout: bundle_bytes(root, precision) for layout, root in roots.items()}
            print(f"bytes {precision:5s} compact {format_bytes(sizes['compact'][1])} vs dense "
                  f"{format_bytes(sizes['dense'][1])} = "
                  f"{sizes['compact'][1] / sizes['dense'][1]:.3f}x (weights + graphs)")
            print(f"outputs     {precision} compact vs dense: "
                  f"{max_output_difference(roots, precision, size)}")
            if precision == "int8":
                print(f"int8        a weather's int8 weights differ from common's in "
                      f"{int8_changed_fraction(roots['dense']):.1%} of elements "
                      f"(per-channel scales follow each weather's weights): kept dense")
        runtime = measure_runtime(roots, args.size, args.repeats)
    for layout, figures in runtime.items():
        print(f"runtime     {layout:8s} load {figures['load_s']:.3f} s, cold start (open -> "
              f"first {args.size} frame) {figures['cold_start_s']:.3f} s, RSS "
              f"{figures['rss_mib']:.1f} MiB, peak {figures['peak_rss_mib']:.1f} MiB "
              f"(median of {args.repeats})")
    compact, dense = runtime["compact"], runtime["dense"]
    cold = compact["cold_start_s"] / dense["cold_start_s"]
    print(f"ratios      cold start compact/dense {cold:.2f}x (goal <= 1.2x); RSS "
          f"{compact['rss_mib'] / dense['rss_mib']:.2f}x, peak "
          f"{compact['peak_rss_mib'] / dense['peak_rss_mib']:.2f}x (goal <= 1.0x)")


if __name__ == "__main__":
    main()
