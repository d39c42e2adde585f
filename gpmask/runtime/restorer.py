"""``Restorer``: a loaded bundle that restores frames, one weather per call.

This is the runtime's public face: it opens a bundle, loads every weather once on the
chosen backend, and turns user frames (any size, uint8 or float in [0, 1], RGB/BGR,
gray or with alpha) into the network's padded tensors and back. The per-frame cost of a
weather switch is choosing another prepared session or engine context.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from gpmask.bundle import Bundle, check_precision
from gpmask.errors import GpmaskError
from gpmask.runtime.backends import load_backend
from gpmask.runtime.frames import batch_to_frames, frames_to_batch

log = logging.getLogger("gpmask.runtime")


class Restorer:
    """Restore frames with any weather of a bundle.

    Args:
        bundle: a :class:`~gpmask.bundle.Bundle` or the path of a bundle folder.
        backend: ``auto`` (TensorRT, then ONNX Runtime with CUDA, then OpenVINO on the
            CPU) or a name from :data:`gpmask.runtime.backends.BACKENDS`.
        precision: the graphs (or engines) to load: ``fp32``, ``fp16``, ``int8``, ...;
            ``bf16`` on OpenVINO.
        device: CUDA device index for GPU backends.

    Every file of the bundle is checked against the manifest's sha256 when it is opened
    (:meth:`gpmask.bundle.Bundle.open`), and the backend checks the files it reads again
    unless this bundle object already has.
    """

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike,
        backend: str = "auto",
        precision: str = "fp32",
        device: int = 0,
    ) -> None:
        self.precision = check_precision(precision)
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
        self.backend = load_backend(self.bundle, backend, precision, device)
        log.info("restoring with %s (%s, %s)", self.backend.name, precision,
                 ", ".join(self.backend.weathers))

    @property
    def weathers(self) -> list[str]:
        """The bundle's weather names (``common`` is accepted too when the bundle has it)."""
        return self.bundle.weathers

    @property
    def backend_name(self) -> str:
        """The backend in use, e.g. ``tensorrt``, ``onnxruntime-cuda``, ``onnxruntime-cpu``."""
        return self.backend.name

    def restore(self, frame: np.ndarray, weather: str, bgr: bool = False) -> np.ndarray:
        """Restore one HxW, HxWx1, HxWx3 or HxWx4 frame (uint8, or float32/64 in [0, 1]).

        ``bgr`` says the colour channels are in OpenCV's BGR(A) order. The result has
        the frame's shape, dtype and channel layout. A float frame with values outside
        [0, 1] (0-255 as floats, say) or with NaN/Inf is refused, never restored into
        a white or NaN frame.
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
        batch, fmt = frames_to_batch(frames, bgr, self.bundle.size_multiple)
        self._check_static_shape(batch.shape)
        restored = batch_to_frames(self.backend.run(weather, batch), fmt, frames)
        return np.stack(restored) if isinstance(frames, np.ndarray) else restored

    def _check_weather(self, weather: str) -> None:
        self.bundle.check_weather(weather)
        if weather not in self.backend.weathers:
            raise GpmaskError(
                f"bundle {self.bundle.root} has no {self.precision} network for {weather!r} "
                f"on {self.backend.name} (loaded: {', '.join(self.backend.weathers)})"
            )

    def _check_static_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse a batch a bundle exported with a static shape (``export --size``)
        cannot take, rather than let the backend fail on it."""
        static = self.bundle.manifest["input"].get("shape") or []
        if any(want is not None and want != have for want, have in zip(static, shape,
                                                                        strict=False)):
            wanted = "x".join("N" if d is None else str(d) for d in static)
            raise GpmaskError(
                f"bundle {self.bundle.root} was exported for input {wanted} only, and these "
                f"frames make {'x'.join(map(str, shape))} (after padding to multiples of "
                f"{self.bundle.size_multiple}); resize the frames or export without --size")

    def close(self) -> None:
        """Release the backend's sessions, engines and buffers."""
        self.backend.close()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
