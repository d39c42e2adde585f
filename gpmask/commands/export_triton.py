"""Write a Triton model repository of a bundle, for NVIDIA's Triton container.

One model per weather (and common) on the backend that fits the bundle: tensorrt_plan
when its engines are built at the precision, else onnxruntime_onnx, or openvino with
--backend openvino; the bundle's router; and model `gpmask`, which routes each frame
to its weather (the protocol of `gpmask serve`, so one client works with both). Every
config.pbtxt has dynamic batching and an instance group. See docs/serving.md for
running the container on it.

examples:
  gpmask export-triton bundle/ -o triton-repo
  gpmask export-triton bundle/ -o triton-repo --precision fp16 --instances 2
  gpmask export-triton bundle/ -o triton-repo --backend openvino
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.commands.triton_options import add_batching, add_routing, batching, routing
from gpmask.sizes import size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.precision import GRAPH_PRECISIONS
    from gpmask.serve.repository import REPOSITORY_BACKENDS

    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument("-o", "--output", type=path_argument, required=True,
                        help="repository folder to create (its parent must exist)")
    parser.add_argument("--backend", default="auto", choices=REPOSITORY_BACKENDS,
                        metavar="NAME",
                        help=f"weather models' backend: {', '.join(REPOSITORY_BACKENDS)} "
                             "(default auto: tensorrt when the bundle has engines at the "
                             "precision for every weather, else onnxruntime)")
    parser.add_argument("--precision", default="fp32", choices=GRAPH_PRECISIONS,
                        metavar="NAME",
                        help=f"graphs or engines to export: {', '.join(GRAPH_PRECISIONS)} "
                             "(default fp32)")
    add_routing(parser)
    add_batching(parser)
    parser.add_argument("--max-size", type=size_argument, metavar="HxW", default=None,
                        help="largest frame a request may hold (default 2160x3840)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing repository written by gpmask, or an empty "
                             "folder (default: refuse)")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.serve.repository import export_repository
    from gpmask.serve.triton import MAX_SIZE

    weather, clear = routing(args)
    backend = export_repository(
        args.bundle, args.output, backend=args.backend, precision=args.precision,
        batching=batching(args), instances=args.instances, weather=weather, clear=clear,
        max_size=args.max_size or MAX_SIZE, force=args.force, progress=not args.no_progress)
    print(f"wrote {args.output}: model 'gpmask' routing to one {backend} model per weather")
    return 0
