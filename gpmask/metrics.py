"""Metrics shared by evaluation, calibration, the router, the demo and benchmarks.

Image quality: thin wrappers over scikit-image so every part of gpmask measures PSNR and
SSIM the same way: float images in [0, 1], HxWx3 (or HxW), data range 1.

Routing: how often a router chose each frame's true weather (a confusion matrix of class
names), how many frames it took to follow each change of weather, and how often it
flickered from one weather to another within a stretch of one weather.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of ``image`` against ``reference`` (both in [0, 1]); inf when identical."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    reference = np.asarray(reference, dtype=np.float64)
    if np.array_equal(image, reference):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, image, data_range=1.0))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity of ``image`` against ``reference`` (both in [0, 1])."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    reference = np.asarray(reference, dtype=np.float64)
    channel_axis = 2 if image.ndim == 3 else None
    return float(structural_similarity(reference, image, data_range=1.0, channel_axis=channel_axis))


# ----------------------------------------------------------------- routing
def confusion_matrix(true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
                     ) -> np.ndarray:
    """Frames per (true class, predicted class), rows and columns in ``classes`` order."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({*true, *predicted} - set(index))
    if unknown:
        raise ValueError(f"classes {unknown} are not among {list(classes)}")
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(true, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    return matrix


def class_accuracy(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """The fraction of each class's frames predicted right (None for a class with none)."""
    totals = matrix.sum(axis=1)
    return {name: float(matrix[i, i] / totals[i]) if totals[i] else None
            for i, name in enumerate(classes)}


def format_confusion(matrix: np.ndarray, classes: Sequence[str]) -> str:
    """The confusion matrix as an aligned text table: a row per true class."""
    corner = "true \\ routed"
    label = max(len(corner), *(len(c) for c in classes))
    width = max(8, *(len(c) for c in classes))
    lines = [f"{corner:>{label}} " + " ".join(f"{c:>{width}}" for c in classes)]
    for name, row in zip(classes, matrix, strict=True):
        lines.append(f"{name:>{label}} " + " ".join(f"{int(v):>{width}d}" for v in row))
    return "\n".join(lines)


def switch_lags(true: Sequence[str], chosen: Sequence[str]) -> list[dict]:
    """For every change of the true weather, the frames until the chosen weather followed
    it (up to the end of the new weather's stretch when it never did)."""
    lags = []
    for start in range(1, min(len(true), len(chosen))):
        if true[start] == true[start - 1]:
            continue
        end = start
        while end < len(chosen) and true[end] == true[start] and chosen[end] != true[start]:
            end += 1
        lags.append({"frame": start, "from": true[start - 1], "to": true[start],
                     "frames": end - start})
    return lags


def weather_flicker(true: Sequence[str], chosen: Sequence[str], clear: str) -> int:
    """Changes of the chosen weather from one weather straight to another (neither is
    ``clear``) inside stretches of one true weather, once the choice has first reached that
    weather: a restorer that flickers between two weathers' networks on a steady scene."""
    flicker, start = 0, 0
    for end in range(1, len(true) + 1):
        if end < len(true) and true[end] == true[start]:
            continue
        stretch = list(chosen[start:end])
        if true[start] in stretch:
            stretch = stretch[stretch.index(true[start]):]
            pairs = zip(stretch, stretch[1:], strict=False)
            flicker += sum(a != b and clear not in (a, b) for a, b in pairs)
        start = end
    return flicker
