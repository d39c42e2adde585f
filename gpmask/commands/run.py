"""Restore a video, a folder of images, a camera or a GStreamer pipeline, frame by frame.

Each frame is routed to a weather (a fixed name, a schedule file, or `auto`: the
bundle's weather classifier with hysteresis) and restored by that weather's graph.
Decoding, restoring and encoding run as a pipeline. Ctrl-C or a failing input stops
cleanly: the output holds the frames done so far and plays.

examples:
  gpmask run bundle/ -i rainy.mp4 -o restored.mp4 --weather rain
  gpmask run bundle/ -i clip.avi -o out.avi --weather auto --side-by-side --log frames.csv
  gpmask run bundle/ -i frames/ -o restored/ --weather schedule.csv
  gpmask run bundle/ -i 0 -o camera.avi --weather auto
"""

from __future__ import annotations

import argparse
import sys

from gpmask.commands.options import add_backend, add_no_progress, add_precision


def configure(parser: argparse.ArgumentParser) -> None:
    from gpmask.runtime.routing import RoutingPolicy

    defaults = RoutingPolicy()
    parser.add_argument("bundle", help="bundle folder (from gpmask export)")
    parser.add_argument(
        "-i", "--input", required=True,
        help="video file, folder of images, camera index (0), or GStreamer pipeline "
        "('... ! appsink')",
    )
    parser.add_argument(
        "-o", "--output", required=True,
        help="video file (.avi MJPG, .mp4 mp4v, .mkv, .mov) or a folder for PNG images; "
        "never one of the inputs; an existing folder is replaced only if it is empty or "
        "holds an earlier run's frames",
    )
    parser.add_argument(
        "--weather",
        help="a weather of the bundle, 'common', 'clear', 'auto' (the bundle's router), or a "
        "schedule file .csv/.json of start,end,weather (default: auto when the bundle has a "
        "router, else the bundle's default weather)",
    )
    parser.add_argument("--side-by-side", action="store_true",
                        help="write input and restored frame next to each other")
    parser.add_argument("--log", help="CSV with frame index, weather chosen, latency per stage")
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
    from gpmask.fileio import check_outputs
    from gpmask.runtime import Restorer
    from gpmask.runtime.loop import run_loop
    from gpmask.runtime.routing import RoutingPolicy, make_router
    from gpmask.runtime.video import open_sink, open_source

    schedule = args.weather if (args.weather or "").lower().endswith((".csv", ".json")) else None
    check_outputs([args.output, args.log], [args.input, args.bundle, schedule])
    bundle = Bundle.open(args.bundle)
    weather = args.weather or ("auto" if bundle.router else bundle.default_weather)
    policy = RoutingPolicy(args.route_every, args.switch_after, args.clear_after,
                           args.min_confidence)
    router = make_router(weather, bundle, policy)
    restorer = Restorer(bundle, backend=args.backend, precision=args.precision)
    source = open_source(args.input)
    try:
        sink = open_sink(args.output, source.fps)
    except GpmaskError:
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
            note = f"{sink.frames_written} frames done were written to {args.output}"
            if isinstance(exc, KeyboardInterrupt):
                print(f"gpmask: {note}", file=sys.stderr)
                raise
            raise GpmaskError(f"{exc} ({note})") from exc
        raise
    print(f"wrote {args.output}: {len(result.records)} frames, {result.fps:.1f} frames/s")
    return 0
