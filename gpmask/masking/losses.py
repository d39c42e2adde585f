"""Restoration losses: Charbonnier, L1 or MSE on every output scale, plus optional perceptual.

The perceptual term compares VGG-16 features and needs that network's weights in a
local file (a torchvision-layout ``vgg16`` state dict); gpmask never downloads them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gpmask.errors import GpmaskError


def charbonnier(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Smooth L1-like penalty sqrt(d^2 + eps^2), robust to outliers and smooth at zero."""
    return torch.sqrt((prediction - target) ** 2 + eps * eps).mean()


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).abs().mean()


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error: the quantity PSNR measures. Unlike an L1-like loss, whose
    optimum is the conditional median, it rewards a partial correction of pixels the
    network is unsure about (a pixel that may or may not lie under a raindrop)."""
    return ((prediction - target) ** 2).mean()


PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "charbonnier": charbonnier,
    "l1": l1,
    "mse": mse,
}

#: VGG-16 convolution widths; "M" is a 2x2 max-pool (torchvision's ``features`` layout).
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_MEAN = (0.485, 0.456, 0.406)
_VGG_STD = (0.229, 0.224, 0.225)


class VGGPerceptualLoss(nn.Module):
    """L1 distance between VGG-16 ``relu3_3`` features of prediction and target.

    Args:
        weights_path: a local ``.pth`` with torchvision's ``vgg16`` state dict (``features.N.*``
            keys); loaded with ``weights_only=True``.
    """

    #: index in ``features`` after which features are compared (relu3_3).
    last_layer = 15

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in _VGG16:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(in_channels, int(item), 3, padding=1), nn.ReLU()]
                in_channels = int(item)
        self.features = nn.Sequential(*layers[: self.last_layer + 1])
        if not os.path.isfile(weights_path):
            raise GpmaskError(
                f"perceptual-loss weights {weights_path} not found (never downloaded)"
            )
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        state = {
            k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
        }
        wanted = self.features.state_dict()
        missing = [k for k in wanted if k not in state]
        if missing:
            raise GpmaskError(
                f"{weights_path} is not a VGG-16 state dict (lacks features.{missing[0]})"
            )
        self.features.load_state_dict({k: state[k] for k in wanted})
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_VGG_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_VGG_STD).view(1, 3, 1, 1))

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        normalise = lambda x: (x - self.mean) / self.std  # noqa: E731
        return l1(self.features(normalise(prediction)), self.features(normalise(target)))


class RestorationLoss(nn.Module):
    """Pixel loss over every scale a multi-output network predicts, plus optional perceptual.

    ``outputs`` is the list a network's ``forward_multiscale`` returns (coarse to fine)
    or a one-element list; the target is average-pooled to each output's size.
    """

    def __init__(
        self,
        pixel: str = "charbonnier",
        perceptual_weights: str | None = None,
        perceptual_weight: float = 0.04,
    ) -> None:
        super().__init__()
        if pixel not in PIXEL_LOSSES:
            raise GpmaskError(f"unknown loss {pixel!r}; use one of {', '.join(PIXEL_LOSSES)}")
        self.pixel = PIXEL_LOSSES[pixel]
        self.perceptual = VGGPerceptualLoss(perceptual_weights) if perceptual_weights else None
        self.perceptual_weight = perceptual_weight

    def forward(self, outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        loss = outputs[0].new_zeros(())
        for output in outputs:
            factor = target.shape[-1] // output.shape[-1]
            scaled = F.avg_pool2d(target, factor) if factor > 1 else target
            loss = loss + self.pixel(output, scaled)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(outputs[-1], target)
        return loss
