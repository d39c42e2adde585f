"""Quality and CPU latency of fp16, int8 and int8-cpu graphs against fp32, per weather.

Exports a checkpoint (default: the shipped demo) to a bundle, calibrates every
precision with the default settings (int8 budget 0.3 dB), then prints, per weather,
the PSNR drop on held-out synthetic frames (from the calibration report) and the
ONNX Runtime CPU latency of each precision relative to fp32 on the same frames.

Goals (issue 4): fp16 drop <= 0.05 dB, int8 drop <= 0.3 dB, int8 <= 0.5x fp32 latency.

    python benchmarks/bench_precision.py [--checkpoint demo] [--sizes 256x256,720x1280]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from gpmask.bundle import COMMON, Bundle
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.pipeline import calibrate_bundle
from gpmask.graph.session import cpu_session
from gpmask.precision import CALIBRATED as PRECISIONS
from gpmask.sizes import parse_size


def median_latency_ms(session, frame: np.ndarray, repeats: int) -> float:
    """Median wall time of one run, after one warm-up run."""
    name = session.get_inputs()[0].name
    session.run(None, {name: frame})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: frame})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--sizes", default="256x256,720x1280", help="HxW list for latency")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=32, help="calibration frames")
    args = parser.parse_args()

    from gpmask.export import export_bundle

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "bundle"
        export_bundle(args.checkpoint, root, verify=False)
        options = CalibrationOptions(synthetic=args.synthetic)
        reports = {p: calibrate_bundle(root, p, options) for p in PRECISIONS}
        bundle = Bundle.open(root)

        print("\nPSNR drop vs fp32 on held-out synthetic frames (dB; int8: layers in fp32)")
        print(f"{'weather':<10}" + "".join(f"{p:>22}" for p in PRECISIONS))
        for weather in [*bundle.weathers, COMMON]:
            cells = []
            for precision in PRECISIONS:
                result = reports[precision][weather]
                cell = f"{result.scores.drop:+.3f}"
                if result.budget is not None:
                    cell += f" ({len(result.budget.excluded)}/{result.budget.candidates})"
                cells.append(f"{cell:>22}")
            print(f"{weather:<10}" + "".join(cells))

        print("\nONNX Runtime CPU latency, median ms (ratio to fp32)")
        for size in args.sizes.split(","):
            height, width = parse_size(size)
            frame = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
            for weather in bundle.weathers[:1]:
                fp32 = median_latency_ms(cpu_session(bundle.graph_path(weather)), frame,
                                         args.repeats)
                line = f"{size:>10} {weather:<8} fp32 {fp32:8.1f}"
                for precision in PRECISIONS:
                    ms = median_latency_ms(
                        cpu_session(bundle.graph_path(weather, precision)), frame, args.repeats)
                    line += f"  {precision} {ms:8.1f} ({ms / fp32:.2f}x)"
                print(line)


if __name__ == "__main__":
    main()
