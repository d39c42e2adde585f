"""Restoration losses against numpy, over every output scale, and the unknown-loss error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpmask.errors import GpmaskError
from gpmask.masking.losses import RestorationLoss

RNG = np.random.default_rng(0)
PREDICTION = RNG.random((2, 3, 8, 8)).astype(np.float32)
TARGET = RNG.random((2, 3, 8, 8)).astype(np.float32)

PIXEL = {
    "charbonnier": lambda d: np.sqrt(d**2 + 1e-6).mean(),
    "l1": lambda d: np.abs(d).mean(),
    "mse": lambda d: (d**2).mean(),
}


@pytest.mark.parametrize("name", list(PIXEL))
def test_pixel_loss_on_every_scale_matches_numpy(name: str) -> None:
    half = PREDICTION[:, :, ::2, ::2]
    pooled = TARGET.reshape(2, 3, 4, 2, 4, 2).mean(axis=(3, 5))  # 2x2 average pooling
    expected = PIXEL[name](half - pooled) + PIXEL[name](PREDICTION - TARGET)
    loss = RestorationLoss(name)([torch.from_numpy(half.copy()), torch.from_numpy(PREDICTION)],
                                 torch.from_numpy(TARGET))
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


def test_unknown_loss_names_the_known_ones() -> None:
    with pytest.raises(GpmaskError, match="unknown loss 'l3'; use one of charbonnier, l1, mse"):
        RestorationLoss("l3")
