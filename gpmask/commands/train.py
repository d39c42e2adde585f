"""Train a masked model with GGPM: base model, gradient-guided masks, masked fine-tuning.

Data: synthetic weather made from clean images (scikit-image's sample images, or
--images DIR), or paired folders per weather with --data WEATHER=DIR[:LAYOUT].
Runs under torchrun for several processes (gloo on CPU, nccl on GPU). Writes the
checkpoint, a mask report (OUT.masks.json, OUT.masks.png), and a training state
file (OUT.train-state.pt) that a re-run with the same settings resumes from.

examples:
  gpmask train --preset demo -o demo.gpmask.safetensors
  gpmask train --arch msunet-small --data rain=/data/outdoor_rain:outdoor-rain \\
      --data snow=/data/snow100k:snow100k -o weather.gpmask.safetensors
  torchrun --nproc-per-node 2 -m gpmask.cli train --preset demo -o demo.gpmask.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.errors import GpmaskError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", type=path_argument, required=True,
        help="checkpoint to write (.gpmask.safetensors)"
    )
    parser.add_argument(
        "--preset", help="named recipe whose settings the other options override (demo); the "
             "defaults below are those without a preset"
    )
    parser.add_argument(
        "--arch",
        help="architecture name (tiny, msunet-small, msunet, ggpm-unet) or module:Class",
    )
    parser.add_argument(
        "--arch-kwargs", type=json.loads, help="JSON keyword arguments of the architecture"
    )
    parser.add_argument(
        "--weathers", help="comma-separated weather names (synthetic: rain,raindrop,snow)"
    )
    parser.add_argument(
        "--data",
        action="append",
        metavar="WEATHER=DIR[:LAYOUT]",
        help="paired folder for one weather (repeat per weather)",
    )
    parser.add_argument("--images", type=path_argument,
                        help="folder of clean images for synthetic weather")
    parser.add_argument(
        "--severity", type=float, default=1.0, help="synthetic weather severity (default 1.0)"
    )
    parser.add_argument(
        "--base-steps", type=int, help="stage 1 (common model) steps (default 2000)"
    )
    parser.add_argument(
        "--masked-steps", type=int,
        help="stage 2 training steps of the specific values, for every weather (replaces a "
             "preset's per-weather steps; default 1000)",
    )
    parser.add_argument(
        "--weather-steps",
        action="append",
        metavar="WEATHER=N",
        help="stage-2 steps of one weather instead of --masked-steps (repeat; needs "
             "--common frozen)",
    )
    parser.add_argument(
        "--density",
        type=float,
        help="fraction of EACH parameter tensor specific to each weather, in (0, 1] "
             "(default 0.1; evidence selection)",
    )
    parser.add_argument(
        "--selection",
        choices=["evidence", "consecutive"],
        help="how masks are chosen: 'evidence' keeps exactly the top --density of each tensor "
             "by average normalised |gradient| measured at the common model over "
             "--selection-steps steps that train nothing; 'consecutive' grows masks from "
             "streaks of top --top-fraction selections while training (default evidence)",
    )
    parser.add_argument(
        "--exclusive",
        action="store_true",
        default=None,
        help="disjoint masks: an element specific to several weathers goes to the one with "
             "the most evidence, the others refill to exactly --density (evidence only; "
             "default off)",
    )
    parser.add_argument(
        "--selection-steps",
        type=int,
        help="evidence: measuring steps before training (default 200); consecutive: "
             "training steps during which masks grow",
    )
    parser.add_argument(
        "--top-fraction", type=float,
        help="consecutive: fraction of each tensor that is a candidate (default 0.4)",
    )
    parser.add_argument(
        "--consecutive", type=int, help="consecutive: steps in a row to join a mask (default 3)"
    )
    parser.add_argument(
        "--common",
        dest="common_update",
        choices=["mean", "uncertainty", "frozen"],
        help="how stage 2 updates the common values (default mean)",
    )
    parser.add_argument(
        "--loss", choices=["charbonnier", "l1", "mse"], help="pixel loss (default charbonnier)"
    )
    parser.add_argument(
        "--perceptual-weights", type=path_argument,
        help="local VGG-16 state dict for a perceptual term (default none)",
    )
    parser.add_argument("--batch-size", type=int, help="images per weather per step (default 8)")
    parser.add_argument(
        "--crop", type=int, help="side of the square training crops, in pixels (default 64)"
    )
    parser.add_argument("--base-lr", type=float, help="stage-1 peak learning rate (default 5e-4)")
    parser.add_argument(
        "--masked-lr", type=float, help="stage-2 peak learning rate (default 5e-4)"
    )
    parser.add_argument("--seed", type=int, help="seed of weights and data (default 0)")
    parser.add_argument(
        "--memory-format", choices=["channels_last", "contiguous"],
        help="layout of feature maps and convolution weights while training: channels_last "
             "(NHWC) is faster on CPUs; contiguous (NCHW) for a network whose code needs it "
             "(default channels_last)",
    )
    add_no_progress(parser)


def _config(args: argparse.Namespace):
    from gpmask.masking.presets import PRESETS
    from gpmask.masking.trainer import TrainConfig

    if args.preset and args.preset not in PRESETS:
        raise GpmaskError(f"unknown preset {args.preset!r}; use one of {', '.join(PRESETS)}")
    config = dataclasses.replace(PRESETS[args.preset]) if args.preset else TrainConfig()
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(TrainConfig)
        if getattr(args, field.name, None) is not None
    }
    if args.weather_steps:
        overrides["weather_steps"] = dict(_weather_steps(text) for text in args.weather_steps)
    elif args.masked_steps is not None:
        overrides["weather_steps"] = {}  # --masked-steps is every weather's, a preset's too
    if args.weathers:
        overrides["weathers"] = [w.strip() for w in args.weathers.split(",") if w.strip()]
    if args.arch and args.arch_kwargs is None:
        overrides["arch_kwargs"] = {}
    return dataclasses.replace(config, **overrides)


def _weather_steps(text: str) -> tuple[str, int]:
    weather, _, steps = text.partition("=")
    if not weather or not steps.isdigit():
        raise GpmaskError(f"--weather-steps {text!r}: expected WEATHER=N such as raindrop=3600")
    return weather, int(steps)


def _check_step_memory(config) -> None:
    """Refuse crops and batches whose training step this machine cannot hold: stage 1
    runs a batch of every weather at once, keeping each activation for backward."""
    from gpmask.host import check_memory
    from gpmask.model import build_model
    from gpmask.model.memory import measured

    per_pixel = measured(build_model(config.arch, config.arch_kwargs)).total
    crops = len(config.weathers) * config.batch_size
    check_memory(per_pixel * config.crop**2 * crops,
                 f"a training step of {crops} crops of {config.crop}x{config.crop} "
                 f"({per_pixel:.0f} bytes per pixel kept for backward, measured on "
                 f"{config.arch})", "lower --batch-size or --crop")


def _source(args: argparse.Namespace, config):
    from gpmask.data.clean import load_image_folder, sample_images
    from gpmask.data.paired_folders import parse_data_spec
    from gpmask.data.sources import FolderPairs, SyntheticPairs

    if args.data:
        folders = dict(parse_data_spec(spec) for spec in args.data)
        if not args.weathers:
            config.weathers = list(folders)
        return FolderPairs(folders, seed=config.seed)
    images = load_image_folder(args.images) if args.images else sample_images("train")
    return SyntheticPairs(
        images, weathers=tuple(config.weathers), seed=config.seed, severity=args.severity
    )


def run(args: argparse.Namespace) -> int:
    from gpmask.data.paired_folders import data_spec_paths
    from gpmask.fileio import check_file_output, check_outputs
    from gpmask.masking.distributed import init_from_environment, shutdown
    from gpmask.masking.mask_report import mask_report, write_mask_report
    from gpmask.masking.trainer import Trainer

    output = Path(args.output)
    stem = output.name.removesuffix(".safetensors").removesuffix(".gpmask")
    reports = [output.with_name(stem + ".masks.json"), output.with_name(stem + ".masks.png")]
    check_outputs([output, *reports], [args.images, args.perceptual_weights,
                                       *data_spec_paths(args.data)])
    check_file_output(output)
    config = _config(args)
    config.validate()
    _check_step_memory(config)
    source = _source(args, config)
    context = init_from_environment()
    try:
        state = output.with_name(output.name + ".train-state.pt")
        result = Trainer(
            config, source, state_path=state, context=context, progress=not args.no_progress
        ).run()
        if context.is_main:
            result.checkpoint.save(output)
            report = mask_report(result.checkpoint, result.history)
            write_mask_report(report, *reports)
            state.unlink(missing_ok=True)
            densities = ", ".join(f"{w} {d:.1%}" for w, d in report["density"].items())
            print(
                f"wrote {output} ({result.checkpoint.num_parameters():,} parameters; "
                f"mask density {densities})"
            )
    finally:
        shutdown(context)
    return 0
