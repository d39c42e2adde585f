"""Describe a masked checkpoint or a bundle.

For a checkpoint: architecture, weathers, parameter count, mask density per weather
and the overlap between weathers' masks. For a bundle folder: weathers, graphs and
precisions, sizes, what is shared, verification status; a damaged bundle (a file
missing or not matching its sha256) is described, then reported as an error (exit 2).

examples:
  gpmask inspect demo
  gpmask inspect bundle/
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="checkpoint file (or 'demo') or bundle folder")
    parser.add_argument("--json", action="store_true", help="print the checkpoint summary as JSON")


def describe_checkpoint(path: str) -> dict:
    """The summary ``gpmask inspect CKPT`` prints, as data."""
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint

    checkpoint = MaskedCheckpoint.load(path)
    return {
        "path": str(resolve_checkpoint(path)),
        "arch": checkpoint.arch,
        "arch_kwargs": checkpoint.arch_kwargs,
        "weathers": checkpoint.weathers,
        "parameters": checkpoint.num_parameters(),
        "density": {w: checkpoint.density(w).overall for w in checkpoint.weathers},
        "overlap": {
            f"{a}/{b}": checkpoint.overlap(a, b) for a, b in combinations(checkpoint.weathers, 2)
        },
        "provenance": checkpoint.provenance,
    }


def run(args: argparse.Namespace) -> int:
    if Path(args.target).is_dir():
        from gpmask.bundle import Bundle
        from gpmask.export.summary import describe_bundle

        print(describe_bundle(args.target))
        Bundle.open(args.target)  # verifies every file: a damaged bundle ends in exit 2
        return 0
    summary = describe_checkpoint(args.target)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"checkpoint  {summary['path']}")
    print(f"arch        {summary['arch']} {json.dumps(summary['arch_kwargs'])}")
    print(f"parameters  {summary['parameters']:,} (each weather's baked network has this many)")
    print(f"weathers    {', '.join(summary['weathers'])}")
    for weather, density in summary["density"].items():
        print(f"  {weather:<12} specific elements: {density:6.1%}")
    for pair, overlap in summary["overlap"].items():
        print(f"  overlap {pair:<20} {overlap:6.1%} (intersection over union of masks)")
    return 0
