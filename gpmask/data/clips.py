"""Synthetic clips whose weather changes: the demo's clip and the router's evaluation clips.

A clip pans across held-out clean images (never used to train the demo model or its
router) while the weather changes from stretch to stretch. Rain streaks and snow flakes
are drawn anew on every frame; drops on the lens stay put, as they would on a camera.
Each stretch keeps one look (haze, wind, drop and flake sizes), as one shower would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gpmask.errors import GpmaskError

#: The router's class for "no adverse weather" (gpmask.bundle.CLEAR, which data/ cannot
#: import: the bundle stands above it).
CLEAR = "clear"
#: The weather sequence of the demo clip, in order (weathers a bundle lacks are left out).
DEMO_SEQUENCE = ("rain", "snow", "raindrop", CLEAR)
#: Weathers whose synthetic pattern is fixed on the lens rather than redrawn each frame.
STATIC_WEATHERS = ("raindrop",)


@dataclass
class Clip:
    """Clean and degraded frames (uint8 BGR) and each frame's true weather."""

    clean: list[np.ndarray]
    degraded: list[np.ndarray]
    weathers: list[str]
    fps: float


def make_clip(
    weathers: Sequence[str], frames: int = 96, size: tuple[int, int] = (192, 192),
    fps: float = 12.0, seed: int = 0, sequence: Sequence[str] = DEMO_SEQUENCE,
    style: str = "train",
) -> Clip:
    """A clip of ``frames`` frames of ``size`` (height, width): one stretch per entry of
    ``sequence`` that is ``clear`` or one of ``weathers``, in that order, in the synthetic
    weather ``style``; stretch ``k`` pans across held-out image ``k + seed``."""
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import degrade

    stretches = [w for w in sequence if w == CLEAR or w in weathers]
    if len(stretches) < 2:
        raise GpmaskError(
            f"the clip needs at least one of {', '.join(w for w in sequence if w != CLEAR)}; "
            f"this bundle has {', '.join(weathers)}"
        )
    if frames < len(stretches):
        raise GpmaskError(f"--frames must be at least {len(stretches)}, got {frames}")
    images = sample_images("heldout")
    clip = Clip([], [], [], fps)
    for segment, weather in enumerate(stretches):
        count = frames // len(stretches) + (segment < frames % len(stretches))
        image = images[(segment + seed) % len(images)]
        for step in range(count):
            clean = pan(image, step / max(count - 1, 1), size)
            if weather == CLEAR:
                degraded = clean
            else:
                segment_seed = seed * 100_003 + segment * 1009
                frame_seed = segment_seed + (0 if weather in STATIC_WEATHERS else step)
                degraded = degrade(clean, weather, seed=frame_seed, look_seed=segment_seed,
                                   style=style)
            clip.clean.append(to_bgr_uint8(clean))
            clip.degraded.append(to_bgr_uint8(degraded))
            clip.weathers.append(weather)
    return clip


def pan(image: np.ndarray, position: float, size: tuple[int, int]) -> np.ndarray:
    """A window of ``size``'s aspect, 70% of the largest such window the image holds,
    moved left to right (``position`` 0 to 1) and resized to ``size``."""
    height, width = image.shape[:2]
    aspect = size[1] / size[0]
    window_h = int(min(height, width / aspect) * 0.7)
    window_w = int(window_h * aspect)
    left = int(round((width - window_w) * position))
    top = (height - window_h) // 2
    window = image[top : top + window_h, left : left + window_w]
    return cv2.resize(window, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def to_bgr_uint8(rgb: np.ndarray) -> np.ndarray:
    """A float RGB image in [0, 1] as the uint8 BGR frame a video decoder gives."""
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, ::-1])
