"""``Restorer``: a loaded bundle that restores frames, one weather per call.

This is the runtime's public face: it opens a bundle, loads every weather once on the
chosen backend, and turns user frames (any size, uint8, uint16 or float in [0, 1], RGB/BGR,
gray or with alpha) into the network's padded tensors and back. The per-frame cost of a
weather switch is choosing another prepared session or engine context.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError, reported_as
from gpmask.precision import AUTO
from gpmask.runtime.backends import choose
from gpmask.runtime.frame_batch import batch_to_frames, frames_to_batch, padded_size
from gpmask.runtime.memory import WorkingMemory

log = logging.getLogger("gpmask.runtime")


class Restorer:
    """Restore frames with any weather of a bundle.

    Args:
        bundle: a :class:`~gpmask.bundle.Bundle` or the path of a bundle folder.
        backend: ``auto`` (the first backend of the registry that runs here: TensorRT
            engines, ONNX Runtime with CUDA, OpenVINO on the CPU, ONNX Runtime on the
            CPU) or a name from :data:`gpmask.runtime.backends.BACKENDS`.
        precision: ``auto`` (the fastest this bundle, backend and machine offer within
            the bundle's quality budget; :func:`gpmask.runtime.backends.choose`) or the
            graphs (or engines) to load: ``fp32``, ``fp16``, ``int8``, ...; ``bf16`` on
            OpenVINO.
        device: CUDA device index for GPU backends.

    Attributes:
        precision: the precision loaded (``auto`` resolved).
        choice: what was chosen and why (:attr:`Choice.reason`, one line).

    Every file of the bundle is checked against the manifest's sha256 when it is opened
    (:meth:`gpmask.bundle.Bundle.open`), and the backend checks the files it reads again
    unless this bundle object already has.
    """

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike,
        backend: str = AUTO,
        precision: str = AUTO,
        device: int = 0,
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.choice = choose(self.bundle, backend, precision, device)
        self.precision = self.choice.precision
        self.backend = self.choice.load(self.bundle, device)
        self._closed = False
        self._working_memory: WorkingMemory | None = None
        self._memory_checked: tuple[int, tuple[int, int]] | None = None
        log.info("restoring with %s (%s)", self.choice.reason, ", ".join(self.backend.weathers))

    @property
    def weathers(self) -> list[str]:
        """The bundle's weather names (``common`` is accepted too when the bundle has it)."""
        return self.bundle.weathers

    @property
    def backend_name(self) -> str:
        """The backend in use, e.g. ``tensorrt``, ``onnxruntime-cuda``, ``onnxruntime-cpu``."""
        return self.backend.name

    def restore(self, frame: np.ndarray, weather: str, bgr: bool = False) -> np.ndarray:
        """Restore one HxW, HxWx1, HxWx3 or HxWx4 frame (uint8, uint16, or float32/64 in
        [0, 1]).

        ``bgr`` says the colour channels are in OpenCV's BGR(A) order. The result has
        the frame's shape, dtype and channel layout. A float frame with values outside
        [0, 1] (0-255 as floats, say) or with NaN/Inf is refused, never restored into
        a white or NaN frame; so is a frame whose working memory this machine lacks
        (:mod:`gpmask.runtime.memory`: resize it, or restore it in tiles).
        """
        return self.restore_batch([frame], weather, bgr)[0]

    def restore_batch(
        self, frames: Sequence[np.ndarray] | np.ndarray, weather: str, bgr: bool = False
    ) -> list[np.ndarray] | np.ndarray:
        """Restore frames of one shape and type in one network call.

        ``frames`` is a sequence of frames or an array with the frames on its first
        axis; the result is the same kind (a list, or a stacked array).
        """
        self._check_weather(weather)
        self._check_memory(frames)
        batch, fmt = frames_to_batch(frames, bgr, self.bundle.size_multiple)
        self._check_static_shape(batch.shape)
        shape = "x".join(map(str, batch.shape))
        with reported_as(f"{self.backend.name} failed to restore a {shape} batch with the "
                         f"{weather} network", self.backend.error_types):
            output = self.backend.run(weather, batch)
        restored = batch_to_frames(output, fmt, frames)
        return np.stack(restored) if isinstance(frames, np.ndarray) else restored

    def _check_weather(self, weather: str) -> None:
        if self._closed:
            raise GpmaskError("this Restorer is closed; make a new one to restore frames")
        self.bundle.check_weather(weather)
        if weather not in self.backend.weathers:
            raise GpmaskError(
                f"bundle {self.bundle.root} has no {self.precision} network for {weather!r} "
                f"on {self.backend.name} (loaded: {', '.join(self.backend.weathers)})"
            )

    def _check_memory(self, frames: Sequence[np.ndarray] | np.ndarray) -> None:
        """Refuse frames whose working memory this machine does not have
        (:mod:`gpmask.runtime.memory`); checked once per frame size on CPU backends."""
        first = frames[0] if len(frames) else None
        if self.choice.spec.device != "cpu" or not isinstance(first, np.ndarray) \
                or first.ndim < 2:
            return
        size = padded_size(*first.shape[:2], self.bundle.size_multiple)
        if self._memory_checked == (len(frames), size):
            return
        if self._working_memory is None:
            self._working_memory = WorkingMemory.of_bundle(self.bundle)
        self._working_memory.check(size, f"{self.backend.name}", batch=len(frames))
        self._memory_checked = (len(frames), size)

    def _check_static_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse a batch a bundle exported with a static shape (``export --size``)
        cannot take, rather than let the backend fail on it."""
        spec = self.bundle.input_spec
        if any(want is not None and want != have for want, have in zip(spec.shape, shape,
                                                                        strict=False)):
            wanted = spec.describe()
            raise GpmaskError(
                f"bundle {self.bundle.root} was exported for input {wanted} only, and these "
                f"frames make {'x'.join(map(str, shape))} (after padding to multiples of "
                f"{self.bundle.size_multiple}); resize the frames or export without --size")

    def close(self) -> None:
        """Release the backend's sessions, engines and buffers."""
        self._closed = True
        self.backend.close()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
