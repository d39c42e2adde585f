"""Image quality metrics shared by evaluation, calibration, the demo and benchmarks.

Thin wrappers over scikit-image so every part of gpmask measures PSNR and SSIM the
same way: float images in [0, 1], HxWx3 (or HxW), data range 1.
"""

from __future__ import annotations

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
