"""Train the weather router (clear + the bundle's weathers) and add it to the bundle.

The router is a small CNN trained on synthetic weather made from scikit-image's
sample images, exported as BUNDLE/router.onnx and recorded in the manifest with its
accuracy on held-out synthetic frames (clean images never used in training).
`gpmask run --weather auto` uses it.

examples:
  gpmask train-router bundle/
  gpmask train-router bundle/ --steps 3000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import format_size, size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.router.training import RouterSettings

    defaults = RouterSettings()
    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"training steps (default {defaults.steps})")
    parser.add_argument("--input-size", type=size_argument, default=defaults.input_size,
                        metavar="HxW", help="size of the downscaled frame the router sees "
                        f"(default {format_size(defaults.input_size)})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"seed (default {defaults.seed})")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.data.clean import SAMPLE_MAX_SIDE
    from gpmask.errors import GpmaskError
    from gpmask.fileio import check_file_output
    from gpmask.router.training import ROUTER_FILE, RouterSettings, train_router

    # Training crops come from images of at most SAMPLE_MAX_SIDE pixels: a larger input
    # only upsamples them, and the example pool, held in memory, grows with its square.
    if min(args.input_size) < 32 or max(args.input_size) > SAMPLE_MAX_SIDE:
        raise GpmaskError(f"--input-size {format_size(args.input_size)}: the router needs at "
                          f"least 32x32 and at most {SAMPLE_MAX_SIDE}x{SAMPLE_MAX_SIDE} (it "
                          f"sees a downscaled frame; its training crops are smaller than "
                          f"that, and its example pool, held in memory, grows with the "
                          f"square of the side)")
    if args.seed < 0:
        raise GpmaskError(f"--seed must be >= 0, got {args.seed}")
    if Path(args.bundle).is_dir():  # a bundle it cannot write is refused before training
        check_file_output(Path(args.bundle) / ROUTER_FILE)
    settings = RouterSettings(steps=args.steps, input_size=args.input_size, seed=args.seed)
    report = train_router(args.bundle, settings, progress=not args.no_progress)
    print(report.format())
    print(f"wrote {args.bundle.rstrip('/')}/{ROUTER_FILE} ({report.train_frames} training "
          f"frames, {report.steps} steps, {report.seconds:.0f} s)")
    return 0
