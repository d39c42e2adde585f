"""Train the weather router (clear + the bundle's weathers) and add it to the bundle.

The router is a small CNN trained on synthetic weather made from scikit-image's
sample images, exported as BUNDLE/router.onnx and recorded in the manifest with its
accuracy on held-out synthetic frames (clean images never used in training).
`gpmask run --weather auto` uses it.

examples:
  gpmask train-router bundle/
  gpmask train-router bundle/ --steps 1200
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder (from gpmask export)")
    parser.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    parser.add_argument("--input-size", type=int, default=96,
                        help="side of the downscaled frame the router sees (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from gpmask.errors import GpmaskError
    from gpmask.export.router import ROUTER_FILE, RouterSettings, train_router

    if args.input_size < 32:
        raise GpmaskError(f"--input-size must be at least 32, got {args.input_size}")
    settings = RouterSettings(
        steps=args.steps, input_size=(args.input_size, args.input_size), seed=args.seed
    )
    report = train_router(args.bundle, settings, progress=not args.no_progress)
    print(report.format())
    print(f"wrote {args.bundle.rstrip('/')}/{ROUTER_FILE} ({report.train_frames} training "
          f"frames, {report.steps} steps, {report.seconds:.0f} s)")
    return 0
