"""Labelled frames for the router: synthetic weather rendered on clean images, or a user's
own frames in one folder per class.

Every frame here is what the video loop hands the router: a uint8 HxWx3 BGR array at the
camera's resolution. Synthetic frames are crops of clean pictures with the weather drawn
at its native pixel scale; the router then learns from tiles of them
(:func:`gpmask.runtime.router_frames.router_input`), as it sees tiles at run time.

A dozen training pictures are few scenes: a classifier trained on their crops as they
are learns the scenes. Each training crop is therefore turned a random quarter turn, its
colour channels shuffled and its exposure and gamma changed *before* the weather is
rendered (:func:`vary_scene`), so the weather itself stays as the renderer draws it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpmask.bundle import CLEAR
from gpmask.data.clean import IMAGE_SUFFIXES, is_image_file, read_image
from gpmask.data.clips import to_bgr_uint8
from gpmask.errors import GpmaskError


@dataclass
class FrameSet:
    """Frames (uint8 HxWx3 BGR, any sizes) and the class name of each."""

    frames: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)

    def extend(self, other: FrameSet) -> None:
        self.frames += other.frames
        self.labels += other.labels


@dataclass(frozen=True)
class Rendering:
    """How synthetic frames are drawn: crop sides (pixels, uniform), weather severity
    (uniform), the synthetic style, and whether scenes are varied (:func:`vary_scene`)."""

    side: tuple[int, int]
    severity: tuple[float, float]
    style: str = "train"
    vary_scenes: bool = False
    exposure: tuple[float, float] = (0.6, 1.2)
    gamma: tuple[float, float] = (0.7, 1.4)


def render_frames(images: Sequence[np.ndarray], classes: Sequence[str], per_class: int,
                  rendering: Rendering, seed: int, progress: bool = False) -> FrameSet:
    """``per_class`` frames of every class for every clean image (float RGB in [0, 1]):
    a random square crop, its scene varied when ``rendering`` says so, then the class's
    weather drawn on it (nothing for ``clear``)."""
    from tqdm import tqdm

    from gpmask.data.synthetic import degrade

    rng = np.random.default_rng(seed)
    out = FrameSet()
    total = len(images) * len(classes) * per_class
    with tqdm(total=total, desc="rendering", unit="frame", disable=not progress) as bar:
        for image in images:
            for name in classes:
                for _ in range(per_class):
                    crop = random_crop(image, int(rng.integers(rendering.side[0],
                                                               rendering.side[1] + 1)), rng)
                    if rendering.vary_scenes:
                        crop = vary_scene(crop, rendering, rng)
                    if name != CLEAR:
                        crop = degrade(crop, name, seed=int(rng.integers(2**31)),
                                       severity=float(rng.uniform(*rendering.severity)),
                                       style=rendering.style)
                    out.frames.append(to_bgr_uint8(crop))
                    out.labels.append(name)
                    bar.update(1)
    return out


def random_crop(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A square crop of ``side`` pixels (at most the image's shorter side) at a random place."""
    height, width = image.shape[:2]
    side = min(side, height, width)
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def vary_scene(crop: np.ndarray, rendering: Rendering, rng: np.random.Generator) -> np.ndarray:
    """Another scene from the same pixels: a quarter turn, shuffled channels, new exposure."""
    turned = np.rot90(crop, int(rng.integers(4)))[:, :, rng.permutation(3)]
    exposed = np.clip(turned * rng.uniform(*rendering.exposure), 0.0, 1.0)
    return np.ascontiguousarray(exposed ** rng.uniform(*rendering.gamma), dtype=np.float32)


def read_class_folders(folder: str | os.PathLike, classes: Sequence[str],
                       heldout_fraction: float) -> tuple[FrameSet, FrameSet]:
    """A user's frames, one subfolder per class (``clear`` and each weather), split into
    training and held-out frames.

    The held-out frames are the last ``heldout_fraction`` of each class's files in name
    order (at least one): frames numbered along a video are then held out as one stretch,
    not interleaved with near-identical training frames, so the held-out accuracy is not
    flattered by neighbours. A subfolder that is not a class, a class without a folder,
    an empty class, a class of one image (nothing left to hold out) and a file that is not
    a readable image are refused, naming the folder or file. Files without an image suffix
    are ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GpmaskError(f"--data {folder}: no such folder")
    found = {p.name: p for p in folder.iterdir() if p.is_dir()}
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise GpmaskError(f"--data {folder}/{unknown[0]}: not a class of this bundle; expected "
                          f"one folder per class: {', '.join(classes)}")
    missing = [c for c in classes if c not in found]
    if missing:
        raise GpmaskError(f"--data {folder} has no folder for class {missing[0]}; expected one "
                          f"folder per class: {', '.join(classes)}")
    train, heldout = FrameSet(), FrameSet()
    for name in classes:
        paths = sorted(p for p in found[name].iterdir() if is_image_file(p))
        if not paths:
            raise GpmaskError(f"--data {found[name]} holds no images "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        if len(paths) < 2:
            raise GpmaskError(f"--data {found[name]} holds one image; a class needs at least "
                              f"two (some are held out to measure the router)")
        held = min(len(paths) - 1, max(1, round(len(paths) * heldout_fraction)))
        for index, path in enumerate(paths):
            target = heldout if index >= len(paths) - held else train
            target.frames.append(to_bgr_uint8(read_image(path)))
            target.labels.append(name)
    return train, heldout
