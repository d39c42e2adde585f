"""Build TensorRT engines (one per weather) from a bundle's fp32, fp16 or int8 graphs.

Engines are built strongly typed (TensorRT 10 and 11): the graph decides precision, so
build fp16/int8 engines after `gpmask calibrate --precision fp16|int8`. One optimization
profile covers frames from --min-size to --max-size, tuned for --opt-size (batch 1),
or exactly the static size of a bundle exported with --size; one timing cache in
BUNDLE/engines/ per TensorRT version and GPU model is shared by every build of the
bundle. fp32 engines compute in full float32 unless --tf32. Run this on the target
GPU: an engine only runs on the TensorRT version and GPU it was built with.

examples:
  gpmask build bundle/ --precision fp16
  gpmask build bundle/ --precision int8 --min-size 256x256 --max-size 1080x1920 --workspace 2048
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
    parser.add_argument("--workspace", type=int, metavar="MB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--tf32", action="store_true",
                        help="let float32 layers use TF32 (faster on Ampere and later, "
                             "with rounding differences); recorded in the manifest")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.build.tensorrt import DEFAULT_PROFILE, ShapeRange, build_bundle_engines

    sizes = {name: getattr(args, f"{name}_size") for name in _PROFILE_SIZES}
    profile = None if all(size is None for size in sizes.values()) else ShapeRange(
        **{name: size or getattr(DEFAULT_PROFILE, name) for name, size in sizes.items()})
    for path in build_bundle_engines(args.bundle, args.precision, profile, args.workspace,
                                     args.tf32, progress=not args.no_progress):
        print(f"{args.bundle}/{path}")
    return 0
