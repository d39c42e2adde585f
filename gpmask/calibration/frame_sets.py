"""Frames a weather's graph is calibrated on, and the held-out frames it is judged on.

INT8 scales are statistics of the activations, and activations depend on the weather
in the frame: a snow graph calibrated on rain frames clips the bright flakes. So every
weather gets frames of its own weather, either from the user's folder
(``DIR/<weather>/*.png``) or rendered by :mod:`gpmask.data.synthetic` on the
*training* sample images. Quality is always judged on the *held-out* sample images,
which calibration never sees, rendered with that weather, so the clean image is
known and PSNR against ground truth can be reported beside PSNR against fp32.

The ``common`` graph serves every weather, so its frames are an even mix of them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpmask.bundle import COMMON
from gpmask.errors import GpmaskError
from gpmask.sizes import Size, format_size

#: Seeds of held-out renders start here, far from calibration seeds, so the two never
#: share a random weather even when they share nothing else.
HELDOUT_SEED_BASE = 1_000_000


@dataclass
class Frames:
    """Degraded frames (float32 HxWx3 RGB in [0, 1]) and, when known, their clean images.

    Attributes:
        degraded: the network's inputs.
        clean: ground truth, one per degraded frame, or ``None`` (a user's folder).
        source: a short description for reports (``"synthetic train, 16 crops"``).
    """

    degraded: list[np.ndarray]
    clean: list[np.ndarray] | None
    source: str

    def __len__(self) -> int:
        return len(self.degraded)

    def digest(self) -> str:
        """sha256 over the frames' shapes and bytes: part of the calibration cache key."""
        hasher = hashlib.sha256()
        for frame in self.degraded:
            hasher.update(str(frame.shape).encode())
            hasher.update(np.ascontiguousarray(frame, dtype=np.float32).tobytes())
        return hasher.hexdigest()


def to_batch(frame: np.ndarray) -> np.ndarray:
    """HxWx3 float frame -> 1x3xHxW float32, the bundle's input layout."""
    return np.ascontiguousarray(frame.transpose(2, 0, 1)[None], dtype=np.float32)


def from_batch(batch: np.ndarray) -> np.ndarray:
    """1x3xHxW output -> HxWx3 float32."""
    return np.ascontiguousarray(np.asarray(batch, dtype=np.float32)[0].transpose(1, 2, 0))


def _weathers_of(weather: str, bundle_weathers: list[str]) -> list[str]:
    return list(bundle_weathers) if weather == COMMON else [weather]


def _crops(
    images: list[np.ndarray], count: int, size: Size, rng: np.random.Generator
) -> list[np.ndarray]:
    """``count`` random crops of ``size`` (height, width), cycling through ``images``."""
    crops = []
    for index in range(count):
        image = images[index % len(images)]
        height, width = image.shape[:2]
        crop_h, crop_w = size
        if height < crop_h or width < crop_w:
            raise GpmaskError(f"frame size {format_size(size)} exceeds an image of "
                              f"{height}x{width}")
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crops.append(image[top : top + crop_h, left : left + crop_w])
    return crops


def synthetic_calibration_frames(
    weather: str, bundle_weathers: list[str], count: int, size: Size, seed: int = 0
) -> Frames:
    """``count`` crops of the training sample images, rendered with ``weather``."""
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import degrade

    if count < 1:
        raise GpmaskError(f"--synthetic needs at least 1 frame, got {count}")
    rng = np.random.default_rng(seed)
    clean = _crops(sample_images("train"), count, size, rng)
    kinds = _weathers_of(weather, bundle_weathers)
    degraded = [degrade(c, kinds[i % len(kinds)], seed=seed + i) for i, c in enumerate(clean)]
    return Frames(degraded, clean,
                  f"synthetic train images, {count} crops of {format_size(size)}")


def folder_calibration_frames(
    weather: str, bundle_weathers: list[str], data_dir: str | os.PathLike, size: Size
) -> Frames:
    """The images of ``data_dir/<weather>`` (every weather's folder for ``common``).

    Each image is centre-cropped to at most ``size`` (height, width), its sides cut to
    multiples of 4, so calibration runs at the size it will be judged at.
    """
    from gpmask.data.clean import load_image_folder

    check_data_folders(data_dir, bundle_weathers)
    frames: list[np.ndarray] = []
    for kind in _weathers_of(weather, bundle_weathers):
        frames.extend(_centre_crop(image, size)
                      for image in load_image_folder(Path(data_dir) / kind))
    return Frames(frames, None, f"folder {data_dir}, {len(frames)} images")


def _centre_crop(image: np.ndarray, size: Size, multiple: int = 4) -> np.ndarray:
    height, width = image.shape[:2]
    crop_h = min(size[0], height) // multiple * multiple
    crop_w = min(size[1], width) // multiple * multiple
    if crop_h == 0 or crop_w == 0:
        raise GpmaskError(f"image of {width}x{height} is smaller than {multiple}x{multiple}")
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return np.ascontiguousarray(image[top : top + crop_h, left : left + crop_w])


def check_data_folders(data_dir: str | os.PathLike, bundle_weathers: list[str]) -> None:
    """Refuse ``--data`` unless it holds a subfolder for every weather (checked before any
    weather is calibrated, so a missing one does not stop the run half way)."""
    for kind in bundle_weathers:
        folder = Path(data_dir) / kind
        if not folder.is_dir():
            raise GpmaskError(
                f"calibration folder {folder} does not exist; --data needs one subfolder "
                f"per weather ({', '.join(bundle_weathers)})"
            )


def heldout_frames(weather: str, bundle_weathers: list[str], size: Size) -> Frames:
    """The held-out sample images, centre crops of ``size``, rendered with ``weather``.

    Weathers the synthetic generator does not know cannot be judged against ground
    truth, and are refused with that reason; so is a size larger than the images (a
    smaller crop would be judged while the report named the size asked for).
    """
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import WEATHERS, degrade

    kinds = _weathers_of(weather, bundle_weathers)
    unknown = [kind for kind in kinds if kind not in WEATHERS]
    if unknown:
        raise GpmaskError(
            f"cannot judge weather {unknown[0]!r} on held-out frames: the synthetic generator "
            f"renders only {', '.join(WEATHERS)}"
        )
    images = sample_images("heldout")
    smallest = (min(i.shape[0] for i in images), min(i.shape[1] for i in images))
    if size[0] > smallest[0] or size[1] > smallest[1]:
        raise GpmaskError(f"--eval-size {format_size(size)}: the held-out images are "
                          f"{format_size(smallest)} at the smallest; give at most that")
    clean = [_centre_crop(image, size) for image in images]
    degraded = [
        degrade(c, kinds[i % len(kinds)], seed=HELDOUT_SEED_BASE + i) for i, c in enumerate(clean)
    ]
    return Frames(degraded, clean,
                  f"synthetic held-out images, {len(clean)} crops of {format_size(size)}")
