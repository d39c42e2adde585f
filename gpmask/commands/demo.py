"""Run the whole pipeline on a synthetic clip whose weather changes: no data, no network.

Makes a short clip from held-out sample images (rain, then snow, then raindrops, then
clear), exports the shipped demo model into a bundle with its shipped weather router
(unless --bundle is given), restores the clip with `auto` routing on the best
backend available, and writes to the output folder: input.avi, restored.avi,
side_by_side.avi, frames.csv, psnr.json, psnr.md (input vs restored vs ground truth,
per weather) and timeline.png (true and chosen weather, latency per frame).

examples:
  gpmask demo
  gpmask demo -o demo-out --bundle bundle/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpmask.commands.options import add_backend, add_no_progress, add_precision, path_argument
from gpmask.sizes import format_size, size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=path_argument, default="gpmask-demo",
                        help="output folder (default gpmask-demo)")
    parser.add_argument("--bundle", type=path_argument,
                        help="bundle with a router (default: export the shipped demo model)")
    parser.add_argument("--frames", type=int, default=96, help="clip length (default 96)")
    parser.add_argument("--size", type=size_argument, default=(192, 192), metavar="HxW",
                        help="frame size (default 192x192)")
    add_backend(parser)
    add_precision(parser)
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output folder (only an earlier demo's "
                             "output or an empty folder)")
    add_no_progress(parser)


def _check_memory(args: argparse.Namespace) -> None:
    """Refuse a clip this machine cannot hold: its clean, degraded, read-back and restored
    frames are all kept (8-bit BGR) for the report, beside one frame's working memory."""
    from gpmask.host import check_memory

    if args.bundle:
        from gpmask.bundle import Bundle
        from gpmask.runtime.memory import WorkingMemory

        per_pixel = WorkingMemory.of_bundle(Bundle.open(args.bundle)).bytes_per_pixel
    else:
        from gpmask.masking.checkpoint import MaskedCheckpoint
        from gpmask.model.memory import measured

        per_pixel = measured(MaskedCheckpoint.load("demo").build_model("common")).peak
    pixels = args.size[0] * args.size[1]
    check_memory(pixels * (args.frames * 4 * 3 + per_pixel),
                 f"--frames {args.frames} --size {format_size(args.size)}: the clip's frames "
                 f"and one frame's restoration", "lower --frames or --size")


def run(args: argparse.Namespace) -> int:
    from gpmask.demo.app import DEMO_FOLDER, format_table, is_demo_output, run_demo
    from gpmask.errors import GpmaskError
    from gpmask.export import export_bundle
    from gpmask.fileio import atomic_directory, check_outputs

    if min(args.size) < 32:
        raise GpmaskError(f"--size {format_size(args.size)}: the demo needs frames of at "
                          f"least 32x32")
    if args.size[0] % 2 or args.size[1] % 2:
        raise GpmaskError(f"--size {format_size(args.size)}: the demo writes videos, whose "
                          f"height and width must be even")
    if args.frames < 1:
        raise GpmaskError(f"--frames must be at least 1, got {args.frames}")
    output = Path(args.output)
    check_outputs([output], [args.bundle])
    _check_memory(args)
    progress = not args.no_progress
    with atomic_directory(output, args.force, is_demo_output, DEMO_FOLDER) as folder:
        if args.bundle:
            bundle = Path(args.bundle)
        else:
            bundle = folder / "bundle"
            export_bundle("demo", bundle, progress=progress)  # with its shipped router
        summary = run_demo(bundle, folder, frames=args.frames, size=args.size,
                           backend=args.backend, precision=args.precision,
                           progress=progress)
    print(format_table(summary["psnr"], summary["routing_accuracy"], summary["switch_lags"]),
          end="")
    print(f"backend {summary['backend']}, precision {summary['precision']}: "
          f"{summary['frames']} frames, "
          f"{summary['mean_restore_ms']:.1f} ms per restore, loop {summary['loop_fps']:.1f} "
          f"frames/s")
    print(f"wrote {output}/: input.avi restored.avi side_by_side.avi frames.csv psnr.json "
          f"psnr.md timeline.png" + ("" if args.bundle else " bundle/"))
    return 0
