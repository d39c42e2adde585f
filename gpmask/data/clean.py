"""Clean images: the sample photos scikit-image ships, a user's folder, one image file.

Synthetic weather needs clean pictures to degrade. scikit-image installs a handful
of sample images inside its package folder; they are read straight from there by
file name (never through ``skimage.data``'s fetchers, which may download). Training
and evaluation use disjoint sets of *whole images*, so a held-out score never
rewards memorising a picture the model was trained on.

Every image leaves this module the same way: float32, HxWx3, RGB, values in [0, 1].
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np

from gpmask.data.images import IMAGE_SUFFIXES, is_image_file, read_pixels
from gpmask.errors import GpmaskError

#: Sample images (file stems under ``skimage/data``) per split. The stereo pair of
#: motorcycle views stays together on the training side so no held-out image has a
#: near-twin in training. Gray images are used as RGB.
SAMPLE_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "astronaut", "motorcycle_left", "motorcycle_right", "ihc", "color",
        "hubble_deep_field", "retina", "brick", "grass", "gravel", "moon", "coins",
    ),
    "heldout": ("chelsea", "coffee", "rocket", "camera"),
}

#: Sample images are scaled down to this long side, so that a large scan (retina is
#: 1411 px) does not dominate memory and every image covers a similar scene scale.
SAMPLE_MAX_SIDE = 512


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode one image file to float32 RGB in [0, 1] (gray and RGBA become RGB).

    8- and 16-bit files are scaled by their full range; a damaged or truncated file is
    refused (:func:`gpmask.data.images.read_pixels`).
    """
    image = read_pixels(path)
    full_range = np.float32(np.iinfo(image.dtype).max)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image.astype(np.float32) / full_range


def load_image_folder(folder: str | os.PathLike) -> list[np.ndarray]:
    """Every readable image in ``folder`` (not its subfolders), sorted by file name.

    Files without an image suffix are ignored; an image file OpenCV cannot decode is
    skipped with a warning naming it. A missing folder or one without a readable
    image is an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GpmaskError(f"image folder {folder} does not exist")
    images = []
    for path in sorted(p for p in folder.iterdir() if is_image_file(p)):
        try:
            images.append(read_image(path))
        except GpmaskError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
    if not images:
        raise GpmaskError(
            f"image folder {folder} holds no readable image ({', '.join(IMAGE_SUFFIXES)})"
        )
    return images


def _skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _limit_size(image: np.ndarray, max_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def sample_images(split: str) -> list[np.ndarray]:
    """The scikit-image sample images of one split, ``"train"`` or ``"heldout"``.

    Deterministic order (that of :data:`SAMPLE_SPLITS`); long sides capped at
    :data:`SAMPLE_MAX_SIDE`.
    """
    if split not in SAMPLE_SPLITS:
        raise GpmaskError(f"unknown sample split {split!r}; use one of {', '.join(SAMPLE_SPLITS)}")
    data_dir = _skimage_data_dir()
    images = []
    for stem in SAMPLE_SPLITS[split]:
        found = sorted(p for p in data_dir.glob(f"{stem}.*") if is_image_file(p))
        if not found:
            raise GpmaskError(
                f"scikit-image sample {stem!r} is missing from {data_dir}; "
                "reinstall scikit-image or pass a folder of clean images"
            )
        images.append(_limit_size(read_image(found[0]), SAMPLE_MAX_SIDE))
    return images
