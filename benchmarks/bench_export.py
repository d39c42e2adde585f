"""Export cost of 1 weather vs N weathers, and bytes stored vs N independent exports.

The bundle traces the network once and swaps initializers per weather, so exporting
N weathers should cost at most 1.5x exporting one (issue 3). Sharing is measured
against the real alternative: each weather's graph saved on its own with
``onnx.save_model(..., save_as_external_data=True)`` (one graph plus one data file
per weather).

    python benchmarks/bench_export.py                      # random msunet-tiny, 3 weathers
    python benchmarks/bench_export.py --checkpoint demo    # the shipped demo model
                                                           # (its trace ships: no tracing)
    python benchmarks/bench_export.py --weathers 5 --density 0.1 --verify
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import torch

from gpmask.bench.fixtures import random_checkpoint
from gpmask.bundle.summary import format_bytes
from gpmask.export import export_bundle
from gpmask.masking.checkpoint import MaskedCheckpoint


def timed_export(checkpoint: MaskedCheckpoint, weathers: list[str], folder: Path,
                 verify: bool, repeats: int) -> tuple[float, Path]:
    """Median seconds of ``repeats`` exports of ``weathers``, and the last bundle."""
    times = []
    for index in range(repeats):
        target = folder / f"{len(weathers)}-weathers-{index}"
        start = time.perf_counter()
        export_bundle(checkpoint, target, weathers=weathers, verify=verify, progress=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times), target


def independent_bytes(bundle: Path, weathers: list[str], folder: Path) -> int:
    """Bytes of each weather's graph saved on its own with its own external-data file."""
    total = 0
    for weather in weathers:
        model = onnx.load(str(bundle / f"{weather}.onnx"), load_external_data=True)
        alone = folder / f"alone-{weather}"
        alone.mkdir()
        onnx.save_model(model, str(alone / f"{weather}.onnx"), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{weather}.bin",
                        size_threshold=0)
        total += sum(p.stat().st_size for p in alone.iterdir())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint file or 'demo' (default: random "
                                             "msunet-tiny)")
    parser.add_argument("--weathers", type=int, default=3, help="weathers of the random model")
    parser.add_argument("--density", type=float, default=0.4,
                        help="specific fraction per tensor of the random model (paper: top 40%%)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--verify", action="store_true", help="time with verification on")
    args = parser.parse_args()

    if args.checkpoint:
        checkpoint = MaskedCheckpoint.load(args.checkpoint)
    else:
        checkpoint = random_checkpoint("msunet-tiny",
                                       weathers=[f"weather{i}" for i in range(args.weathers)],
                                       density=args.density, spread=0.02,
                                       made_by="benchmarks/bench_export.py")
    weathers = checkpoint.weathers
    print(f"model       {args.checkpoint or 'random'} {checkpoint.arch}, "
          f"{checkpoint.num_parameters():,} parameters, {len(weathers)} weathers, "
          f"verify={'on' if args.verify else 'off'}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_bundle(checkpoint, folder / "warm-up", weathers=weathers[:1], verify=False,
                      progress=False)  # first export pays one-off imports
        one, _ = timed_export(checkpoint, weathers[:1], folder, args.verify, args.repeats)
        many, bundle = timed_export(checkpoint, weathers, folder, args.verify, args.repeats)
        stored = sum(p.stat().st_size for p in bundle.iterdir() if p.suffix in (".onnx", ".bin"))
        weights = (bundle / "weights.bin").stat().st_size
        alone = independent_bytes(bundle, weathers, folder)
    print(f"export      1 weather {one:.2f} s, {len(weathers)} weathers {many:.2f} s "
          f"(median of {args.repeats}): ratio {many / one:.2f}x (goal <= 1.5x)")
    print(f"stored      bundle (common + {len(weathers)} weathers) {format_bytes(stored)} "
          f"(weights.bin {format_bytes(weights)}) vs {len(weathers)} independent single-weather "
          f"exports {format_bytes(alone)}: {stored / alone:.2f}x")


if __name__ == "__main__":
    main()
