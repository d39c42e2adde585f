"""A small CNN that tells a frame's weather, for routing frames to the right restorer.

It looks at tiles of the frame at full resolution (64x64 by default; see
:mod:`gpmask.runtime.router_frames`) and must cost little beside the restorer, so it is
four convolutions (batch-normalised, which lets a few thousand steps train it; exported
in eval mode the normalisation folds into the convolutions) and a linear layer. The
first convolution keeps the full resolution (thin streaks and drop rims are a pixel or
two wide), the other three halve it. Its first layer sees the tile and its fine detail
(the tile minus a 5x5 local mean): streaks, flakes and drop rims are fine detail
whatever the scene, so the classifier learns them from a dozen training images instead
of memorising the scenes. Its head pools both the mean and the maximum of the last
features: snow flakes and raindrop rims are sparse bright details that an average alone
would wash out.

:class:`TileRouter` is the graph a bundle ships: it runs the classifier on every tile of
a frame and pools the tiles into one decision per frame.
"""

from __future__ import annotations

import torch
from torch import nn


class WeatherClassifier(nn.Module):
    """Logits over ``num_classes`` weather classes for a batch of RGB images in [0, 1].

    Args:
        num_classes: number of classes (``clear`` plus the bundle's weathers).
        width: channels of the first convolution; each later one adds ``width``.
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 6
        for stage in range(4):
            out = width * (stage + 1)
            layers += [
                nn.Conv2d(channels, out, 3, stride=2 if stage else 1, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        detail = image - nn.functional.avg_pool2d(image, 5, stride=1, padding=2,
                                                  count_include_pad=False)
        features = self.features(torch.cat([image, 4.0 * detail], dim=1))
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class TileRouter(nn.Module):
    """One frame's logits (1 x classes) from its tiles (N x 3 x T x T): the mean, over the
    tiles and over the ensemble's classifiers, of each one's class log-probabilities,
    divided by ``temperature``.

    The mean of log-probabilities is a product of the tiles' probabilities: a class
    that some tiles rule out loses, so one odd tile (a bright highlight taken for a
    flake) does not decide the frame. Classifiers trained from different seeds err on
    different frames, so their product errs less than either. Dividing by the
    temperature fitted on held-out frames makes the softmax of the output a calibrated
    confidence, which the runtime compares with its ``min_confidence``.
    """

    def __init__(self, classifiers: list[WeatherClassifier], temperature: float = 1.0) -> None:
        super().__init__()
        self.classifiers = nn.ModuleList(classifiers)
        self.temperature = float(temperature)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        per_tile = torch.stack([torch.log_softmax(c(tiles), dim=1) for c in self.classifiers])
        return per_tile.mean(dim=(0, 1)).unsqueeze(0) / self.temperature
