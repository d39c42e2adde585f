"""What a client and gpmask's Triton models say to each other, in numpy alone.

One protocol for both servers: ``gpmask serve`` (the bundle's Restorer inside Triton's
Python backend) and the repository ``gpmask export-triton`` writes for NVIDIA's
container (a Python routing model in front of one model per weather). A client written
against one works against the other:

- model ``gpmask``; input ``image``: UINT8 ``[batch, H, W, 3]`` RGB frames (any size);
- request parameter ``weather`` (optional): a weather of the bundle, ``common``,
  ``clear`` or ``auto``; without it the server's default applies;
- outputs ``restored`` (UINT8, the input's shape) and ``weather``: FP32 one-hot over
  :func:`labels`, with a label file, so ``class_count=1`` (Triton's classification
  extension) returns ``b"1.000000:<index>:<name>"`` per frame.

Why a request parameter and a one-hot output rather than BYTES tensors: the Python
backend stub moves string tensors (and ``as_numpy``/``Tensor(numpy)`` of any type)
through numpy's C layout of the numpy it was built with; under numpy 2 a string input
crashes the stub and numeric tensors arrive wrong. Frames therefore travel by DLPack
(:func:`to_numpy`, :func:`from_numpy`), the weather by request parameter (JSON, no
numpy) and the weather chosen by a float tensor whose labels the server core adds.

This file imports only numpy and the standard library: it is copied next to the
production model in an exported repository, where gpmask is not installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

MODEL = "gpmask"
IMAGE = "image"
RESTORED = "restored"
WEATHER = "weather"
#: the request parameter naming a frame's weather
WEATHER_PARAMETER = "weather"
#: the label file of the ``weather`` output, in the model's folder
LABELS_FILE = "weathers.txt"
COMMON = "common"
CLEAR = "clear"
AUTO = "auto"
#: the weather models' tensors (the bundle's graphs: NCHW float32 RGB in [0, 1])
GRAPH_INPUT = "image"
GRAPH_OUTPUT = "restored"


class RequestError(ValueError):
    """A request the model cannot serve; its message goes back to that client only."""


def labels(weathers: Sequence[str]) -> list[str]:
    """The ``weather`` output's classes: the bundle's weathers, ``common``, ``clear``."""
    return [*weathers, COMMON, CLEAR]


def one_hot(chosen: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """``[len(chosen), len(classes)]`` float32, 1 at each frame's weather."""
    table = np.zeros((len(chosen), len(classes)), np.float32)
    for row, name in enumerate(chosen):
        table[row, classes.index(name)] = 1.0
    return table


def requested_weather(parameters: str, default: str, choices: Sequence[str]) -> str:
    """The weather a request asks for (its JSON parameters), else ``default``."""
    try:
        value = json.loads(parameters or "{}").get(WEATHER_PARAMETER, default)
    except (ValueError, AttributeError) as exc:
        raise RequestError(f"unreadable request parameters {parameters!r}") from exc
    if value not in choices:
        raise RequestError(f"weather {value!r} is not one of {', '.join(choices)}")
    return value


def check_frames(frames: np.ndarray, max_size: tuple[int, int]) -> None:
    """Refuse frames the model cannot restore (Triton has checked dtype and rank)."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise RequestError(f"{IMAGE} must be UINT8 [batch, H, W, 3] RGB, got "
                           f"{frames.dtype} {list(frames.shape)}")
    height, width = frames.shape[1:3]
    if height < 2 or width < 2:
        raise RequestError(f"frame size {height}x{width} is too small; frames must be at "
                           f"least 2x2 pixels")
    if height > max_size[0] or width > max_size[1]:
        raise RequestError(f"frame size {height}x{width} is larger than this server's "
                           f"maximum {max_size[0]}x{max_size[1]}")


def to_numpy(tensor: Any) -> np.ndarray:
    """A Python-backend tensor as a numpy array, by DLPack (no copy)."""
    return np.from_dlpack(_Capsule(tensor.to_dlpack()))


def from_numpy(pb_utils: Any, name: str, array: np.ndarray) -> Any:
    """A Python-backend tensor holding ``array``, by DLPack."""
    return pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(array).__dlpack__())


class _Capsule:
    """What ``np.from_dlpack`` takes: an object with ``__dlpack__``, around the stub's
    capsule (which is CPU memory: Python-backend models here run on the CPU)."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, stream: Any = None, **_: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0


def frames_to_nchw(frames: np.ndarray, multiple: int) -> np.ndarray:
    """UINT8 ``[B, H, W, 3]`` RGB as the graphs' float32 NCHW batch in [0, 1], padded at
    the bottom and right by reflection to multiples of ``multiple`` (as the runtime pads,
    :mod:`gpmask.runtime.frames`)."""
    batch = frames.astype(np.float32) * np.float32(1 / 255)
    batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    height, width = batch.shape[2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    return batch


def nchw_to_frames(restored: np.ndarray, height: int, width: int) -> np.ndarray:
    """The graphs' output cropped to ``height`` x ``width`` as UINT8 ``[B, H, W, 3]``."""
    cropped = np.clip(restored[:, :, :height, :width], 0.0, 1.0).transpose(0, 2, 3, 1)
    return np.rint(cropped * 255).astype(np.uint8)


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A UINT8 HxWx3 frame shrunk to ``size`` (height, width) by area averaging.

    The router was trained on OpenCV's ``INTER_AREA`` downscaling
    (:func:`gpmask.runtime.routing.router_input`); the production container has no
    OpenCV, so this computes the same: each output pixel is the mean of the input area
    it covers, fractional pixels weighted by their coverage. OpenCV rounds halves up
    where both ratios are whole numbers and to even elsewhere, in float32; so do these,
    in float64, which leaves a few pixels one level apart (tests/test_serve_protocol.py).
    """
    rows = _area_weights(frame.shape[0], size[0])
    cols = _area_weights(frame.shape[1], size[1])
    pixels = np.tensordot(rows, frame.astype(np.float64), axes=(1, 0))  # [out_h, W, 3]
    pixels = np.einsum("iwc,jw->ijc", pixels, cols, optimize=True)
    whole = frame.shape[0] % size[0] == 0 and frame.shape[1] % size[1] == 0
    rounded = np.floor(pixels + 0.5) if whole else np.rint(pixels)
    return np.clip(rounded, 0, 255).astype(np.uint8)


def _area_weights(length: int, out: int) -> np.ndarray:
    """``[out, length]``: the share of input pixel k in output pixel i's footprint."""
    scale = length / out
    starts = np.arange(out)[:, None] * scale
    edges = np.arange(length)[None, :]
    overlap = np.minimum(edges + 1, starts + scale) - np.maximum(edges, starts)
    return np.clip(overlap, 0.0, None) / scale


def router_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The router's ``1x3xhxw`` float32 input for one UINT8 HxWx3 RGB frame."""
    small = area_resize(frame, size)
    return (small.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


class FrameModel:
    """What both gpmask models do with a batch of requests; they differ in how a frame is
    classified (:meth:`classify`) and how frames of one weather and size are restored
    (:meth:`restore`).

    Triton's dynamic batcher hands :meth:`execute` several requests at once. Their frames
    are routed, grouped by the network they run on and their size, and each group is one
    :meth:`restore` call. A request that cannot be served (unknown weather, a frame too
    large) gets its own error response; the others are answered as usual. ``clear``
    frames pass through, or run on ``common`` when ``clear`` is ``"common"``, as in
    ``gpmask run``. Subclasses set the attributes below in ``initialize``.
    """

    pb_utils: Any
    classes: list[str]   # the weather output's labels: weathers, common, clear
    choices: list[str]   # weathers a request may name (``auto`` only with a router)
    default: str         # the weather of a request that names none
    clear: str           # "pass" or "common"
    max_size: tuple[int, int]

    def classify(self, frame: np.ndarray) -> str:
        """The router's class for one UINT8 HxWx3 RGB frame."""
        raise NotImplementedError

    def restore(self, network: str, frames: np.ndarray) -> np.ndarray:
        """UINT8 ``[n, H, W, 3]`` frames restored by ``network`` (a weather or common)."""
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        frames: list[np.ndarray | None] = []
        routed: list[list[str] | None] = []
        errors: dict[int, str] = {}
        for index, request in enumerate(requests):
            try:
                batch = to_numpy(self.pb_utils.get_input_tensor_by_name(request, IMAGE))
                check_frames(batch, self.max_size)
                weather = requested_weather(request.parameters(), self.default, self.choices)
                routed.append([self.classify(f) if weather == AUTO else weather
                               for f in batch])
                frames.append(batch)
            except RequestError as exc:
                errors[index] = str(exc)
                frames.append(None)
                routed.append(None)
        restored = self._restore_all(frames, routed, errors)
        return [self._response(index, restored, routed, errors)
                for index in range(len(requests))]

    def _restore_all(self, frames: list[np.ndarray | None], routed: list[list[str] | None],
                     errors: dict[int, str]) -> dict[tuple[int, int], np.ndarray]:
        """(request, frame) -> restored frame, one :meth:`restore` per network and size."""
        groups: dict[tuple[str | None, tuple[int, ...]], list[tuple[int, int]]] = {}
        for index, batch in enumerate(frames):
            for position, weather in enumerate(routed[index] or []):
                key = (self._network(weather), batch.shape[1:3])
                groups.setdefault(key, []).append((index, position))
        restored = {}
        for (network, _), places in groups.items():
            inputs = np.stack([frames[index][position] for index, position in places])
            try:
                outputs = inputs if network is None else self.restore(network, inputs)
            except (RequestError, ValueError, RuntimeError) as exc:
                for index, _ in places:
                    errors[index] = str(exc)
                continue
            restored.update(zip(places, outputs, strict=True))
        return restored

    def _network(self, weather: str) -> str | None:
        """The network a routed weather runs on; None passes the frame through."""
        if weather == CLEAR:
            return COMMON if self.clear == "common" else None
        return weather

    def _response(self, index: int, restored: dict[tuple[int, int], np.ndarray],
                  routed: list[list[str] | None], errors: dict[int, str]) -> Any:
        pb_utils = self.pb_utils
        if index in errors:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[index]))
        chosen = routed[index]
        frames = np.stack([restored[(index, position)] for position in range(len(chosen))])
        return pb_utils.InferenceResponse([
            from_numpy(pb_utils, RESTORED, frames),
            from_numpy(pb_utils, WEATHER, one_hot(chosen, self.classes)),
        ])
