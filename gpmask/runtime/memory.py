"""Frames too large for this machine's memory are refused before they are restored.

Left alone, a CPU runtime asked to restore a frame far larger than the memory it has
(an 8000x8000 photo, ``bench --sizes 100000x100000``) allocates until the kernel kills
the process, or fails deep inside a library. gpmask refuses such a frame up front with
the limit and what to do: resize the frames, or restore them in tiles. It does not
tile them itself: a restoration network sees far across the frame, so tiles restored
apart would differ at their seams from the whole frame, a silent change of result.

The working memory of a frame is estimated from the bundle's common graph
(:func:`gpmask.graph.memory.live_bytes_per_pixel`: the largest set of tensors alive at
once), times :data:`RUNTIME_FACTOR` for what engines add to that (memory planning that
keeps tensors longer, convolution workspaces, the frame's float copies on the way in
and out), and compared with the memory available now (:func:`gpmask.host.available_memory`).
GPU backends are bounded by their engines' profiles and the device's memory instead,
which the backend reports itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpmask.errors import GpmaskError
from gpmask.sizes import Size, format_size

#: Measured working memory of ONNX Runtime and OpenVINO over the live-tensor estimate,
#: rounded up (``benchmarks/bench_working_memory.py`` prints the ratio per runtime).
RUNTIME_FACTOR = 3.0
_GIB = 1 << 30


def format_gib(count: float) -> str:
    return f"{count / _GIB:.1f} GiB"


@dataclass(frozen=True)
class WorkingMemory:
    """Bytes a network needs per pixel of a (padded) input frame, and where that came from.

    Attributes:
        bytes_per_pixel: working memory per pixel of one frame, factor included.
        source: what the estimate was made from, for messages.
    """

    bytes_per_pixel: float
    source: str

    @classmethod
    def of_graph(cls, model, source: str) -> WorkingMemory:
        """The estimate for an ONNX graph (``onnx.ModelProto``)."""
        from gpmask.graph.memory import live_bytes_per_pixel

        return cls(RUNTIME_FACTOR * live_bytes_per_pixel(model), source)

    def need(self, size: Size, batch: int = 1) -> float:
        """Bytes a batch of frames of ``size`` (height, width) needs."""
        return self.bytes_per_pixel * size[0] * size[1] * batch

    def largest_side(self, available: float, batch: int = 1) -> int:
        """The side of the largest square frame that fits in ``available`` bytes."""
        return int(math.sqrt(max(available, 0) / (self.bytes_per_pixel * batch)))

    def check(self, size: Size, what: str, batch: int = 1,
              available: int | None = None) -> None:
        """Refuse ``batch`` frames of ``size`` unless their working memory fits in the
        memory available (now, unless ``available`` is given); ``what`` names them."""
        from gpmask.host import available_memory

        available = available_memory() if available is None else available
        need = self.need(size, batch)
        if available is None or need <= available:
            return
        side = self.largest_side(available, batch)
        frames = f"{batch} frames of {format_size(size)}" if batch > 1 else \
            f"a {format_size(size)} frame"
        raise GpmaskError(
            f"{what}: {frames} needs about {format_gib(need)} of working memory "
            f"({self.bytes_per_pixel:.0f} bytes per pixel, estimated from {self.source}), "
            f"and {format_gib(available)} is available; frames up to about {side}x{side} "
            f"pixels ({side * side / 1e6:.1f} megapixels) fit here: resize the frames, or "
            f"restore them in tiles")
