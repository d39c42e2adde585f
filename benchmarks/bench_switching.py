"""Throughput when the weather changes on every frame vs one fixed weather, on one backend.

Switching weather is choosing another prepared session, so it should cost at most 2%
of throughput (issue 5). Frames are the demo's synthetic weather clip (held-out sample
images); both modes restore the same frames, in alternating rounds so that a change in
machine load hits both; the figure is the ratio of the median rounds.

    python benchmarks/bench_switching.py                 # demo model (or random tiny), 256x256
    python benchmarks/bench_switching.py --backend openvino
    python benchmarks/bench_switching.py --bundle B --size 512x512 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from gpmask.bench.fixtures import prepared_bundle, restore_rate
from gpmask.data.clips import make_clip
from gpmask.runtime import Restorer
from gpmask.runtime.backends import BACKENDS
from gpmask.sizes import format_size, parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export the demo checkpoint)")
    parser.add_argument("--checkpoint", default="demo", help="checkpoint exported without --bundle")
    parser.add_argument("--size", type=parse_size, default=(256, 256),
                        help="frame HxW (default 256x256)")
    parser.add_argument("--frames", type=int, default=48, help="frames per round (default 48)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS,
                        help="backend (default onnxruntime)")
    parser.add_argument("--precision", default="fp32", help="precision (default fp32)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        bundle = args.bundle or prepared_bundle(Path(folder), args.checkpoint)[0]
        restorer = Restorer(bundle, backend=args.backend, precision=args.precision)
        weathers = restorer.weathers
        clip = make_clip(weathers, frames=args.frames, size=args.size)
        frames = clip.degraded
        restore_rate(restorer, frames[: 2 * len(weathers)], weathers)  # warm-up
        fixed, switching = [], []
        for _ in range(args.rounds):
            fixed.append(restore_rate(restorer, frames, weathers[:1]))
            switching.append(restore_rate(restorer, frames, weathers))
    fixed_fps, switching_fps = statistics.median(fixed), statistics.median(switching)
    print(f"backend {restorer.backend_name} {args.precision}, {len(weathers)} weathers "
          f"({', '.join(weathers)}), "
          f"{format_size(args.size)}, {args.frames} frames x {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"fixed weather      {fixed_fps:8.2f} frames/s  (rounds: "
          f"{', '.join(f'{v:.2f}' for v in fixed)})")
    print(f"switch every frame {switching_fps:8.2f} frames/s  (rounds: "
          f"{', '.join(f'{v:.2f}' for v in switching)})")
    print(f"switching cost: {1 - switching_fps / fixed_fps:+.2%} of throughput (goal <= 2%)")


if __name__ == "__main__":
    main()
