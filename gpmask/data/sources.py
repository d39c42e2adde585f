"""Training batches and evaluation pairs, from synthetic weather or from paired folders.

The trainer and ``gpmask eval`` see one small interface, :class:`PairSource`:

- ``weathers``: the weather names it serves;
- ``batch(weather, batch_size, crop, step)``: (degraded, clean) float32 NCHW arrays of
  random aligned ``crop`` x ``crop`` patches with random horizontal flips, a pure
  function of (seed, weather, step) so a resumed or distributed run draws exactly
  what an uninterrupted one would;
- ``eval_pairs(weather, count, size)``: whole (degraded, clean) HxWx3 images.

A training step of a small network costs tens of milliseconds on a CPU
(``benchmarks/bench_train_step.py``), so drawing a batch must cost a few milliseconds.
:class:`SyntheticPairs` therefore renders each clean image's weather a few times
(``pool_size`` variants per image and weather, made on first use and kept as uint8 like
the PNGs of the public sets) and crops from that pool, instead of rendering weather for
every crop. :class:`FolderPairs` decodes each pair once, on first use, and keeps it the
same way.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from gpmask.data.paired_folders import PairedFolder
from gpmask.data.synthetic import WEATHERS, degrade
from gpmask.errors import GpmaskError

#: An image pair as kept in memory: (degraded, clean), uint8 HxWx3, and a name for errors.
StoredPair = tuple[np.ndarray, np.ndarray, str]


class PairSource(Protocol):
    """What the trainer and evaluation draw data from."""

    weathers: tuple[str, ...]

    def batch(
        self, weather: str, batch_size: int, crop: int, step: int
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def eval_pairs(
        self, weather: str, count: int, size: tuple[int, int] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]: ...


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _weather_key(weather: str) -> int:
    """A stable number per weather name, so one weather's stream ignores the others."""
    return zlib.crc32(weather.encode())


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def fit_to_size(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre crop ``image`` to ``size`` = (h, w), scaling it up first if it is smaller.

    Cropping, not scaling down, keeps the scene at the pixel scale the model trained
    on (training crops full-resolution images).
    """
    height, width = size
    if height < 1 or width < 1:
        raise GpmaskError(f"evaluation size must be positive, got {height}x{width}")
    scale = max(height / image.shape[0], width / image.shape[1])
    if scale > 1.0:
        resized = (max(width, round(image.shape[1] * scale)),
                   max(height, round(image.shape[0] * scale)))
        image = np.clip(cv2.resize(image, resized, interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    top = (image.shape[0] - height) // 2
    left = (image.shape[1] - width) // 2
    return np.ascontiguousarray(image[top: top + height, left: left + width])


def random_crops(
    rng: np.random.Generator, draw: Callable[[int], StoredPair], count: int, batch_size: int,
    crop: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``batch_size`` aligned random crops, randomly flipped left-right, as float32 NCHW.

    ``draw(i)`` returns stored pair ``i`` of ``count``; every random choice comes from
    ``rng`` in a fixed order, so equal generators give equal batches.
    """
    if batch_size < 1 or crop < 1:
        raise GpmaskError(f"batch size and crop must be positive, got {batch_size} and {crop}")
    picks = rng.integers(count, size=batch_size)
    corners = rng.random((batch_size, 2))
    flips = rng.random(batch_size) < 0.5
    degraded = np.empty((batch_size, crop, crop, 3), np.uint8)
    clean = np.empty_like(degraded)
    for i, (pick, (fy, fx), flip) in enumerate(zip(picks, corners, flips, strict=True)):
        noisy, target, name = draw(int(pick))
        height, width = target.shape[:2]
        if height < crop or width < crop:
            raise GpmaskError(f"{name}: {width}x{height} image is smaller than the {crop} px crop")
        top, left = int(fy * (height - crop + 1)), int(fx * (width - crop + 1))
        window = (slice(top, top + crop), slice(left, left + crop))
        step = -1 if flip else 1
        degraded[i] = noisy[window][:, ::step]
        clean[i] = target[window][:, ::step]
    return tuple(
        np.divide(pixels.transpose(0, 3, 1, 2), np.float32(255), dtype=np.float32, order="C")
        for pixels in (degraded, clean)
    )


def _check_weather(weather: str, weathers: tuple[str, ...]) -> None:
    if weather not in weathers:
        raise GpmaskError(f"no data for weather {weather!r}; this source has {', '.join(weathers)}")


class SyntheticPairs:
    """Synthetic weather (:func:`~gpmask.data.synthetic.degrade`) on clean images.

    Training crops come from a pool of ``pool_size`` rendered variants per (image,
    weather); evaluation pairs are rendered afresh, image ``i % len(images)`` with a
    seed of its own, so ``count`` may exceed the number of images.
    """

    def __init__(
        self,
        clean_images: list[np.ndarray],
        weathers: tuple[str, ...] = WEATHERS,
        seed: int = 0,
        severity: float = 1.0,
        pool_size: int = 4,
    ) -> None:
        if not clean_images:
            raise GpmaskError("synthetic weather needs at least one clean image")
        unknown = [w for w in weathers if w not in WEATHERS]
        if unknown or not weathers:
            raise GpmaskError(
                f"unknown synthetic weather {', '.join(map(repr, unknown)) or '(none given)'}; "
                f"known weathers: {', '.join(WEATHERS)}"
            )
        if pool_size < 1:
            raise GpmaskError(f"pool size must be at least 1, got {pool_size}")
        if not (np.isfinite(severity) and severity >= 0):  # refused before any rendering
            raise GpmaskError(f"--severity must be a finite number >= 0, got {severity}")
        self.clean = [np.clip(np.asarray(image, np.float32), 0.0, 1.0) for image in clean_images]
        self.weathers = tuple(weathers)
        self.seed = seed
        self.severity = severity
        self.pool_size = pool_size
        self._clean_uint8 = [_to_uint8(image) for image in self.clean]
        self._pool: dict[tuple[str, int], StoredPair] = {}

    def _variant_seed(self, *keys: int) -> int:
        return int(np.random.SeedSequence([self.seed, *keys]).generate_state(1)[0])

    def _pooled(self, weather: str, index: int) -> StoredPair:
        """Pool entry ``index`` = image ``index // pool_size``, variant ``index % pool_size``."""
        if (weather, index) not in self._pool:
            image, variant = divmod(index, self.pool_size)
            seed = self._variant_seed(_weather_key(weather), image, variant)
            degraded = degrade(self.clean[image], weather, seed, self.severity)
            self._pool[weather, index] = (
                _to_uint8(degraded), self._clean_uint8[image], f"clean image {image}"
            )
        return self._pool[weather, index]

    def batch(
        self, weather: str, batch_size: int, crop: int, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random crops of pooled (degraded, clean) images; float32 NCHW in [0, 1]."""
        _check_weather(weather, self.weathers)
        rng = _rng(self.seed, _weather_key(weather), step)
        count = len(self.clean) * self.pool_size
        return random_crops(rng, lambda i: self._pooled(weather, i), count, batch_size, crop)

    def eval_pairs(
        self, weather: str, count: int, size: tuple[int, int] | None = None,
        style: str = "train",
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``count`` (degraded, clean) float32 HxWx3 pairs, fitted to ``size`` if given.

        ``style`` is the synthetic weather's family (:data:`~gpmask.data.synthetic.STYLES`):
        ``train`` is the one training crops come from, ``heldout`` one training never sees.
        """
        _check_weather(weather, self.weathers)
        pairs = []
        for i in range(count):
            clean = self.clean[i % len(self.clean)]
            if size is not None:
                clean = fit_to_size(clean, size)
            seed = self._variant_seed(_weather_key(weather), _weather_key("eval"), i)
            pairs.append((degrade(clean, weather, seed, self.severity, style=style), clean))
        return pairs


class FolderPairs:
    """Real paired data: one :class:`~gpmask.data.paired_folders.PairedFolder` per weather."""

    def __init__(self, folders: dict[str, PairedFolder], seed: int = 0) -> None:
        if not folders:
            raise GpmaskError("paired data needs at least one WEATHER=DIR folder")
        self.folders = dict(folders)
        self.weathers = tuple(folders)
        self.seed = seed
        self._cache: dict[tuple[str, int], StoredPair] = {}

    def _stored(self, weather: str, index: int) -> StoredPair:
        if (weather, index) not in self._cache:
            folder = self.folders[weather]
            degraded, clean = folder.load(index)
            self._cache[weather, index] = (
                _to_uint8(degraded), _to_uint8(clean), str(folder.pairs[index][0])
            )
        return self._cache[weather, index]

    def batch(
        self, weather: str, batch_size: int, crop: int, step: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Random aligned crops of the weather's pairs; float32 NCHW in [0, 1]."""
        _check_weather(weather, self.weathers)
        rng = _rng(self.seed, _weather_key(weather), step)
        count = len(self.folders[weather])
        return random_crops(rng, lambda i: self._stored(weather, i), count, batch_size, crop)

    def eval_pairs(
        self, weather: str, count: int, size: tuple[int, int] | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The weather's first ``count`` pairs (at most all of them), fitted to ``size``."""
        _check_weather(weather, self.weathers)
        folder = self.folders[weather]
        pairs = [folder.load(i) for i in range(min(count, len(folder)))]
        if size is None:
            return pairs
        return [(fit_to_size(d, size), fit_to_size(c, size)) for d, c in pairs]
