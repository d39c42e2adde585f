"""What the weather router sees of a frame, and how its output becomes a decision: numpy alone.

One home for both, shared by training (:mod:`gpmask.router.training`), the video loop
(:mod:`gpmask.runtime.routing`) and the Triton routing model (:mod:`gpmask.serve`), whose
container has neither gpmask nor OpenCV: ``gpmask export-triton`` copies this file beside it.

The router looks at tiles of the frame at full resolution, never at a downscaled frame:
rain streaks, drop rims and snow flakes are a few pixels wide, and shrinking a frame to a
classifier's input size turns them into a faint texture that depends on the frame's size.
A tile shows the weather at the pixel scale the camera delivers whatever the frame's
size. A fixed grid of ``rows x cols`` tiles spread evenly over the frame (overlapping on a
small frame) gives the graph one input shape and looks at every part of the frame, so
weather confined to part of it (drops on one side of the lens) is still seen.

The graph (:class:`gpmask.model.weather_classifier.TileRouter`) pools the tiles' class
log-probabilities into one row of logits per frame, temperature-scaled so that their
softmax is a calibrated confidence. A frame whose top probability is below the policy's
``min_confidence`` gets :data:`UNSURE`, which the loop treats like ``clear``: the frame is
passed through, because a frame restored by another weather's network (or by the common
one, on raindrops) ends up worse than the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The decision for a frame whose top class probability is under ``min_confidence``.
UNSURE = "unsure"


def tile_corners(height: int, width: int, tile: int, grid: tuple[int, int]
                 ) -> list[tuple[int, int]]:
    """(top, left) of each tile of a ``grid`` (rows, cols) spread evenly over a frame of at
    least ``tile`` pixels each way, from edge to edge (a single row or column is centred),
    row by row."""

    def spread(length: int, count: int) -> list[int]:
        if count == 1:
            return [(length - tile) // 2]
        return [int(v) for v in np.linspace(0, length - tile, count).round()]

    return [(top, left) for top in spread(height, grid[0]) for left in spread(width, grid[1])]


def router_input(frame: np.ndarray, tile: int, grid: tuple[int, int], bgr: bool = True
                 ) -> np.ndarray:
    """The router graph's input for one HxWx3 frame: ``rows*cols x 3 x tile x tile`` float32
    RGB in [0, 1].

    ``bgr`` says the frame's channel order (OpenCV's BGR in the loop, RGB in a Triton
    request). 8- and 16-bit frames are scaled by their full range. A frame shorter than a
    tile either way is extended by mirroring its edges rather than enlarged, so the weather
    keeps its pixel scale.
    """
    height, width = frame.shape[:2]
    if height < tile or width < tile:
        frame = np.pad(frame, ((0, max(0, tile - height)), (0, max(0, tile - width)), (0, 0)),
                       mode="symmetric")
        height, width = frame.shape[:2]
    tiles = np.stack([frame[top:top + tile, left:left + tile]
                      for top, left in tile_corners(height, width, tile, grid)])
    if bgr:
        tiles = tiles[..., ::-1]
    scale = np.float32(1.0 / (np.iinfo(frame.dtype).max if frame.dtype.kind in "ui" else 1.0))
    return np.ascontiguousarray((tiles.astype(np.float32) * scale).transpose(0, 3, 1, 2))


def class_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax of one row of the router's (temperature-scaled) logits."""
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def decide(probabilities: np.ndarray, classes: Sequence[str], min_confidence: float) -> str:
    """The most probable class, or :data:`UNSURE` when its probability is under
    ``min_confidence``."""
    best = int(np.argmax(probabilities))
    return classes[best] if probabilities[best] >= min_confidence else UNSURE
