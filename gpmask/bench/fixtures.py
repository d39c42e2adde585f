"""Set-ups the benchmark scripts (``benchmarks/``) and the tests share: random checkpoints,
bundles exported and calibrated for a measurement, and the restore rate of a frame set.

A benchmark measures what a user would run, so its bundle is made by the same API
(:func:`gpmask.export.export_bundle`, :func:`gpmask.calibration.pipeline.calibrate_bundle`)
from the checkpoint named on its command line, or, where that checkpoint is not on this
machine, from a random one of the demo's architecture (said on stderr).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.masking.checkpoint import MaskedCheckpoint

#: What a random checkpoint's weathers are called (calibration renders frames of them).
WEATHERS = ("rain", "raindrop", "snow")
#: A PSNR budget no quantization exceeds: calibrating a random-weight network with it
#: quantizes every layer (there is no restoration to keep; its latency is what counts).
#: Calibration takes finite budgets only.
UNBOUNDED_DB = 1000.0


def random_checkpoint(arch: str = "tiny", arch_kwargs: dict | None = None,
                      weathers: Sequence[str] = WEATHERS, density: float = 0.4,
                      spread: float = 0.05, seed: int = 0,
                      made_by: str = "gpmask.bench.fixtures") -> MaskedCheckpoint:
    """Random common values of ``arch`` and, per weather, a random mask of ``density`` in
    every tensor with specific values ``spread`` (standard deviation) from the common ones,
    so that baked weathers give visibly different outputs."""
    import torch

    from gpmask.masking.checkpoint import MaskedCheckpoint
    from gpmask.model import build_model

    torch.manual_seed(seed)
    common = {n: v.detach().numpy() for n, v in build_model(arch, arch_kwargs).state_dict().items()}
    rng = np.random.default_rng(seed)
    masks, weights = {}, {}
    for weather in weathers:
        masks[weather] = {n: rng.random(v.shape) < density for n, v in common.items()}
        weights[weather] = {n: v + rng.normal(0, spread, v.shape).astype(v.dtype)
                            for n, v in common.items()}
    return MaskedCheckpoint.from_weights(arch, arch_kwargs or {}, common, weights, masks,
                                         provenance={"made_by": made_by})


def checkpoint_file(checkpoint: str | os.PathLike | MaskedCheckpoint, folder: Path) -> Path:
    """A checkpoint file for ``checkpoint``: a path or shipped name as it is, a checkpoint
    in memory saved into ``folder``; a name that is not on this machine is replaced by a
    random ``tiny`` checkpoint, saying so on stderr. Exporting from a file records its
    sha256 in the manifest, which the torch reference needs."""
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint

    if isinstance(checkpoint, MaskedCheckpoint):
        path = folder / "checkpoint.gpmask.safetensors"
        checkpoint.save(path)
        return path
    path = resolve_checkpoint(checkpoint)
    if path.is_file():
        return path
    print(f"{checkpoint} not found: using a random checkpoint of the tiny architecture",
          file=sys.stderr)
    path = folder / "random-tiny.gpmask.safetensors"
    random_checkpoint().save(path)
    return path


def prepared_bundle(folder: Path, checkpoint: str | os.PathLike | MaskedCheckpoint = "demo",
                    precisions: Sequence[str] = (), options: CalibrationOptions | None = None,
                    **export: Any) -> tuple[Path, Path]:
    """``folder/bundle`` exported from ``checkpoint`` (see :func:`checkpoint_file`; keyword
    arguments go to ``export_bundle``) and calibrated to each of ``precisions``; returns
    the bundle and the checkpoint file."""
    from gpmask.calibration.pipeline import calibrate_bundle
    from gpmask.export import export_bundle

    source = checkpoint_file(checkpoint, folder)
    export = {"verify": False, "progress": False, **export}
    bundle = export_bundle(source, folder / "bundle", **export).root
    for precision in precisions:
        calibrate_bundle(bundle, precision, options)
    return bundle, source


def restore_rate(restorer: Any, frames: Sequence[np.ndarray], weathers: Sequence[str]) -> float:
    """Frames per second restoring every frame, frame i with ``weathers[i % len(weathers)]``."""
    start = time.perf_counter()
    for index, frame in enumerate(frames):
        restorer.restore(frame, weathers[index % len(weathers)], bgr=True)
    return len(frames) / (time.perf_counter() - start)
