"""Training-step time of the demo recipe, channels-last against contiguous (NCHW) layout.

``gpmask train`` keeps the network's weights and the training images channels-last
(``--memory-format``). This runs the real :class:`~gpmask.masking.trainer.Trainer` on
the demo preset's data, batch and crop, a few steps of each stage, in both layouts,
interleaved (A, B, A, B ...) in one process, and prints the median time of a step of
each stage, their ratio, and the whole demo recipe's time those steps imply.

The anchor is this CPU's fp32 limit (a register loop of its fused multiply-add): a
training step does about 3x the forward pass's multiply-accumulates (the forward,
the gradient of the input and the gradient of the weights), counted from the demo
architecture's shipped graph at the crop size.

    python benchmarks/bench_train_step.py
    python benchmarks/bench_train_step.py --steps 30 --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from gpmask.bench.instruction_limit import instruction_limits
from gpmask.bench.macs import count_macs
from gpmask.data.clean import sample_images
from gpmask.data.sources import SyntheticPairs
from gpmask.export.shipped_trace import trace_path
from gpmask.masking.presets import PRESETS
from gpmask.masking.trainer import MEMORY_FORMATS, TrainConfig, Trainer


def stage_seconds(config: TrainConfig, source: SyntheticPairs) -> tuple[float, float]:
    """Seconds of stage 1 (``base_steps``) and of stage 2 (its window and training steps)."""
    start = time.perf_counter()
    common = Trainer(config, source, progress=False).train_common()
    stage1 = time.perf_counter() - start
    start = time.perf_counter()
    Trainer(config, source, progress=False, common_weights=common).run()
    return stage1, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps of each stage per run (default 20)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs per layout (default 3)")
    args = parser.parse_args()

    demo = PRESETS["demo"]
    short = dataclasses.replace(demo, base_steps=args.steps, masked_steps=args.steps,
                                weather_steps={}, selection_steps=1, checkpoint_every=0)
    source = SyntheticPairs(sample_images("train"), weathers=tuple(demo.weathers),
                            seed=demo.seed)
    stage2_steps = short.selection_steps + args.steps
    print(f"demo recipe: {demo.arch}, batch {demo.batch_size} x {len(demo.weathers)} weathers, "
          f"crop {demo.crop}; {args.steps} steps per stage, {args.repeats} runs per layout, "
          f"torch threads {torch.get_num_threads()}")
    stage_seconds(short, source)  # renders the pooled images every timed run reads
    times: dict[str, list[tuple[float, float]]] = {layout: [] for layout in MEMORY_FORMATS}
    for _ in range(args.repeats):
        for layout in MEMORY_FORMATS:
            config = dataclasses.replace(short, memory_format=layout)
            times[layout].append(stage_seconds(config, source))

    macs = count_macs(trace_path(demo.arch), (1, 3, demo.crop, demo.crop))
    step_ops = 3 * 2 * macs * demo.batch_size  # one weather's batch, forward and backward
    limit = instruction_limits(torch.get_num_threads())["fp32"]
    limit_text = (f"{limit.gops:.0f} GOP/s ({limit.instruction})" if limit.gops
                  else f"not measured ({limit.reason})")
    print(f"work        {macs / 1e6:.1f} M MACs per {demo.crop}x{demo.crop} forward; "
          f"fp32 limit {limit_text}")
    # Stage 2 of the demo, in steps of one weather: the window runs every weather, then
    # each weather its own steps.
    demo_stage2 = sum(demo.steps_of(w) for w in demo.weathers) + (
        demo.selection_steps * len(demo.weathers))
    per_step = {}
    for layout, runs in times.items():
        stage1 = statistics.median(r[0] for r in runs) / args.steps
        stage2 = statistics.median(r[1] for r in runs) / stage2_steps
        per_step[layout] = (stage1, stage2)
        recipe = stage1 * demo.base_steps + stage2 / len(demo.weathers) * demo_stage2
        rate = step_ops * len(demo.weathers) / stage2 / 1e9
        share = f" = {rate / limit.gops:.0%} of the limit" if limit.gops else ""
        print(f"{layout:14s} stage 1 {stage1 * 1e3:6.1f} ms/step, stage 2 {stage2 * 1e3:6.1f} "
              f"ms/step (all weathers): {rate:.0f} GOP/s in stage 2{share}; the demo recipe at "
              f"these rates: {recipe / 60:.1f} min")
    (a1, a2), (b1, b2) = per_step["contiguous"], per_step["channels_last"]
    print(f"channels_last is {a1 / b1:.2f}x (stage 1) and {a2 / b2:.2f}x (stage 2) "
          f"as fast as contiguous")


if __name__ == "__main__":
    main()
