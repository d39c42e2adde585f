"""Export a masked checkpoint to a bundle of per-weather ONNX graphs sharing one weight file.

Traces the network once, writes common.onnx and one graph per weather into BUNDLE with
every distinct tensor stored once in weights.bin, checks each graph with onnx.checker
and ONNX Runtime against PyTorch, and writes manifest.json. In the compact layout (the
default) the common weights are stored once and each weather adds only its mask and
the values where it differs; its graph rebuilds its weights with standard ONNX
operators, which ONNX Runtime folds when it loads the graph. Also installed as
`gpmask-export`.

examples:
  gpmask export demo -o bundle/
  gpmask export model.gpmask.safetensors -o bundle/ --weathers rain,snow
  gpmask export demo -o bundle-720p/ --size 720x1280 --force   # static 1x3x720x1280
  gpmask export demo -o bundle-dense/ --layout dense   # full weights in every graph
  gpmask-export demo -o bundle/ --engine --precision fp16   # + calibrate + TensorRT build
"""

from __future__ import annotations

import argparse

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=path_argument, help="masked checkpoint file, or 'demo'")
    parser.add_argument("-o", "--output", type=path_argument, required=True, metavar="BUNDLE",
                        help="bundle folder to create")
    parser.add_argument("--weathers", metavar="LIST",
                        help="comma-separated subset of the checkpoint's weathers (default all)")
    parser.add_argument("--size", type=size_argument, metavar="HxW",
                        help="fix the input's height and width (a static graph, as some "
                             "TensorRT deployments want; default dynamic)")
    parser.add_argument("--batch", type=int, metavar="N",
                        help="with --size: fix the batch too (default 1 with --size, "
                             "else dynamic)")
    parser.add_argument("--layout", choices=("compact", "dense"), default="compact",
                        help="compact: weathers store only what differs from the common "
                             "weights; dense: every graph holds its full weights "
                             "(default compact)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip onnx.checker and the ONNX Runtime vs PyTorch comparison")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing BUNDLE (only a gpmask bundle or an empty "
                             "folder; anything else is refused)")
    add_no_progress(parser)
    parser.add_argument("--engine", action="store_true",
                        help="also build TensorRT engines (calibrating first when needed); "
                             "TensorRT and a GPU are checked before anything is written")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16",
                        help="engine precision with --engine (default fp16)")


def run(args: argparse.Namespace) -> int:
    from gpmask.bundle.summary import describe_bundle
    from gpmask.errors import GpmaskError
    from gpmask.export.exporter import export_bundle

    if args.batch is not None and (args.size is None or args.batch < 1):
        raise GpmaskError("--batch needs --size (a static graph) and a positive batch, got "
                          f"--batch {args.batch}" + ("" if args.size else " without --size"))
    if args.engine:
        from gpmask.host import tensorrt_target

        try:
            tensorrt_target(0, builder=True)
        except GpmaskError as exc:
            raise GpmaskError(f"--engine: {exc}; build engines on the target machine; no "
                              f"file was written") from exc
    bundle = export_bundle(
        args.checkpoint,
        args.output,
        weathers=args.weathers,
        static_shape=(args.batch or 1, 3, *args.size) if args.size else None,
        verify=not args.no_verify,
        force=args.force,
        progress=not args.no_progress,
        layout=args.layout,
    )
    if args.engine:
        from gpmask.build.tensorrt import build_bundle_engines
        from gpmask.calibration.pipeline import calibrate_bundle

        if args.precision != "fp32":
            calibrate_bundle(bundle.root, args.precision)
        build_bundle_engines(bundle.root, args.precision)
    print(describe_bundle(bundle.root))
    return 0
