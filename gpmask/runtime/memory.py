"""Frames too large for this machine's memory are refused before they are restored.

Left alone, a CPU runtime asked to restore a frame far larger than the memory it has
(an 8000x8000 photo, ``bench --sizes 100000x100000``) allocates until the kernel kills
the process, or fails deep inside a library. gpmask refuses such a frame up front with
the limit and what to do: resize the frames, or restore them in tiles. It does not
tile them itself: a restoration network sees far across the frame, so tiles restored
apart would differ at their seams from the whole frame, a silent change of result.

The working memory of a frame is estimated from the bundle's common graph
(:func:`gpmask.graph.memory.working_bytes_per_pixel`) and compared with the memory
available now (:func:`gpmask.host.check_memory`). GPU backends are bounded by their
engines' profiles and the device's memory instead, which the backend reports itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpmask import host
from gpmask.bundle import COMMON, Bundle
from gpmask.sizes import Size, format_size


@dataclass(frozen=True)
class WorkingMemory:
    """Bytes a network needs per pixel of a (padded) input frame, and where that came from.

    Attributes:
        bytes_per_pixel: working memory per pixel of one frame.
        source: what the estimate was made from, for messages.
    """

    bytes_per_pixel: float
    source: str

    @classmethod
    def of_bundle(cls, bundle: Bundle) -> WorkingMemory:
        """The estimate for a bundle's networks, from its common fp32 graph (every
        weather's graph has its structure; lower precisions take less)."""
        import onnx

        from gpmask.graph.memory import working_bytes_per_pixel

        graph = onnx.load(bundle.graph_path(COMMON), load_external_data=False)
        return cls(working_bytes_per_pixel(graph), f"{bundle.root}'s network")

    def largest_side(self, available: float, batch: int = 1) -> int:
        """The side of the largest square frame that fits in ``available`` bytes."""
        return int(math.sqrt(max(available, 0) / (self.bytes_per_pixel * batch)))

    def check(self, size: Size, what: str, batch: int = 1) -> None:
        """Refuse ``batch`` frames of ``size`` (height, width) unless their working memory
        fits in the memory available now; ``what`` names them in the message."""
        available = host.available_memory()
        frames = f"{batch} frames of {format_size(size)}" if batch > 1 else \
            f"a {format_size(size)} frame"
        side = self.largest_side(available or 0, batch)
        host.check_memory(
            self.bytes_per_pixel * size[0] * size[1] * batch,
            f"{what}: {frames} ({self.bytes_per_pixel:.0f} bytes per pixel of working "
            f"memory, estimated from {self.source})",
            f"frames up to about {side}x{side} pixels ({side * side / 1e6:.1f} megapixels) "
            f"fit here: resize the frames, or restore them in tiles", available)
