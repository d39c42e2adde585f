"""Multi-scale encoder-decoder restoration network (the GGPM paper's backbone family).

A three-level U-Net with residual blocks, multi-scale inputs (the image, pooled to
each encoder level, is merged into that level's features) and multi-scale outputs
(each decoder level predicts a residual on the image at its own scale), after
MIMO-UNet. Training uses all three outputs; deployment runs :meth:`forward`, which
returns the full-resolution image only, so the exported graph has one output.

Height and width must be multiples of ``2 ** (levels - 1)`` = 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _res_stack(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(count)])


class ShallowImageFeatures(nn.Module):
    """Features of the pooled input image, merged into an encoder level (MIMO-UNet's SCM+FAM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 1)
        )
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return features + self.merge(torch.cat([features, self.embed(image)], dim=1))


class MultiScaleUNet(nn.Module):
    """Three-level multi-input multi-output U-Net.

    Args:
        base_channels: channels at full resolution; doubled at each coarser level.
        num_res_blocks: residual blocks in each encoder and decoder level.
    """

    size_multiple = 4

    def __init__(self, base_channels: int = 32, num_res_blocks: int = 4) -> None:
        super().__init__()
        c1, c2, c4 = base_channels, 2 * base_channels, 4 * base_channels
        self.head = nn.Conv2d(3, c1, 3, padding=1)
        self.enc1 = _res_stack(c1, num_res_blocks)
        self.down2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.image2 = ShallowImageFeatures(c2)
        self.enc2 = _res_stack(c2, num_res_blocks)
        self.down4 = nn.Conv2d(c2, c4, 3, stride=2, padding=1)
        self.image4 = ShallowImageFeatures(c4)
        self.enc4 = _res_stack(c4, num_res_blocks)

        self.dec4 = _res_stack(c4, num_res_blocks)
        self.out4 = nn.Conv2d(c4, 3, 3, padding=1)
        self.up2 = nn.ConvTranspose2d(c4, c2, 4, stride=2, padding=1)
        self.fuse2 = nn.Conv2d(2 * c2, c2, 1)
        self.dec2 = _res_stack(c2, num_res_blocks)
        self.out2 = nn.Conv2d(c2, 3, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.fuse1 = nn.Conv2d(2 * c1, c1, 1)
        self.dec1 = _res_stack(c1, num_res_blocks)
        self.out1 = nn.Conv2d(c1, 3, 3, padding=1)

    def forward_multiscale(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Restored images at 1/4, 1/2 and full resolution (coarse to fine)."""
        image2 = F.avg_pool2d(image, 2)
        image4 = F.avg_pool2d(image2, 2)

        e1 = self.enc1(self.head(image))
        e2 = self.enc2(self.image2(self.down2(e1), image2))
        e4 = self.enc4(self.image4(self.down4(e2), image4))

        d4 = self.dec4(e4)
        d2 = self.dec2(self.fuse2(torch.cat([self.up2(d4), e2], dim=1)))
        d1 = self.dec1(self.fuse1(torch.cat([self.up1(d2), e1], dim=1)))
        return [image4 + self.out4(d4), image2 + self.out2(d2), image + self.out1(d1)]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_multiscale(image)[-1]
