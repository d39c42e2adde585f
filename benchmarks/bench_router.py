"""The weather router: its cost per frame against the restore step at 720p, its accuracy on
held-out frames of both synthetic styles and on the demo clip, and (--train) its training.

Cost (same process, interleaved rounds, medians): the restore step as `gpmask run` takes it
by default (`Restorer(bundle)`: backend and precision `auto`) on a 720x1280 frame of
held-out synthetic weather, and the router step on the same frame: everything
`ClassifierRouter.route` does (tiles, ONNX Runtime on one thread, the calibrated decision,
the hysteresis). Goal: the router step at most 10 % of the restore step.

Accuracy: `gpmask eval`'s routing measurement (gpmask.router.evaluation) with more
frames: the router's own decision on held-out frames of every class, per class with the
confusion matrix, in the training style and the held-out style, and the weather chosen
by the default policy on a clip of every change of weather (lag per change, flicker,
frames sent to a wrong network); and the demo clip (`gpmask demo`'s, as its loop reads
it back from MJPG): raw decisions and the weather chosen. Goals (issue 23): >= 95 %
held-out training style and >= 90 % per class, >= 90 % held-out style, >= 90 % of the
demo clip routed to its own weather.

--train first trains a router with `gpmask train-router`'s default settings on a copy
of the bundle, timing it (wall and CPU), and measures that one.

    python benchmarks/bench_router.py                    # the shipped demo model and router
    python benchmarks/bench_router.py --bundle B -o benchmarks/results/router-<cpu>-<date>.json
    python benchmarks/bench_router.py --train -o record.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bench.fixtures import prepared_bundle
from gpmask.bench.records import machine_banner, write_record
from gpmask.bundle import Bundle
from gpmask.data.clips import make_clip
from gpmask.demo.app import write_video
from gpmask.host import physical_cores
from gpmask.router.evaluation import (
    FrameAccuracy,
    evaluate_routing,
    predict,
    route_clip,
    routed_alone,
)
from gpmask.runtime import Restorer
from gpmask.runtime.routing import ClassifierRouter
from gpmask.runtime.video import Frame, read_video


def frame_720p(weather: str) -> np.ndarray:
    """A 720x1280 uint8 BGR frame: a held-out image under synthetic ``weather``."""
    import cv2

    from gpmask.data.clean import sample_images
    from gpmask.data.clips import to_bgr_uint8
    from gpmask.data.synthetic import degrade

    clean = cv2.resize(sample_images("heldout")[1], (1280, 720), interpolation=cv2.INTER_CUBIC)
    return to_bgr_uint8(degrade(clean, weather, seed=3))


def cost(bundle: Path, rounds: int, routes: int) -> dict[str, Any]:
    """Median restore step and router step at 720p, interleaved."""
    router = ClassifierRouter.from_bundle(Bundle.open(bundle))
    with Restorer(bundle) as restorer:
        weather = restorer.weathers[0]
        frame = frame_720p(weather)
        for _ in range(2):  # warm-up
            restorer.restore(frame, weather, bgr=True)
            router.route(Frame(0, 0.0, frame))
        restore, route = [], []
        for index in range(rounds):
            start = time.perf_counter()
            restorer.restore(frame, weather, bgr=True)
            restore.append(time.perf_counter() - start)
            for step in range(routes):
                start = time.perf_counter()
                router.route(Frame(index * routes + step, 0.0, frame))
                route.append(time.perf_counter() - start)
        backend, precision = restorer.backend_name, restorer.precision
    restore_ms, route_ms = statistics.median(restore) * 1e3, statistics.median(route) * 1e3
    return {"size": [720, 1280], "weather": weather, "backend": backend, "precision": precision,
            "rounds": rounds, "routes_per_round": routes, "restore_ms": restore_ms,
            "router_ms": route_ms, "router_over_restore": route_ms / restore_ms,
            "restore_ms_rounds": [v * 1e3 for v in restore]}


def demo_clip(bundle: Path, folder: Path) -> dict[str, Any]:
    """The demo clip routed as `gpmask demo` routes it: raw decisions and weathers chosen."""
    router = ClassifierRouter.from_bundle(Bundle.open(bundle))
    clip = make_clip(Bundle.open(bundle).weathers)
    write_video(folder / "input.avi", clip.degraded, clip.fps)
    frames = read_video(folder / "input.avi")
    probabilities = [router.probabilities(frame) for frame in frames]
    raw = FrameAccuracy.of(clip.weathers, predict(router, frames), router.classes)
    alone = FrameAccuracy.of(clip.weathers, routed_alone(router, frames), router.classes)
    routed = route_clip(router, probabilities, clip.weathers)
    return {"raw": asdict(raw), "routed_alone": asdict(alone),
            "routed": {**asdict(routed), "max_lag": routed.max_lag}}


def train(bundle: Path, folder: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of ``bundle`` with a router trained by `gpmask train-router`'s defaults."""
    from gpmask.router.training import RouterSettings, train_router

    copy = folder / "trained"
    shutil.copytree(bundle, copy)
    wall, cpu = time.perf_counter(), time.process_time()
    report = train_router(copy, RouterSettings(), progress=False)
    timing = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
              "torch_threads": _torch_threads(), "load_average": list(os.getloadavg())}
    print(f"training: {timing['wall_s']:.0f} s wall, {timing['cpu_s']:.0f} s CPU "
          f"({timing['torch_threads']} torch threads)\n{report.format()}")
    return copy, {"timing": timing, "report": asdict(report)}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle with a router (default: export the demo)")
    parser.add_argument("--train", action="store_true",
                        help="train a router with the default settings first, and time it")
    parser.add_argument("--rounds", type=int, default=9, help="cost rounds (default 9)")
    parser.add_argument("--routes", type=int, default=5,
                        help="router steps per round (default 5)")
    parser.add_argument("--per-image", type=int, default=40,
                        help="held-out frames per held-out image and class (default 40)")
    parser.add_argument("-o", "--output", help="write the record as JSON here")
    args = parser.parse_args()
    threads = physical_cores()
    print(machine_banner(threads))
    record: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        bundle = Path(args.bundle) if args.bundle else prepared_bundle(folder)[0]
        if args.train:
            bundle, record["training"] = train(bundle, folder)
        entry = Bundle.open(bundle).router
        record["router"] = {"classes": list(entry.classes), "tile": entry.input_size[0],
                            "grid": list(entry.grid), "sha256": entry.sha256,
                            **{k: entry.details.get(k) for k in ("temperature", "training")}}
        figures = cost(bundle, args.rounds, args.routes)
        record["cost"] = figures
        print(f"720p, {figures['backend']} {figures['precision']}: restore step "
              f"{figures['restore_ms']:.1f} ms, router step {figures['router_ms']:.2f} ms = "
              f"{figures['router_over_restore']:.1%} of the restore step (goal <= 10%)")
        record["accuracy"] = {}
        for result in evaluate_routing(bundle / entry.path, entry, per_image=args.per_image):
            name = {"train": "heldout_frames_training_style",
                    "heldout": "heldout_frames_heldout_style"}[result.style]
            print(f"{name}:\n{result.format()}")
            record["accuracy"][name] = {"frames": asdict(result.frames),
                                        "routed": asdict(result.routed),
                                        "clip": {**asdict(result.clip),
                                                 "max_lag": result.clip.max_lag}}
        demo = demo_clip(bundle, folder)
        record["accuracy"]["demo_clip"] = demo
        raw = FrameAccuracy(**demo["raw"])
        alone = FrameAccuracy(**demo["routed_alone"])
        print(f"demo clip, raw decisions: {raw.format()}\ndemo clip, each frame's decision "
              f"alone (unsure: passed through): {alone.format()}\ndemo clip, weather chosen: "
              f"{demo['routed']['accuracy']:.1%} ({demo['routed']['misrouted']} frames to "
              f"another weather, lags {[lag['frames'] for lag in demo['routed']['lags']]})")
    if args.output:
        write_record(args.output, "router", record)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
