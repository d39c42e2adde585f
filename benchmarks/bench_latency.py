"""The README's latency figures in one run: ONNX Runtime CPU fp32 vs torch eager, and more.

Measured side by side in one process, on the same frames, with ``gpmask bench``'s API
(:func:`gpmask.bench.run_benchmark`), and printed with their ratios:

- ONNX Runtime CPU fp32 latency against torch eager at 256x256 and 720p (goal <= 0.5x);
- int8 against fp32 on ONNX Runtime CPU, when the bundle has int8 graphs (``--int8``
  calibrates the CPU-tuned ``int8-cpu`` graphs first);
- the switching ratio (weather changed every frame vs kept) and the roofline fraction
  of fp32 at 720p against the measured float32 matmul peak (goal >= 50%).

Usage::

    python benchmarks/bench_latency.py [--checkpoint demo] [--int8] [-o bench-latency/]
    python benchmarks/bench_latency.py --bundle BUNDLE --checkpoint FILE

Without ``--bundle`` it exports the checkpoint into a temporary folder (the shipped demo
model, or a random checkpoint of the same ``tiny`` architecture while the demo is not
there: timings depend on the architecture, not on the trained values).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from gpmask.bench import run_benchmark, write_report
from gpmask.bench.fixtures import prepared_bundle

SIZES = ["256x256", "720x1280"]
INT8 = ("int8-cpu", "int8")


def figures(report: dict) -> list[str]:
    """The README's lines, each with the numbers it is computed from."""
    entries = {(r["label"], e["size"]): e for r in report["results"] for e in r["sizes"]}
    lines = []
    for size in SIZES:
        torch_entry = entries.get(("torch/fp32", size))
        ort = entries.get(("onnxruntime-cpu/fp32", size))
        if torch_entry and ort:
            lines.append(f"{size:9s} torch eager p50 {torch_entry['latency']['p50_ms']:8.1f} ms | "
                         f"ORT CPU fp32 p50 {ort['latency']['p50_ms']:8.1f} ms | ratio "
                         f"{ort['vs_torch']:.2f}x (goal <= 0.50x)")
            # Both run the same multiply-accumulates, so the ratio is bounded by how
            # close torch already is to the machine's peak.
            torch_fraction = torch_entry["work"]["roofline_fraction"]
            lines.append(f"{size:9s} torch eager runs at {torch_fraction:.0%} of the float32 "
                         f"matmul peak: 0.50x would need ORT at {2 * torch_fraction:.0%} of it")
        for precision in INT8:
            quantized = entries.get((f"onnxruntime-cpu/{precision}", size))
            if quantized and ort:
                ratio = quantized["latency"]["p50_ms"] / ort["latency"]["p50_ms"]
                lines.append(f"{size:9s} {precision} p50 {quantized['latency']['p50_ms']:8.1f} ms"
                             f" vs fp32 {ort['latency']['p50_ms']:8.1f} ms: {ratio:.2f}x, "
                             f"PSNR vs torch {quantized['psnr_db']:.1f} dB")
        if ort:
            work = ort["work"]
            lines.append(f"{size:9s} ORT fp32 {work['macs'] / 1e9:.2f} GMAC -> "
                         f"{work['gflops']:.1f} GFLOP/s = {work['roofline_fraction']:.0%} of "
                         f"the {work['peak_gflops']:.0f} GFLOP/s float32 matmul peak"
                         + (" (goal >= 50%)" if size == "720x1280" else ""))
            lines.append(f"{size:9s} ORT fp32 switching weather every frame: "
                         f"{ort['switching']['ratio']:.2f}x the latency of keeping one")
    lines += [f"skipped: {skip['line']}" for skip in report["skipped"]]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export --checkpoint)")
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--int8", action="store_true",
                        help="calibrate int8-cpu graphs into the exported bundle first")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("-o", "--output", help="also write bench.json, bench.md, plots here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        if args.bundle:
            bundle, checkpoint = Path(args.bundle), args.checkpoint
        else:
            bundle, checkpoint = prepared_bundle(Path(temp), args.checkpoint,
                                                 ["int8-cpu"] if args.int8 else [])
        report = run_benchmark(bundle, backends=["torch", "onnxruntime-cpu"],
                               precisions=["fp32", *INT8], sizes=SIZES, iters=args.iters,
                               warmup=args.warmup, checkpoint=str(checkpoint))
    machine = report["machine"]
    print(f"machine   {machine['cpu']}, {machine['physical_cores']} cores, {machine['threads']} "
          f"threads, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"versions  onnxruntime {report['versions']['onnxruntime']}, torch "
          f"{report['versions']['torch']}; session {report['settings']['onnxruntime_session']}")
    print(f"timing    p50 of {args.iters} runs after {args.warmup} warm-up, batch 1")
    print("\n".join(figures(report)))
    if args.output:
        write_report(report, args.output)


if __name__ == "__main__":
    main()
