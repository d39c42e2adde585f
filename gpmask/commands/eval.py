"""Measure PSNR and SSIM per weather: degraded input, common model, each weather's baked model;
and how well the weather router routes.

Held-out images only: synthetic weather on scikit-image sample images never used
in training (default), on --images DIR, or paired folders with --data. Synthetic
weather is measured in two styles (--style): ``train``, the family of looks the
trainer renders (in distribution), and ``heldout``, a rendering family training
never sees (other drop shapes, streaks and flakes, optics outside the training
ranges), which shows whether a model generalises beyond its own renderer.

Routing is measured next to restoration, in the same styles, for the router shipped
with a shipped checkpoint (demo) or the one of --router BUNDLE: accuracy per class and
the confusion matrix on held-out frames of every class (the router's own decisions),
and on a clip in which every class follows every other, the frames `gpmask run
--weather auto` takes to follow each change (its default routing policy), flicker
between weathers, and frames sent to another weather's network.

examples:
  gpmask eval demo
  gpmask eval demo --style heldout --count 16
  gpmask eval model.gpmask.safetensors --router bundle/ -o eval.json
  gpmask eval model.gpmask.safetensors --data rain=/data/outdoor_rain:outdoor-rain -o eval.json
"""

from __future__ import annotations

import argparse
import json

from gpmask.commands.options import add_no_progress, path_argument
from gpmask.sizes import format_size, size_argument


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=path_argument, help="checkpoint file or 'demo'")
    parser.add_argument(
        "--data",
        action="append",
        metavar="WEATHER=DIR[:LAYOUT]",
        help="paired folder for one weather (repeat)",
    )
    parser.add_argument(
        "--images", type=path_argument,
        help="folder of clean held-out images for synthetic weather (default: the held-out "
             "scikit-image samples)",
    )
    parser.add_argument(
        "--count", type=int, default=8, help="images per weather and style (synthetic; default 8)"
    )
    parser.add_argument(
        "--size", type=size_argument, default=(256, 256), metavar="HxW",
        help="HxW of synthetic evaluation images (default 256x256)",
    )
    parser.add_argument(
        "--severity", type=float, default=1.0, help="synthetic weather severity (default 1.0)"
    )
    parser.add_argument(
        "--seed", type=int, default=1234, help="synthetic weather seed (default 1234)"
    )
    parser.add_argument(
        "--style",
        choices=["train", "heldout", "both"],
        help="synthetic weather family: the trainer's (train), one training never sees "
             "(heldout), or both, one table each (default both; synthetic only)",
    )
    parser.add_argument(
        "--router", metavar="BUNDLE", type=path_argument,
        help="measure this bundle's weather router (default: the router shipped with a "
             "shipped checkpoint; none for other checkpoints; synthetic weather only)",
    )
    parser.add_argument(
        "--routing-count", type=int, default=10, metavar="N",
        help="routing: held-out frames per held-out image, class and style (default 10)",
    )
    parser.add_argument(
        "-o", "--output", type=path_argument,
        help="JSON report to write (default: none; the tables go to standard output)",
    )
    add_no_progress(parser)


def _pairs(args: argparse.Namespace, weathers: list[str]) -> dict[str, dict]:
    """Evaluation pairs per style (``data`` for --data folders), then per weather."""
    from gpmask.data.clean import load_image_folder, sample_images
    from gpmask.data.paired_folders import parse_data_spec
    from gpmask.data.sources import SyntheticPairs
    from gpmask.data.synthetic import STYLES
    from gpmask.errors import GpmaskError

    if args.data:
        if args.style:
            raise GpmaskError("--style chooses synthetic weather; --data folders have their own")
        pairs = {}
        for spec in args.data:
            weather, folder = parse_data_spec(spec)
            pairs[weather] = [folder.load(i) for i in range(len(folder))]
        return {"data": pairs}
    images = load_image_folder(args.images) if args.images else sample_images("heldout")
    source = SyntheticPairs(
        images, weathers=tuple(weathers), seed=args.seed, severity=args.severity
    )
    styles = STYLES if args.style in (None, "both") else (args.style,)
    return {
        style: {w: source.eval_pairs(w, args.count, size=args.size, style=style)
                for w in weathers}
        for style in styles
    }


#: The smallest synthetic image side eval measures.
MIN_SIDE = 32
def _check_memory(args: argparse.Namespace, checkpoint) -> None:
    """Refuse a --size and --count whose images and network pass this machine cannot hold:
    every evaluation pair is rendered before the networks run."""
    from gpmask.bundle import COMMON
    from gpmask.data.synthetic import STYLES
    from gpmask.host import check_memory
    from gpmask.model.memory import measured

    pixels = args.size[0] * args.size[1]
    styles = len(STYLES) if args.style in (None, "both") else 1
    images = styles * len(checkpoint.weathers) * args.count * 2  # degraded and clean
    network = measured(checkpoint.build_model(COMMON)).peak
    check_memory(pixels * (images * 3 * 4 + network),
                 f"--size {format_size(args.size)} --count {args.count}: {images} float "
                 f"images and the network's pass", "lower --size or --count")


#: What each style's table is headed with.
STYLE_TITLES = {
    "train": "synthetic weather, training style (in distribution)",
    "heldout": "synthetic weather, held-out style (a rendering family training never saw)",
    "data": "paired folders",
}


def _routing(args: argparse.Namespace, weathers: list[str], styles: list[str]) -> dict | None:
    """The routing report (and its tables printed), or None when there is no router."""
    from dataclasses import asdict

    from gpmask.router.evaluation import evaluate_routing, router_to_evaluate
    from gpmask.runtime.routing import RoutingPolicy

    if args.data:
        return None
    found = router_to_evaluate(args.checkpoint, weathers, args.router)
    if found is None:
        return None
    path, record = found
    policy = RoutingPolicy()
    results = evaluate_routing(path, record, policy, styles=styles,
                               per_image=args.routing_count, seed=args.seed)
    print(f"routing by {path} (gpmask run's default policy: min confidence "
          f"{policy.min_confidence}, switch after {policy.switch_after}, clear after "
          f"{policy.clear_after}):")
    for result in results:
        print(f"{STYLE_TITLES[result.style]}:")
        print(result.format())
        print()
    return {"router": str(path), "policy": asdict(policy),
            "styles": {r.style: {"frames": asdict(r.frames), "routed": asdict(r.routed),
                                 "clip": asdict(r.clip)} for r in results}}


def run(args: argparse.Namespace) -> int:
    from gpmask.data.paired_folders import data_spec_paths
    from gpmask.errors import GpmaskError

    if args.count < 1:
        raise GpmaskError(f"--count must be at least 1, got {args.count}")
    if args.seed < 0:
        raise GpmaskError(f"--seed must be >= 0, got {args.seed}")
    if min(args.size) < MIN_SIDE:
        raise GpmaskError(f"--size {format_size(args.size)}: eval needs images of at least "
                          f"{MIN_SIDE}x{MIN_SIDE} (SSIM's window and the network's levels)")
    from gpmask.fileio import check_file_output, check_outputs, write_text_atomic
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint
    from gpmask.masking.evaluate import evaluate_checkpoint, format_evaluation

    if args.routing_count < 1:
        raise GpmaskError(f"--routing-count must be at least 1, got {args.routing_count}")
    if args.data and args.router:
        raise GpmaskError("--router: routing is measured on synthetic weather; --data folders "
                          "hold no clear frames")

    if args.output:
        check_outputs([args.output], [resolve_checkpoint(args.checkpoint), args.images,
                                      args.router, *data_spec_paths(args.data)])
        check_file_output(args.output)
    checkpoint = MaskedCheckpoint.load(args.checkpoint)
    if not args.data:
        _check_memory(args, checkpoint)
    pairs = _pairs(args, checkpoint.weathers)
    for weather in next(iter(pairs.values())):
        checkpoint.bake_numpy(weather)  # refuses a weather the checkpoint lacks
    results = {
        style: evaluate_checkpoint(checkpoint, by_weather, progress=not args.no_progress)
        for style, by_weather in pairs.items()
    }
    report = {
        "checkpoint": str(resolve_checkpoint(args.checkpoint)),
        "data": args.data or f"synthetic {format_size(args.size)} x{args.count}",
        "results": results,
    }
    for style, style_results in results.items():
        print(f"{STYLE_TITLES[style]}:")
        print(format_evaluation(style_results))
        print()
    routing = _routing(args, checkpoint.weathers, list(pairs))
    if routing is not None:
        report["routing"] = routing
    if args.output:
        write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 0
