"""Build TensorRT engines (one per weather) from a bundle's fp32, fp16 or int8 graphs.

Engines are built strongly typed (TensorRT 10 and 11): the graph decides precision, so
build fp16/int8 engines after `gpmask calibrate --precision fp16|int8`. One optimization
profile covers frames from --min-size to --max-size and batches of 1 to --max-batch,
tuned for --opt-size (one frame), or exactly the static shape of a bundle exported
with --size; one timing cache in BUNDLE/engines/ per TensorRT version and GPU model is
shared by every build of the bundle. fp32 engines compute in full float32 unless
--tf32. Run this on the target GPU: an engine only runs on the GPU it was built for,
and on the TensorRT version it was built with (or later ones, and TensorRT's lean
runtime, with --version-compatible).

examples:
  gpmask build bundle/ --precision fp16
  gpmask build bundle/ --precision int8 --min-size 256x256 --max-size 1080x1920 --workspace 2048
  gpmask build bundle/ --max-batch 4 --version-compatible
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import format_size, size_argument

#: What each of the profile's three sizes is, for --help.
_PROFILE_SIZES = {
    "min": "smallest frame the engines accept",
    "opt": "frame size the engines are tuned for",
    "max": "largest frame the engines accept",
}


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.build.tensorrt import DEFAULT_PROFILE
    from gpmask.precision import TENSORRT_PRECISIONS

    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("--precision", choices=TENSORRT_PRECISIONS, default="fp16",
                        help=f"which graphs to build from: {', '.join(TENSORRT_PRECISIONS)} "
                             "(default fp16; `gpmask run` with --precision auto then takes "
                             "the engines built)")
    for name, role in _PROFILE_SIZES.items():
        default = format_size(getattr(DEFAULT_PROFILE, name))
        parser.add_argument(f"--{name}-size", type=size_argument, metavar="HxW",
                            help=f"the {role} (default {default}; for a bundle exported with "
                                 f"--size, that size, the only one its graphs accept)")
    parser.add_argument("--max-batch", type=int, default=1, metavar="N",
                        help="largest batch of frames the engines accept (default 1: the "
                             "video loop restores one frame at a time; Restorer.restore_batch "
                             "runs up to N, and TensorRT sizes activation memory for N frames "
                             "of --max-size); a bundle exported with --size --batch takes "
                             "its own batch only")
    parser.add_argument("--workspace", type=int, metavar="MB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--tf32", action="store_true",
                        help="let float32 layers use TF32 (faster on Ampere and later, "
                             "with rounding differences); recorded in the manifest")
    parser.add_argument("--version-compatible", action="store_true",
                        help="build engines that later TensorRT versions and TensorRT's "
                             "lean runtime (pip install tensorrt-lean-cu13: a smaller "
                             "runtime for a device that only runs engines) also run; they "
                             "may run slower than engines for one version; recorded in the "
                             "manifest")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.build.tensorrt import DEFAULT_PROFILE, ShapeRange, build_bundle_engines
    from gpmask.errors import GpmaskError

    if args.max_batch < 1:
        raise GpmaskError(f"--max-batch must be a positive batch, got {args.max_batch}")
    sizes = {name: getattr(args, f"{name}_size") for name in _PROFILE_SIZES}
    profile = None if all(size is None for size in sizes.values()) and args.max_batch == 1 \
        else ShapeRange(**{name: size or getattr(DEFAULT_PROFILE, name)
                           for name, size in sizes.items()}, max_batch=args.max_batch)
    for path in build_bundle_engines(args.bundle, args.precision, profile, args.workspace,
                                     args.tf32, progress=not args.no_progress,
                                     version_compatible=args.version_compatible):
        print(f"{args.bundle}/{path}")
    return 0
