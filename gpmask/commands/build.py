"""Build TensorRT engines (one per weather) from a bundle's fp32, fp16 or int8 graphs.

Engines are built strongly typed (TensorRT 10 and 11): the graph decides precision, so
build fp16/int8 engines after `gpmask calibrate --precision fp16|int8`. One optimization
profile covers the sizes in --shapes (height x width, batch 1), or exactly the static
shape of a bundle exported with --shape; one timing cache in BUNDLE/engines/ per
TensorRT version and GPU model is shared by every build of the bundle. fp32 engines
compute in full float32 unless --tf32. Run this on the target GPU: an engine only runs
on the TensorRT version and GPU it was built with.

examples:
  gpmask build bundle/ --precision fp16
  gpmask build bundle/ --precision int8 --shapes 256x256:720x1280:1080x1920 --workspace 2048
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.export.tensorrt_build import BUILD_PRECISIONS, DEFAULT_SHAPES

    parser.add_argument("bundle", help="bundle folder (from gpmask export)")
    parser.add_argument("--precision", choices=BUILD_PRECISIONS, default="fp16",
                        help="which graphs to build from (default fp16)")
    parser.add_argument("--shapes", metavar="MIN:OPT:MAX",
                        help=f"profile sizes, HxW each (default {DEFAULT_SHAPES}; a bundle "
                             f"exported with a static --shape: that shape, the only one "
                             f"its graphs accept)")
    parser.add_argument("--workspace", type=int, metavar="MB",
                        help="builder workspace limit in MiB (default: TensorRT's)")
    parser.add_argument("--tf32", action="store_true",
                        help="let float32 layers use TF32 (faster on Ampere and later, "
                             "with rounding differences); recorded in the manifest")


def run(args: argparse.Namespace) -> int:
    from gpmask.export.tensorrt_build import build_bundle_engines

    for path in build_bundle_engines(args.bundle, args.precision, args.shapes, args.workspace,
                                     args.tf32):
        print(f"{args.bundle}/{path}")
    return 0
