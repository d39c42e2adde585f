"""The frames a benchmark times and compares: real images under synthetic weather.

Random noise would time the same as a photograph but says nothing about quality: a
reduced-precision network's error depends on the statistics of what it sees. So each
size gets one held-out sample photograph per weather, resized to that size and
degraded with that weather (:func:`gpmask.data.synthetic.degrade`; a weather the
synthesiser does not know gets the clean photograph). Every backend and precision is
timed and compared on exactly these frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gpmask.data.clean import sample_images
from gpmask.data.synthetic import WEATHERS, degrade
from gpmask.runtime.frame_batch import pad_reflect


@dataclass(frozen=True)
class BenchFrame:
    """One frame: the weather it shows and its padded NCHW float32 batch of one.

    Attributes:
        weather: the bundle weather that restores it.
        batch: ``1x3xHxW`` RGB in [0, 1], padded to the bundle's size multiple.
        height, width: the frame's size before padding.
    """

    weather: str
    batch: np.ndarray
    height: int
    width: int

    def image(self, restored: np.ndarray) -> np.ndarray:
        """``restored`` (a padded batch of one) as the frame's HxWx3 image in [0, 1].

        Clipped as the runtime clips what it hands to users, so quality compares the
        images a user would get, not values outside the displayable range.
        """
        return np.clip(restored[0, :, : self.height, : self.width].transpose(1, 2, 0), 0, 1)


def bench_frames(height: int, width: int, weathers: list[str], multiple: int) -> list[BenchFrame]:
    """One degraded frame per weather, in ``weathers`` order, at ``height`` x ``width``."""
    photos = sample_images("heldout")
    frames = []
    for index, weather in enumerate(weathers):
        photo = cv2.resize(photos[index % len(photos)], (width, height),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
        image = degrade(photo, weather, seed=index) if weather in WEATHERS else photo
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
        frames.append(BenchFrame(weather, np.ascontiguousarray(pad_reflect(batch, multiple)),
                                 height, width))
    return frames
