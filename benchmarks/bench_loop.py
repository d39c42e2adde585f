"""The pipelined video loop's throughput on a video file vs the restore step's own.

Decoding and encoding run in threads beside restoring, so the loop should reach at
least 90% of the restore step's throughput (issue 5). The restore step is timed on
the same frames already decoded into memory, with the same weather; the loop reads
an MJPG video of those frames and writes one. Rounds alternate; medians are compared.

    python benchmarks/bench_loop.py                      # demo model (or random tiny), 256x256
    python benchmarks/bench_loop.py --bundle B --size 512x512 --frames 96
    python benchmarks/bench_loop.py --backend openvino
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from gpmask.bench.fixtures import prepared_bundle, restore_rate
from gpmask.data.clips import make_clip
from gpmask.demo.app import write_video
from gpmask.runtime import Restorer
from gpmask.runtime.backends import BACKENDS
from gpmask.runtime.loop import run_loop
from gpmask.runtime.routing import FixedRouter
from gpmask.runtime.sinks import VideoFileSink
from gpmask.runtime.video import open_source, read_video
from gpmask.sizes import format_size, parse_size


def loop_fps(restorer: Restorer, video: Path, output: Path, weather: str) -> float:
    result = run_loop(open_source(str(video)), restorer, FixedRouter(weather),
                      VideoFileSink(output, 25), progress=False)
    return result.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export the demo checkpoint)")
    parser.add_argument("--checkpoint", default="demo", help="checkpoint exported without --bundle")
    parser.add_argument("--size", type=parse_size, default=(256, 256),
                        help="frame HxW (default 256x256)")
    parser.add_argument("--frames", type=int, default=48, help="frames in the video (default 48)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS,
                        help="backend (default onnxruntime)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        bundle = args.bundle or prepared_bundle(folder, args.checkpoint)[0]
        restorer = Restorer(bundle, backend=args.backend)
        weather = restorer.weathers[0]
        clip = make_clip(restorer.weathers, frames=args.frames, size=args.size)
        video = folder / "input.avi"
        write_video(video, clip.degraded, 25)
        frames = read_video(video)
        restore_rate(restorer, frames[:4], [weather])  # warm-up
        alone, looped = [], []
        for _ in range(args.rounds):
            alone.append(restore_rate(restorer, frames, [weather]))
            looped.append(loop_fps(restorer, video, folder / "output.avi", weather))
    alone_fps, loop_median = statistics.median(alone), statistics.median(looped)
    print(f"backend {restorer.backend_name}, weather {weather}, {format_size(args.size)}, "
          f"{len(frames)} frames x {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    print(f"restore step alone {alone_fps:8.2f} frames/s  (rounds: "
          f"{', '.join(f'{v:.2f}' for v in alone)})")
    print(f"pipelined loop     {loop_median:8.2f} frames/s  (rounds: "
          f"{', '.join(f'{v:.2f}' for v in looped)})")
    print(f"loop / restore step: {loop_median / alone_fps:.1%} (goal >= 90%)")


if __name__ == "__main__":
    main()
