"""Measure PSNR and SSIM per weather: degraded input, common model, each weather's baked model.

Held-out images only: synthetic weather on scikit-image sample images never used
in training (default), on --images DIR, or paired folders with --data.

examples:
  gpmask eval demo
  gpmask eval model.gpmask.safetensors --data rain=/data/outdoor_rain:outdoor-rain -o eval.json
"""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint file or 'demo'")
    parser.add_argument(
        "--data",
        action="append",
        metavar="WEATHER=DIR[:LAYOUT]",
        help="paired folder for one weather (repeat)",
    )
    parser.add_argument("--images", help="folder of clean held-out images for synthetic weather")
    parser.add_argument("--count", type=int, default=8, help="images per weather (synthetic)")
    parser.add_argument("--size", default="256x256", help="HxW of synthetic evaluation images")
    parser.add_argument("--severity", type=float, default=1.0, help="synthetic weather severity")
    parser.add_argument("--seed", type=int, default=1234, help="synthetic weather seed")
    parser.add_argument("-o", "--output", default="eval.json", help="JSON report to write")
    parser.add_argument("--no-progress", action="store_true")


def _pairs(args: argparse.Namespace, weathers: list[str]) -> dict:
    from gpmask.data.clean import load_image_folder, sample_images
    from gpmask.data.paired import parse_data_spec
    from gpmask.data.pairs import SyntheticPairs
    from gpmask.errors import GpmaskError

    if args.data:
        pairs = {}
        for spec in args.data:
            weather, folder = parse_data_spec(spec)
            pairs[weather] = [folder.load(i) for i in range(len(folder))]
        return pairs
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError as exc:
        raise GpmaskError(f"--size {args.size!r}: expected HxW such as 256x256") from exc
    images = load_image_folder(args.images) if args.images else sample_images("heldout")
    source = SyntheticPairs(
        images, weathers=tuple(weathers), seed=args.seed, severity=args.severity
    )
    return {w: source.eval_pairs(w, args.count, size=(height, width)) for w in weathers}


def run(args: argparse.Namespace) -> int:
    from gpmask.data.paired import data_spec_paths
    from gpmask.fileio import check_file_output, check_outputs, write_text_atomic
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint
    from gpmask.masking.evaluate import evaluate_checkpoint, format_evaluation

    check_outputs([args.output], [resolve_checkpoint(args.checkpoint), args.images,
                                  *data_spec_paths(args.data)])
    check_file_output(args.output)
    checkpoint = MaskedCheckpoint.load(args.checkpoint)
    pairs = _pairs(args, checkpoint.weathers)
    for weather in pairs:
        checkpoint.bake_numpy(weather)  # refuses a weather the checkpoint lacks
    results = evaluate_checkpoint(checkpoint, pairs, progress=not args.no_progress)
    report = {
        "checkpoint": str(resolve_checkpoint(args.checkpoint)),
        "data": args.data or f"synthetic {args.size} x{args.count}",
        "results": results,
    }
    write_text_atomic(args.output, json.dumps(report, indent=2) + "\n")
    print(format_evaluation(results))
    print(f"wrote {args.output}")
    return 0
