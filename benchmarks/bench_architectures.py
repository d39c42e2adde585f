"""ONNX Runtime CPU latency of the paper's ``ggpm-unet`` beside the demo model's: fp32, int8-cpu.

For each model it exports a bundle, calibrates its CPU-tuned ``int8-cpu`` graphs with
every layer quantized (no quality budget: the figure is the cost of the architecture,
and a random network's quality means nothing), and measures both precisions with
``gpmask bench``'s API (:func:`gpmask.bench.run_benchmark`) at 256x256 and 720p, batch 1.
It prints, per model and size, the parameters, the MACs per pixel counted from the
ONNX graph, the p50 latencies, their ratio and the work rate.

Usage::

    python benchmarks/bench_architectures.py [--iters 10] [--warmup 2]
    python benchmarks/bench_architectures.py --checkpoint paper.gpmask.safetensors

The demo model is the shipped checkpoint (a random ``tiny`` one while it is not there);
``ggpm-unet`` is a random single-weather checkpoint at the paper's size unless
``--checkpoint`` names a real one (say, the paper's files after ``gpmask import``).
Timings depend on the architecture, not on the trained values.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from gpmask.bench import run_benchmark
from gpmask.bench.fixtures import UNBOUNDED_DB, prepared_bundle, random_checkpoint
from gpmask.calibration.options import CalibrationOptions
from gpmask.masking.checkpoint import MaskedCheckpoint

SIZES = ["256x256", "720x1280"]
PRECISIONS = ["fp32", "int8-cpu"]


def lines_for(name: str, report: dict, parameters: int) -> list[str]:
    """One line per size: both precisions' p50, their ratio, MACs per pixel and GFLOP/s."""
    entries = {(r["precision"], e["size"]): e for r in report["results"] for e in r["sizes"]}
    lines = []
    for size in SIZES:
        height, width = (int(v) for v in size.split("x"))
        fp32, int8 = entries.get(("fp32", size)), entries.get(("int8-cpu", size))
        if not (fp32 and int8):
            continue
        macs = report["macs"][size]
        fp32_ms, int8_ms = fp32["latency"]["p50_ms"], int8["latency"]["p50_ms"]
        lines.append(
            f"{name:10s} {parameters:>10,} {macs / (height * width):>10,.0f} {size:>9s} "
            f"{macs / 1e9:8.2f} {fp32_ms:10.1f} {int8_ms:10.1f} {int8_ms / fp32_ms:8.2f}x "
            f"{fp32['work']['gflops']:8.1f} {int8['psnr_db']:8.1f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint",
                        help="a ggpm-unet checkpoint (default: random, at the paper's size)")
    parser.add_argument("--demo", default="demo", help="the model to compare with (default demo)")
    parser.add_argument("--arch-kwargs", type=json.loads, default={},
                        help="JSON keyword arguments of the random ggpm-unet (default: {})")
    parser.add_argument("--iters", type=int, default=10, help="recorded runs (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded runs (default 2)")
    parser.add_argument("--calibration-frames", type=int, default=8,
                        help="synthetic frames per weather for int8-cpu (default 8)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = str(Path(temp) / "ggpm-unet.gpmask.safetensors")
            random_checkpoint("ggpm-unet", args.arch_kwargs, weathers=("rain",)).save(checkpoint)
        for name, source in (("demo", args.demo), ("ggpm-unet", checkpoint)):
            folder = Path(temp) / name
            folder.mkdir()
            # int8-cpu with every layer quantized
            options = CalibrationOptions(synthetic=args.calibration_frames,
                                         max_psnr_drop=UNBOUNDED_DB)
            bundle, path = prepared_bundle(folder, source, ["int8-cpu"], options)
            report = run_benchmark(bundle, backends=["onnxruntime-cpu"], precisions=PRECISIONS,
                                   sizes=SIZES, iters=args.iters, warmup=args.warmup,
                                   checkpoint=str(path))
            rows += lines_for(name, report, MaskedCheckpoint.load(path).num_parameters())
    machine = report["machine"]
    print(f"machine   {machine['cpu']}, {machine['physical_cores']} cores, {machine['threads']} "
          f"threads, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"versions  onnxruntime {report['versions']['onnxruntime']}; session "
          f"{report['settings']['onnxruntime_session']}")
    print(f"timing    p50 of {args.iters} runs after {args.warmup} warm-up, batch 1, ONNX Runtime "
          f"CPU; int8-cpu with every layer quantized")
    print(f"{'model':10s} {'params':>10s} {'MAC/px':>10s} {'size':>9s} {'GMAC':>8s} "
          f"{'fp32 ms':>10s} {'int8 ms':>10s} {'int8/fp32':>9s} {'GFLOP/s':>8s} "
          f"{'int8 dB':>8s}")
    print("\n".join(rows))
    print("(GFLOP/s: fp32's 2 x MACs / p50; int8 dB: PSNR of int8-cpu against fp32)")


if __name__ == "__main__":
    main()
