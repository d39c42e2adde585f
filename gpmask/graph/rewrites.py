"""The exact graph rewrites an int8 precision may ask for, by name, applied in order.

Each is a transform ``ModelProto -> ModelProto`` that leaves the network's output
unchanged; an int8 precision names the ones it wants
(:attr:`gpmask.precision.Int8Scheme.rewrites`). The order matters: sub-pixel upsampling
makes convolutions the concatenation split and the channel padding can then treat like
any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from gpmask.errors import GpmaskError
from gpmask.graph.channel_padding import pad_convolution_channels
from gpmask.graph.concat_split import split_concatenated_convolutions
from gpmask.graph.subpixel import subpixel_upsampling

Rewrite = Callable[[onnx.ModelProto], onnx.ModelProto]

#: Rewrite name -> transform, in the order they are applied.
REWRITES: dict[str, Rewrite] = {
    "subpixel": subpixel_upsampling,
    "concat_split": split_concatenated_convolutions,
    "channel_padding": pad_convolution_channels,
}


def apply_rewrites(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """``model`` with the rewrites in ``names`` applied, in :data:`REWRITES` order."""
    unknown = [name for name in names if name not in REWRITES]
    if unknown:
        raise GpmaskError(f"unknown graph rewrite {unknown[0]!r}; known: {', '.join(REWRITES)}")
    for name, rewrite in REWRITES.items():
        if name in names:
            model = rewrite(model)
    return model
