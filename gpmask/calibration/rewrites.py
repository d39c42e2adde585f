"""The exact graph rewrites an int8 scheme may ask for, by name, applied in order.

Each is a function ``ModelProto -> (ModelProto, count)`` that leaves the network's
output unchanged and reports how many places it rewrote; an int8 scheme names the
ones it wants (:attr:`gpmask.calibration.int8.Int8Scheme.rewrites`). The order
matters: sub-pixel upsampling makes convolutions the concatenation split and the
channel padding can then treat like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from gpmask.calibration.channel_padding import pad_convolution_channels
from gpmask.calibration.concat_split import split_concatenated_convolutions
from gpmask.calibration.subpixel import subpixel_upsampling
from gpmask.errors import GpmaskError

Rewrite = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, int]]

#: Rewrite name -> function, in the order they are applied.
REWRITES: dict[str, Rewrite] = {
    "subpixel": subpixel_upsampling,
    "concat_split": split_concatenated_convolutions,
    "channel_padding": pad_convolution_channels,
}


def apply_rewrites(model: onnx.ModelProto, names: Sequence[str]) -> tuple[onnx.ModelProto, int]:
    """``model`` with the rewrites in ``names`` applied (in :data:`REWRITES` order) and the
    number of places they changed."""
    unknown = [name for name in names if name not in REWRITES]
    if unknown:
        raise GpmaskError(f"unknown graph rewrite {unknown[0]!r}; known: {', '.join(REWRITES)}")
    total = 0
    for name, rewrite in REWRITES.items():
        if name in names:
            model, count = rewrite(model)
            total += count
    return model, total
