"""Describe a masked checkpoint or a bundle.

For a checkpoint: architecture, weathers, parameter count, how the masks were
selected, mask density per weather and the overlap between weathers' masks (per
layer with --layers), and the bytes the weathers take stored dense or as common
values + masks + specific values. For a bundle folder: weathers, graphs and
precisions, sizes, what is shared, verification status; a damaged bundle (a file
missing or not matching its sha256) is described, then reported as an error (exit 2).

examples:
  gpmask inspect demo
  gpmask inspect demo --layers
  gpmask inspect bundle/
  gpmask inspect bundle/ --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpmask.commands.options import path_argument

_MIB = 1024 * 1024


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", type=path_argument,
                        help="checkpoint file (or 'demo') or bundle folder")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON (default text)")
    parser.add_argument(
        "--layers",
        action="store_true",
        help="also print density and overlap per parameter tensor (default off)",
    )


def describe_checkpoint(path: str) -> dict:
    """The summary ``gpmask inspect CKPT`` prints, as data: the mask report's figures
    (:func:`~gpmask.masking.mask_report.mask_report`, without training history) and where the
    checkpoint came from."""
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint
    from gpmask.masking.mask_report import mask_report

    checkpoint = MaskedCheckpoint.load(path)
    report = mask_report(checkpoint)
    del report["mask_growth"]
    return {
        "path": str(resolve_checkpoint(path)),
        "arch": checkpoint.arch,
        "arch_kwargs": checkpoint.arch_kwargs,
        **report,
        "provenance": checkpoint.provenance,
    }


def _layer_table(summary: dict) -> list[str]:
    """Rows of density per weather and overlap per pair, one per parameter tensor."""
    weathers, pairs = summary["weathers"], list(summary["overlap_per_layer"])
    lines = [f"  {'parameter':<32}" + "".join(f"{w[:12]:>13}" for w in weathers)
             + "".join(f"{p[:20]:>21}" for p in pairs)]
    for name in summary["density_per_layer"][weathers[0]]:
        lines.append(
            f"  {name:<32}"
            + "".join(f"{summary['density_per_layer'][w][name]:>13.1%}" for w in weathers)
            + "".join(f"{summary['overlap_per_layer'][p][name]:>21.1%}" for p in pairs)
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if Path(args.target).is_dir():
        from gpmask.bundle import Bundle
        from gpmask.bundle.summary import bundle_summary, format_bundle_summary

        summary = bundle_summary(args.target)
        print(json.dumps(summary, indent=2) if args.json else format_bundle_summary(summary))
        Bundle.open(args.target)  # verifies every file: a damaged bundle ends in exit 2
        return 0
    summary = describe_checkpoint(args.target)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"checkpoint  {summary['path']}")
    print(f"arch        {summary['arch']} {json.dumps(summary['arch_kwargs'])}")
    print(f"parameters  {summary['parameters']:,} (each weather's baked network has this many)")
    selection = summary["selection"]
    if selection["selection"] == "evidence":
        print(f"selection   evidence: {selection['density']:.1%} of every tensor per weather"
              f"{', disjoint (exclusive)' if selection['exclusive'] else ''}")
    elif selection["selection"]:
        print(f"selection   {selection['selection']}")
    print(f"weathers    {', '.join(summary['weathers'])}")
    for weather, density in summary["density"].items():
        print(f"  {weather:<12} specific elements: {density:6.1%}")
    for pair, overlap in summary["overlap"].items():
        print(f"  overlap {pair:<20} {overlap:6.1%} (intersection over union of masks)")
    storage = summary["storage_bytes"]
    count = len(summary["weathers"])
    print(f"storage     dense, one network per weather: {count} x "
          f"{storage['dense_per_weather'] / _MIB:.2f} MiB = "
          f"{storage['dense_all_weathers'] / _MIB:.2f} MiB")
    print(f"            common + masks + specific values: {storage['common'] / _MIB:.2f} + "
          f"{sum(storage['masks'].values()) / _MIB:.2f} + "
          f"{sum(storage['specific'].values()) / _MIB:.2f} MiB = "
          f"{storage['compact_all_weathers'] / _MIB:.2f} MiB")
    for weather in summary["weathers"]:
        print(f"  {weather:<12} mask {storage['masks'][weather] / 1024:8.1f} KiB, specific "
              f"values {storage['specific'][weather] / 1024:8.1f} KiB")
    if args.layers:
        print("per parameter: specific fraction per weather, then overlap per pair")
        print("\n".join(_layer_table(summary)))
    return 0
