"""Make a masked checkpoint from plain PyTorch files (base weights, per-weather weights + mask).

Each --weather names a fine-tuned state dict and a mask file; a weather's network is
where(mask, fine-tuned, base), and several weathers may name one fine-tuned file. A
mask is a dict name -> bool tensor, or (as the GGPM paper's code saves it) a list of
bool tensors in net.parameters() order, or a list of such lists (the last is used).
A 'module.' prefix (DistributedDataParallel) is stripped and the paper's training-only
scalars are dropped, each with a note. .pth files are loaded with weights_only=True.

examples:
  gpmask import --arch msunet-small --base base.pth \\
      --weather rain=rain_ft.pth:rain_mask.pth --weather snow=snow_ft.pth:snow_mask.pth \\
      -o weather.gpmask.safetensors
  gpmask import --arch ggpm-unet --base net_stage1.pth \\
      --weather snow=net_epoch_19.pth:maskA_epoch19.pth \\
      --weather rain=net_epoch_19.pth:maskB_epoch19.pth \\
      --weather raindrop=net_epoch_19.pth:maskC_epoch19.pth -o paper.gpmask.safetensors
"""

from __future__ import annotations

import argparse
import json

from gpmask.commands.options import path_argument
from gpmask.errors import GpmaskError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch", required=True, help="architecture name (e.g. ggpm-unet, tiny) or module:Class"
    )
    parser.add_argument(
        "--arch-kwargs",
        type=json.loads,
        default={},
        help="JSON keyword arguments of the architecture (default: its own defaults)",
    )
    parser.add_argument("--base", type=path_argument, required=True,
                        help="state dict of the common (base) model")
    parser.add_argument(
        "--weather",
        action="append",
        required=True,
        metavar="NAME=WEIGHTS.pth:MASK.pth",
        help="one weather (repeat)",
    )
    parser.add_argument("-o", "--output", type=path_argument, required=True,
                        help="checkpoint to write")


def parse_weather(spec: str) -> tuple[str, tuple[str, str]]:
    """``NAME=WEIGHTS:MASK`` -> (name, (weights, mask))."""
    name, sep, files = spec.partition("=")
    weights, sep2, mask = files.rpartition(":")
    if not (sep and sep2 and name and weights and mask):
        raise GpmaskError(f"--weather {spec!r}: expected NAME=WEIGHTS.pth:MASK.pth")
    return name, (weights, mask)


def run(args: argparse.Namespace) -> int:
    from gpmask.fileio import check_file_output, check_outputs
    from gpmask.masking.importer import import_checkpoint

    weathers: dict[str, tuple[str, str]] = {}
    for spec in args.weather:
        name, files = parse_weather(spec)
        if name in weathers:
            raise GpmaskError(f"duplicate weather names: {name}")
        weathers[name] = files
    check_outputs([args.output], [args.base, *(f for pair in weathers.values() for f in pair)])
    check_file_output(args.output)
    checkpoint = import_checkpoint(args.arch, args.arch_kwargs, args.base, weathers)
    checkpoint.build_model("common")  # the weights must fit the architecture they claim
    for note in checkpoint.provenance["notes"]:
        print(f"note: {note}")
    total = checkpoint.num_parameters()
    for weather in checkpoint.weathers:
        density = checkpoint.density(weather).overall
        print(f"{weather}: {density:.2%} of {total:,} parameters specific")
    checkpoint.save(args.output)
    print(f"wrote {args.output} ({', '.join(checkpoint.weathers)})")
    return 0
