"""Restore a video, images, a camera or a GStreamer pipeline, frame by frame.

Each frame is routed to a weather (a fixed name, a schedule file, or `auto`: the
bundle's weather classifier with hysteresis) and restored by that weather's graph.
Decoding, restoring and encoding run as a pipeline. An image gives an image (its
format and bit depth kept), a folder of images a folder of images of the same names.
The output replaces an earlier one only when the run reaches the input's end (or
Ctrl-C stops a camera); a run stopped short (a failing input, Ctrl-C, SIGTERM) leaves
it as it was and keeps the frames done in OUTPUT.partial.EXT (or OUTPUT.partial/).

examples:
  gpmask run bundle/ -i rainy.mp4 -o restored.mp4 --weather rain
  gpmask run bundle/ -i clip.avi -o out.avi --weather auto --side-by-side --log frames.csv
  gpmask run bundle/ -i frames/ -o restored/ --weather schedule.csv
  gpmask run bundle/ -i photo.png -o photo-restored.png --weather snow
  gpmask run bundle/ -i 0 -o camera.avi --weather auto
"""

from __future__ import annotations

import argparse
import sys

from gpmask.commands.options import add_backend, add_no_progress, add_precision, path_argument


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.runtime.routing import RoutingPolicy

    defaults = RoutingPolicy()
    parser.add_argument("bundle", type=path_argument, help="bundle folder (from gpmask export)")
    parser.add_argument(
        "-i", "--input", type=path_argument, required=True,
        help="video file, image file, folder of images, camera index (0), or GStreamer "
        "pipeline ('... ! appsink')",
    )
    parser.add_argument(
        "-o", "--output", type=path_argument, required=True,
        help="video file (.avi MJPG, .mp4 mp4v, .mkv, .mov), an image file (for an image "
        "input: .png, .jpg, .tif, ...) or a folder for images (the input images' names and "
        "formats, else PNG); never one of the inputs; an existing folder is replaced only if "
        "it is empty or an earlier run's output holding nothing else",
    )
    parser.add_argument(
        "--weather",
        help="a weather of the bundle, 'common', 'clear', 'auto' (the bundle's router), or a "
        "schedule file .csv/.json of start,end,weather (default: auto when the bundle has a "
        "router, else the bundle's default weather)",
    )
    parser.add_argument("--side-by-side", action="store_true",
                        help="write input and restored frame next to each other")
    parser.add_argument("--log", type=path_argument,
                        help="CSV with frame index, weather chosen, latency per stage")
    add_backend(parser)
    add_precision(parser)
    parser.add_argument("--route-every", type=int, default=defaults.every, metavar="K",
                        help=f"auto: classify every K-th frame (default {defaults.every})")
    parser.add_argument("--switch-after", type=int, default=defaults.switch_after, metavar="M",
                        help="auto: a new weather must win M decisions in a row; its frames "
                             f"pass through until then (default {defaults.switch_after})")
    parser.add_argument("--clear-after", type=int, default=defaults.clear_after, metavar="M",
                        help="auto: 'clear' must win M decisions in a row to end a weather "
                             f"(default {defaults.clear_after})")
    parser.add_argument("--min-confidence", type=float, default=defaults.min_confidence,
                        metavar="P", help="auto: a frame the router gives its weather a "
                        "calibrated probability under P is passed through (0 to 1; default "
                        f"{defaults.min_confidence})")
    parser.add_argument("--clear", default="pass", choices=["pass", "common"],
                        help="frames routed to 'clear': pass through, or the common graph "
                             "(default pass)")
    add_no_progress(parser)


def run(args: argparse.Namespace) -> int:
    from gpmask.bundle import Bundle
    from gpmask.errors import GpmaskError
    from gpmask.fileio import check_file_output, check_outputs
    from gpmask.runtime import Restorer
    from gpmask.runtime.loop import run_loop
    from gpmask.runtime.routing import RoutingPolicy, make_router
    from gpmask.runtime.sinks import open_sink
    from gpmask.runtime.video import open_source

    schedule = args.weather if (args.weather or "").lower().endswith((".csv", ".json")) else None
    check_outputs([args.output, args.log], [args.input, args.bundle, schedule])
    if args.log is not None:
        check_file_output(args.log)  # refused now, not once every frame is done
    for name in ("route_every", "switch_after", "clear_after"):  # whatever --weather is
        if getattr(args, name) < 1:
            raise GpmaskError(f"--{name.replace('_', '-')} must be at least 1, got "
                              f"{getattr(args, name)}")
    bundle = Bundle.open(args.bundle)
    weather = args.weather or ("auto" if bundle.router else bundle.default_weather)
    policy = RoutingPolicy(args.route_every, args.switch_after, args.clear_after,
                           args.min_confidence)
    router = make_router(weather, bundle, policy)
    source = open_source(args.input)
    try:  # everything the output needs is checked before the networks load
        sink = open_sink(args.output, source, side_by_side=args.side_by_side)
        restorer = Restorer(bundle, backend=args.backend, precision=args.precision)
    except BaseException:
        source.close()
        raise
    if args.weather:
        routing = weather
    elif weather == "auto":
        routing = "auto (the default: the bundle has a router)"
    else:
        routing = (f"{weather} (the default: the bundle has no router for auto; "
                   f"`gpmask train-router {args.bundle}` makes one)")
    print(f"{restorer.choice.reason}; routing {routing}", file=sys.stderr)
    outputs = {"side_by_side_sink": sink} if args.side_by_side else {"sink": sink}
    try:
        result = run_loop(
            source, restorer, router, **outputs, clear=args.clear, log_path=args.log,
            progress=not args.no_progress,
        )
    except (GpmaskError, KeyboardInterrupt) as exc:
        if sink.frames_written:
            note = _where_the_frames_went(sink)
            if isinstance(exc, KeyboardInterrupt):
                print(f"gpmask: {note}", file=sys.stderr)
                raise
            raise GpmaskError(f"{exc} ({note})") from exc
        raise
    finally:
        restorer.close()
    print(f"wrote {args.output}: {len(result.records)} frames, {result.fps:.1f} frames/s")
    return 0


def _where_the_frames_went(sink) -> str:
    """What became of the frames a stopped run restored (see the module docstring)."""
    from gpmask.fileio import partial_name

    count = sink.frames_written
    done = f"{count} frame{'s' if count != 1 else ''} done"
    were = "were" if count != 1 else "was"
    if sink.kept == sink.path:
        return f"{done} {were} written to {sink.path}"
    if sink.kept is not None:
        return f"{done} {were} kept in {sink.kept}; {sink.path} was left as it was"
    return (f"{done} {were} discarded, since {partial_name(sink.path)} already exists; "
            f"{sink.path} was left as it was")
