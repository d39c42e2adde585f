"""The GGPM paper's restoration network (WGWS-Net's stage-1 U-Net), as ``ggpm-unet``.

The paper (arXiv 2411.16739) trains one network: a three-level encoder-decoder of
widths C, 2C, 4C built from residual dense blocks, with cross-scale fusion of the
encoder features before decoding and the half- and quarter-size input injected into
the second and third levels. This module computes
the same function, so the paper's files load here and run through gpmask's export,
calibration and runtime unchanged.

Its attribute names are not gpmask's usual ones on purpose: ``state_dict()`` keys
(``Encoder.0.layer1.conv0.conv.layer.weight``, ``feat_extract.3.layer.weight``,
``AFFs.0.conv1.layer.weight``, ``SCM1.layer1.layer.weight``, ``FAM1.merge.layer.weight``)
and the order in which parameters are registered (which is the order of
``net.parameters()``, the order the paper's mask lists follow) are what make a
checkpoint written by the paper's code load with ``strict=True``. The original also
registers six loss-weighting scalars ahead of everything else that its forward pass
never reads; they are listed in :attr:`GGPMUNet.training_only_parameters` and left out.

Its pieces:

- every convolution is a :class:`ConvUnit` (a convolution, or a 4x4 stride-2 transposed
  convolution, optionally followed by exact GELU), which holds it as ``layer``;
- a :class:`ResidualDenseBlock` grows its input by three 3x3 GELU convolutions, each
  seeing everything before it, fuses them back with a 1x1 convolution and adds the input;
- :class:`ImageFeatures` embeds a resized input image and :class:`FeatureAttention`
  merges it into the features of a level (gated by their product);
- :class:`CrossScaleFusion` mixes the three encoder levels, resized to one of them.

Resizing is nearest-neighbour, as in the original: halving keeps every second pixel,
doubling repeats each pixel. Height and width must be multiples of 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gpmask.errors import GpmaskError


class ConvUnit(nn.Module):
    """One convolution (``layer``) with an optional exact GELU after it.

    ``transpose=True`` makes it a transposed convolution that doubles the size for a
    4x4 kernel with stride 2. Padding keeps the size (``kernel // 2``; one less for
    the transposed convolution).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        gelu: bool = True,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        if transpose:
            self.layer: nn.Module = nn.ConvTranspose2d(
                in_channels, out_channels, kernel_size, stride=stride,
                padding=kernel_size // 2 - 1,
            )
        else:
            self.layer = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2
            )
        self.gelu = gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return F.gelu(out) if self.gelu else out


class DenseLayer(nn.Module):
    """A 3x3 GELU convolution whose output is appended to its input's channels."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = ConvUnit(in_channels, growth, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(x)], dim=1)


class ResidualDenseBlock(nn.Module):
    """Three dense layers (each adds ``channels``), a 1x1 local fusion, and the input added."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = DenseLayer(channels, channels)
        self.conv1 = DenseLayer(2 * channels, channels)
        self.conv2 = DenseLayer(3 * channels, channels)
        self.LFF = ConvUnit(4 * channels, channels, 1, gelu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.LFF(self.conv2(self.conv1(self.conv0(x))))


class DenseBlockStack(nn.Module):
    """``count`` residual dense blocks in a row, named ``layer1`` ... ``layerN``.

    The paper's encoder and decoder levels hold six, whatever its ``num_res`` argument
    says; ``count`` makes smaller variants possible (for tests and quick training).
    """

    def __init__(self, channels: int, count: int) -> None:
        super().__init__()
        for index in range(1, count + 1):
            self.add_module(f"layer{index}", ResidualDenseBlock(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x


class CrossScaleFusion(nn.Module):
    """Encoder features of all three levels (resized to one) mixed into that level's width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvUnit(in_channels, out_channels, 1)
        self.conv2 = ConvUnit(out_channels, out_channels, 3, gelu=False)

    def forward(
        self, fine: torch.Tensor, middle: torch.Tensor, coarse: torch.Tensor
    ) -> torch.Tensor:
        return self.conv2(self.conv1(torch.cat([fine, middle, coarse], dim=1)))


class ImageFeatures(nn.Module):
    """Features of a resized input image: a small conv stack, its output beside the image, 1x1.

    The stack ends with ``channels - 3`` channels so that, with the image's three, the
    final 1x1 convolution sees exactly ``channels``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layer1 = ConvUnit(3, channels // 4, 3)
        self.layer2 = ConvUnit(channels // 4, channels // 2, 1)
        self.layer3 = ConvUnit(channels // 2, channels // 2, 3)
        self.layer4 = ConvUnit(channels // 2, channels - 3, 1)
        self.conv = ConvUnit(channels, channels, 1, gelu=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.layer4(self.layer3(self.layer2(self.layer1(image))))
        return self.conv(torch.cat([image, features], dim=1))


class FeatureAttention(nn.Module):
    """Merges image features into level features: ``features + conv3x3(features * image)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = ConvUnit(channels, channels, 3, gelu=False)

    def forward(self, features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        return features + self.merge(features * image_features)


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Nearest-neighbour resizing by ``scale`` (2, 1/2 or 1/4), as the original resizes.

    Output pixel i is input pixel floor(i / scale): halving keeps every second pixel,
    doubling repeats each pixel; values are copied, never computed. ``F.interpolate``
    exports as one ONNX ``Resize`` (nearest, asymmetric, floor) with constant scales,
    which ONNX Runtime, OpenVINO and TensorRT's parser all read. A strided slice and
    ``repeat_interleave`` compute the same values but export as a Slice whose end is
    INT64_MAX and a Reshape built from ``Shape``: OpenVINO 2026.4 gives such a slice of a
    size >= 1 the symbolic size of its input, rewrites the Reshape from that, and fails
    (``tests/test_openvino_graphs.py`` keeps the smallest graph that shows it).
    """
    return F.interpolate(x, scale_factor=scale, mode="nearest")


class GGPMUNet(nn.Module):
    """The GGPM paper's three-level residual-dense U-Net; input and output NCHW RGB.

    Args:
        base_channels: channels at full resolution (C); the coarser levels have 2C and
            4C. The paper runs C = 18 (4.99M parameters).
        num_blocks: residual dense blocks in each encoder and decoder level (the paper: 6).

    ``forward`` returns the restored image ``input + residual`` at full resolution (the
    original has no coarser outputs to train on).
    """

    size_multiple = 4
    #: Parameters the original code registers before all of its own (uncertainty
    #: weights and mask percentages of its training loop) that its forward pass never
    #: reads. They appear in its state dicts and lead its ``net.parameters()``-ordered
    #: mask lists; ``gpmask import`` drops them.
    training_only_parameters = (
        "log_var_A", "log_var_B", "log_var_C", "percentage_A", "percentage_B", "percentage_C",
    )

    def __init__(self, base_channels: int = 18, num_blocks: int = 6) -> None:
        super().__init__()
        if base_channels < 2 or num_blocks < 1:
            raise GpmaskError(
                f"ggpm-unet needs base_channels >= 2 and num_blocks >= 1, got "
                f"{base_channels} and {num_blocks}"
            )
        c1, c2, c4 = base_channels, 2 * base_channels, 4 * base_channels
        # Registration order below is the parameter order of the original's mask lists.
        self.Encoder = nn.ModuleList([DenseBlockStack(c, num_blocks) for c in (c1, c2, c4)])
        self.feat_extract = nn.ModuleList([
            ConvUnit(3, c1, 3),
            ConvUnit(c1, c2, 3, stride=2),
            ConvUnit(c2, c4, 3, stride=2),
            ConvUnit(c4, c2, 4, stride=2, transpose=True),
            ConvUnit(c2, c1, 4, stride=2, transpose=True),
            ConvUnit(c1, 3, 3, gelu=False),
        ])
        self.Decoder = nn.ModuleList([DenseBlockStack(c, num_blocks) for c in (c4, c2, c1)])
        self.Convs = nn.ModuleList([ConvUnit(2 * c2, c2, 1), ConvUnit(2 * c1, c1, 1)])
        self.AFFs = nn.ModuleList([CrossScaleFusion(c1 + c2 + c4, c) for c in (c1, c2, c4)])
        self.FAM1 = FeatureAttention(c4)
        self.SCM1 = ImageFeatures(c4)
        self.FAM2 = FeatureAttention(c2)
        self.SCM2 = ImageFeatures(c2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image2 = _resize(image, 1 / 2)
        image4 = _resize(image2, 1 / 2)

        e1 = self.Encoder[0](self.feat_extract[0](image))
        e2 = self.Encoder[1](self.FAM2(self.feat_extract[1](e1), self.SCM2(image2)))
        e4 = self.Encoder[2](self.FAM1(self.feat_extract[2](e2), self.SCM1(image4)))

        # Cross-scale fusion: every level sees all three encoder outputs at its size.
        e4_at2 = _resize(e4, 2)
        fused4 = self.AFFs[2](_resize(e1, 1 / 4), _resize(e2, 1 / 2), e4)
        fused2 = self.AFFs[1](_resize(e1, 1 / 2), e2, e4_at2)
        fused1 = self.AFFs[0](e1, _resize(e2, 2), _resize(e4_at2, 2))

        d4 = self.feat_extract[3](self.Decoder[0](fused4))
        d2 = self.Decoder[1](self.Convs[0](torch.cat([d4, fused2], dim=1)))
        d1 = self.Decoder[2](self.Convs[1](torch.cat([self.feat_extract[4](d2), fused1], dim=1)))
        return image + self.feat_extract[5](d1)
