"""The routing policy, chosen on evidence: confidence threshold and hysteresis on synthetic clips.

The router's class probabilities are computed once per frame; then every policy of a
grid (min confidence x switch-after x clear-after) routes the frames from a fresh start
(`ClassifierRouter.step`, the rule `gpmask run` applies), in two ways: as gpmask does,
passing a frame through while its decision disagrees with the weather in force ("pass"),
and holding the weather in force until a new one wins ("hold", gpmask's rule before).

Clips: in each synthetic style, `--seeds` clips of `gpmask eval`'s change sequence (every
class follows every other once), `--stretch` frames per stretch; per policy and style:
frames routed to their own weather, frames sent to another weather's network, weather frames
passed through, the frames each change takes to be followed (max; the share within 3;
the max for changes to clear), flicker between weathers inside a stretch. Demo: the demo
clip read back from MJPG, restored by every network once, so that each policy's
`psnr.md` rows follow by lookup: the worst row's gain over its input (goal: no row worse
than -0.5 dB) and the share of frames routed to their own weather (goal >= 90 %).

    python benchmarks/bench_routing_policy.py                 # the shipped demo router and model
    python benchmarks/bench_routing_policy.py --bundle B -o policy.json
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bench.fixtures import prepared_bundle
from gpmask.bench.records import machine_banner, write_record
from gpmask.bundle import CLEAR, COMMON, Bundle
from gpmask.data.clips import make_clip
from gpmask.demo.app import psnr, psnr_table, write_video
from gpmask.host import physical_cores
from gpmask.metrics import switch_lags, weather_flicker
from gpmask.router.evaluation import MAX_LAG, change_sequence
from gpmask.runtime import Restorer
from gpmask.runtime.routing import ClassifierRouter, RoutingPolicy
from gpmask.runtime.video import read_video

GRID = {"min_confidence": (0.0, 0.4, 0.5, 0.6, 0.7, 0.8), "switch_after": (1, 2, 3, 4),
        "clear_after": (1, 2, 3)}


def route(router: ClassifierRouter, policy: RoutingPolicy, probabilities: list[np.ndarray]
          ) -> dict[str, list[str]]:
    """The weather of every frame under ``policy``: gpmask's rule, and holding instead."""
    fresh = ClassifierRouter(router.session, router.classes, router.tile, router.grid, policy)
    passed, held = [], []
    for p in probabilities:
        passed.append(fresh.step(p))
        held.append(fresh.hysteresis.current or CLEAR)
    return {"pass": passed, "hold": held}


def clip_scores(true: list[list[str]], chosen: list[list[str]]) -> dict[str, Any]:
    """Scores of the weathers chosen on several clips, summed over the clips."""
    flat_true, flat_chosen = sum(true, []), sum(chosen, [])
    lags = [lag for t, c in zip(true, chosen, strict=True) for lag in switch_lags(t, c)]
    frames = [lag["frames"] for lag in lags]
    to_clear = [lag["frames"] for lag in lags if lag["to"] == CLEAR]
    pairs = list(zip(flat_true, flat_chosen, strict=True))
    return {
        "accuracy": float(np.mean([t == c for t, c in pairs])),
        "misrouted": float(np.mean([c not in (t, CLEAR) for t, c in pairs])),
        "passed": float(np.mean([c == CLEAR != t for t, c in pairs])),
        "changes": len(lags), "max_lag": max(frames), "within": float(np.mean(
            [f <= MAX_LAG for f in frames])), "max_lag_to_clear": max(to_clear),
        "flicker": sum(weather_flicker(t, c, CLEAR) for t, c in zip(true, chosen,
                                                                    strict=True)),
    }


def demo_scores(clip: Any, inputs: list[np.ndarray], outputs: dict[str, list[np.ndarray]],
                chosen: list[str]) -> dict[str, Any]:
    """The demo's psnr.md rows for the weathers ``chosen``: worst gain, routing accuracy."""
    restored = [inputs[i] if c == CLEAR else outputs[c][i] for i, c in enumerate(chosen)]
    table = psnr_table(clip, inputs, restored, chosen)
    gains = [(f"{t}>{t}", row["restored_psnr"] - row["input_psnr"])
             for t, row in table.items() if row["frames_routed_right"] and t != CLEAR]
    gains += [(f"{t}>{r}", other["restored_psnr"] - other["input_psnr"])
              for t, row in table.items() for r, other in row["routed"].items() if r != CLEAR]
    worst = min(gains, key=lambda g: g[1]) if gains else ("none", 0.0)
    return {"accuracy": float(np.mean([c == t for c, t in zip(chosen, clip.weathers,
                                                              strict=True)])),
            "worst_row": worst[0], "worst_gain_db": worst[1],
            "lags": [lag["frames"] for lag in switch_lags(clip.weathers, chosen)]}


def network_gains(clip: Any, inputs: list[np.ndarray], outputs: dict[str, list[np.ndarray]]
                  ) -> dict[str, dict[str, float]]:
    """Per network, per true weather: the mean PSNR gain of its output over the input."""
    gains: dict[str, dict[str, float]] = {}
    for network, restored in outputs.items():
        gains[network] = {}
        for weather in dict.fromkeys(clip.weathers):
            index = [i for i, w in enumerate(clip.weathers) if w == weather]
            gains[network][weather] = float(np.mean(
                [psnr(restored[i], clip.clean[i]) - psnr(inputs[i], clip.clean[i])
                 for i in index]))
    return gains


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle with a router (default: export the demo)")
    parser.add_argument("--seeds", type=int, default=4, help="clips per style (default 4)")
    parser.add_argument("--stretch", type=int, default=24,
                        help="frames per stretch of one weather (default 24)")
    parser.add_argument("-o", "--output", help="write every policy's scores as JSON here")
    args = parser.parse_args()
    threads = physical_cores()
    print(machine_banner(threads))
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        bundle = Bundle.open(args.bundle or prepared_bundle(folder)[0])
        router = ClassifierRouter.from_bundle(bundle)
        sequence = change_sequence(router.classes)
        clips: dict[str, list] = {"train": [], "heldout": []}
        for style, seed in itertools.product(clips, range(args.seeds)):
            clip = make_clip(bundle.weathers, frames=args.stretch * len(sequence), seed=seed,
                             sequence=sequence, style=style)
            clips[style].append((clip.weathers,
                                 [router.probabilities(f) for f in clip.degraded]))
        demo = make_clip(bundle.weathers)
        write_video(folder / "input.avi", demo.degraded, demo.fps)
        inputs = read_video(folder / "input.avi")
        demo_probabilities = [router.probabilities(f) for f in inputs]
        with Restorer(bundle) as restorer:
            outputs = {network: [restorer.restore(f, network, bgr=True) for f in inputs]
                       for network in [*bundle.weathers, COMMON]}
    print("what each network does to each weather's demo frames (mean gain over the input):")
    for network, gains in network_gains(demo, inputs, outputs).items():
        print(f"  {network:>8}: " + ", ".join(f"{w} {g:+.2f} dB" for w, g in gains.items()))
    rows = []
    for values in itertools.product(*GRID.values()):
        policy = RoutingPolicy(**dict(zip(GRID, values, strict=True)))
        routed = {style: [route(router, policy, probabilities) for _, probabilities in made]
                  for style, made in clips.items()}
        demo_routed = route(router, policy, demo_probabilities)
        for rule in ("pass", "hold"):
            rows.append({"policy": {**dict(zip(GRID, values, strict=True)), "rule": rule},
                         "clips": {style: clip_scores([t for t, _ in made],
                                                      [r[rule] for r in routed[style]])
                                   for style, made in clips.items()},
                         "demo": demo_scores(demo, inputs, outputs, demo_routed[rule])})
    print("per style of clips: frames routed to their weather, sent to a wrong network, "
          "passed through; the max lag per change, the share within 3, the max lag to clear; "
          "flicker between weathers")
    print("conf switch clear rule | train: right  wrong  pass lag <=3 clr flk | heldout: right  "
          "wrong  pass lag <=3 clr flk | demo: right  worst row  gain lags")
    for row in rows:
        p, d = row["policy"], row["demo"]
        styles = " | ".join(
            f"{style}: {c['accuracy']:6.1%} {c['misrouted']:5.1%} {c['passed']:5.1%} "
            f"{c['max_lag']:3d} {c['within']:4.0%} {c['max_lag_to_clear']:3d} {c['flicker']:3d}"
            for style, c in row["clips"].items())
        print(f"{p['min_confidence']:.1f} {p['switch_after']} {p['clear_after']} {p['rule']:4} | "
              f"{styles} | demo: {d['accuracy']:6.1%} {d['worst_row']:>15} "
              f"{d['worst_gain_db']:+6.2f} {d['lags']}")
    if args.output:
        write_record(args.output, "routing_policy", {
            "router_sha256": bundle.router.sha256,
            "network_gains": network_gains(demo, inputs, outputs), "rows": rows})
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
