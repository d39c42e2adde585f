"""Train the weather router (clear + the bundle's weathers) and add it to the bundle.

The router is a small CNN that looks at a grid of full-resolution tiles of each frame.
It learns from synthetic weather drawn on scikit-image's sample images, or from your
own frames with --data DIR: one folder per class, named `clear` and after each weather
of the bundle (e.g. DIR/clear/*.png, DIR/rain/*.jpg, ...), optionally mixed with
synthetic weather (--synthetic). The last part of each class folder in name order is
held out (--heldout-fraction); with synthetic weather alone, frames of held-out images
are. Its confidence is calibrated on the held-out frames, then it is exported as
BUNDLE/router.onnx and recorded in the manifest with its held-out accuracy per class and
confusion matrix (printed, and drawn in BUNDLE/reports/router-confusion.png).
`gpmask run --weather auto` uses it.

examples:
  gpmask train-router bundle/
  gpmask train-router bundle/ --data my-frames/
  gpmask train-router bundle/ --data my-frames/ --synthetic --steps 4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpmask.commands.options import add_no_progress, path_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.router.training import RouterSettings

    defaults = RouterSettings()
    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--data", metavar="DIR", type=path_argument,
                        help="your own frames: one folder per class (clear and each weather of "
                             "the bundle) of images (default: synthetic weather only)")
    parser.add_argument("--synthetic", action="store_true",
                        help="with --data: also train on synthetic weather")
    parser.add_argument("--heldout-fraction", type=float, default=defaults.heldout_fraction,
                        metavar="F", help="with --data: the share of each class folder (its "
                        f"last files by name) held out to measure the router (default "
                        f"{defaults.heldout_fraction})")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"training steps (default {defaults.steps})")
    parser.add_argument("--members", type=int, default=defaults.members,
                        help="classifiers in the router's ensemble, each trained from its own "
                             f"seed (default {defaults.members}; 1 trains in half the time)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help=f"seed (default {defaults.seed})")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.errors import GpmaskError
    from gpmask.fileio import check_file_output
    from gpmask.router.training import CONFUSION_PICTURE, ROUTER_FILE, RouterSettings, train_router

    if args.synthetic and not args.data:
        raise GpmaskError("--synthetic mixes synthetic weather into --data frames; without "
                          "--data the router learns from synthetic weather alone")
    if args.seed < 0:
        raise GpmaskError(f"--seed must be >= 0, got {args.seed}")
    if Path(args.bundle).is_dir():  # a bundle it cannot write is refused before training
        check_file_output(Path(args.bundle) / ROUTER_FILE)
    settings = RouterSettings(steps=args.steps, members=args.members, seed=args.seed,
                              heldout_fraction=args.heldout_fraction)
    report = train_router(args.bundle, settings, data=args.data, synthetic=args.synthetic,
                          progress=not args.no_progress)
    print(report.format())
    bundle = args.bundle.rstrip("/")
    print(f"wrote {bundle}/{ROUTER_FILE} ({report.train_frames} training frames, "
          f"{report.steps} steps, {report.seconds:.0f} s) and {bundle}/{CONFUSION_PICTURE}")
    return 0
