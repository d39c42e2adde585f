"""Working memory of a frame: gpmask's estimate from the graph vs what each CPU runtime takes.

The runtime refuses a frame whose working memory the machine lacks
(:mod:`gpmask.runtime.memory`). Its estimate is the largest set of tensors alive at once
(:func:`gpmask.graph.memory.live_bytes_per_pixel`) times ``RUNTIME_FACTOR``; this prints,
per architecture, runtime and frame size, the growth of the peak resident set while one
frame is restored (in a fresh subprocess each) and its ratio to the live-tensor estimate.
The factor must stay above every ratio printed, or a frame the check lets through could
still exhaust memory.

Usage::

    python benchmarks/bench_working_memory.py [--archs tiny,msunet,ggpm-unet] [--sizes 1024x1024]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from gpmask.sizes import format_size, parse_sizes

BACKENDS = ("onnxruntime-cpu", "openvino")


def child(bundle: str, backend: str, height: int, width: int) -> dict[str, float]:
    """Restore one frame of the size after a small one; report the peak's growth."""
    import numpy as np
    import onnx

    from gpmask.bench.memory import reset_peak_rss, rss_mib
    from gpmask.bundle import COMMON, Bundle
    from gpmask.graph.memory import live_bytes_per_pixel
    from gpmask.runtime import Restorer

    live = live_bytes_per_pixel(onnx.load(Bundle.open(bundle).graph_path(COMMON),
                                          load_external_data=False))
    restorer = Restorer(bundle, backend=backend, precision="fp32")
    restorer.restore(np.zeros((64, 64, 3), np.uint8), COMMON)  # sessions warmed up
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    reset_peak_rss()
    before = rss_mib()["rss_mib"]
    restorer.restore(frame, COMMON, bgr=True)
    grown = (rss_mib()["peak_rss_mib"] - before) * 2**20
    return {"live_bytes_per_pixel": live, "grown_bytes": grown,
            "ratio": grown / (live * height * width)}


def main() -> None:
    from gpmask.bench.fixtures import prepared_bundle, random_checkpoint
    from gpmask.graph.memory import RUNTIME_FACTOR
    from gpmask.host import notable_cpu_flags

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="tiny,msunet,ggpm-unet")
    parser.add_argument("--sizes", default="1024x1024")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bundle, backend, height, width = args.child
        print(json.dumps(child(bundle, backend, int(height), int(width))))
        return
    print(f"CPU flags: {' '.join(notable_cpu_flags())}; RUNTIME_FACTOR {RUNTIME_FACTOR}")
    print(f"{'arch':<10} {'backend':<16} {'size':>10} {'live B/px':>10} {'grown MiB':>10} "
          f"{'ratio':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.archs.split(","):
            (Path(folder) / arch).mkdir()
            bundle, _ = prepared_bundle(Path(folder) / arch, random_checkpoint(arch))
            for backend in BACKENDS:
                for height, width in parse_sizes(args.sizes):
                    output = subprocess.run(
                        [sys.executable, __file__, "--child", str(bundle), backend,
                         str(height), str(width)], capture_output=True, text=True)
                    if output.returncode:
                        print(f"{arch:<10} {backend:<16} failed: "
                              f"{output.stderr.strip().splitlines()[-1]}")
                        continue
                    row = json.loads(output.stdout)
                    print(f"{arch:<10} {backend:<16} {format_size((height, width)):>10} "
                          f"{row['live_bytes_per_pixel']:>10.0f} "
                          f"{row['grown_bytes'] / 2**20:>10.0f} {row['ratio']:>6.2f}")


if __name__ == "__main__":
    main()
