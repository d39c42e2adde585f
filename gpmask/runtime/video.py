"""Frame sources for the video loop, through OpenCV, and the side-by-side view.

A source delivers each frame as it was stored: a video or camera gives ``uint8`` BGR
``HxWx3`` arrays (as OpenCV decodes them); an image gives its own layout (gray, BGR
or BGRA) and bit depth (8 or 16), with its file name, so that an image output can be
written in the same format (:mod:`gpmask.runtime.sinks`). :func:`to_bgr8` is the one
conversion to what the router, the side-by-side view and video files take.

What OpenCV's readers let through is checked here rather than restored as if fine:
a video whose container promises more frames than can be decoded (truncated), a JPEG
image or frame cut short (:mod:`gpmask.runtime.images`), and, in Motion-JPEG videos
(what gpmask writes to ``.avi`` and ``.mkv``), frames that change size, which OpenCV's
FFmpeg reader would silently rescale to the first frame's size: such a video is read
frame by frame as the JPEG images it holds. In other codecs a change of size is
invisible after OpenCV's decoding.
"""

from __future__ import annotations

import contextlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gpmask.data.images import IMAGE_SUFFIXES, decode_pixels, image_files, is_image, read_pixels
from gpmask.errors import GpmaskError

#: Frame rate given to frames that carry none (image folders, cameras reporting 0).
DEFAULT_FPS = 25.0
#: Camera indices OpenCV takes (a C int).
_MAX_CAMERA = 2**31 - 1


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its position in the stream, its time, its pixels, and for an
    image input the file name it came from (an image output keeps it)."""

    index: int
    time_s: float
    pixels: np.ndarray
    name: str | None = None


def to_bgr8(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` as uint8 HxWx3 BGR: gray and BGRA converted, 16 bits rounded to 8."""
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2BGR)
    return pixels


def _check_layout(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` if it is gray, BGR or BGRA; anything else refused."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)):
        return image
    raise GpmaskError(f"{name}: unsupported pixel format, shape {image.shape}")


class FrameSource(ABC):
    """Iterates :class:`Frame` objects. Known when it is opened: ``fps``,
    ``expected_frames`` (or None), the frames' ``size`` (height, width) and ``dtype``
    (or None where they are not), whether frames come from image files (``images``), and
    whether the stream is ``live`` (a camera or pipeline: it ends when stopped, so Ctrl-C
    ends it whole). Subclasses implement :meth:`frames` and may hold a capture to release."""

    name: str
    fps: float = DEFAULT_FPS
    expected_frames: int | None = None
    size: tuple[int, int] | None = None
    dtype: np.dtype | None = None
    images: bool = False
    live: bool = False

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The frames in order; raises :class:`GpmaskError` when the input fails."""

    def close(self) -> None:  # noqa: B027 - sources that hold nothing need not override it
        """Release what the source holds."""


class ImageFolderSource(FrameSource):
    """Image files in sorted file-name order (a folder's, or one file), at
    :data:`DEFAULT_FPS`. The first image is read when the source opens, so its size and
    bit depth are known before any frame is restored."""

    images = True

    def __init__(self, paths: list[Path], name: str, fps: float = DEFAULT_FPS) -> None:
        self.name = name
        self.fps = fps
        self.paths = paths
        self.expected_frames = len(paths)
        self._first = _check_layout(read_pixels(paths[0]), str(paths[0]))
        self.size = self._first.shape[:2]
        self.dtype = self._first.dtype

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            image = self._first if index == 0 else _check_layout(read_pixels(path), str(path))
            yield Frame(index, index / self.fps, image, path.name)


class CaptureSource(FrameSource):
    """A video file, a camera or a GStreamer pipeline, read with ``cv2.VideoCapture``.

    A file whose container promises more frames than can be decoded is reported as
    truncated once the decodable frames have been delivered. A Motion-JPEG file is read
    as its JPEG images (``CAP_PROP_FORMAT`` -1) when its first one decodes that way,
    so that a frame cut short or of another size is refused rather than filled in or
    rescaled.
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, capture: cv2.VideoCapture, name: str, is_file: bool,
                 reopen: str | None = None) -> None:
        self.capture = capture
        self.name = name
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 and np.isfinite(fps) else DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if is_file else 0
        self.expected_frames = count if count > 0 else None
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (height, width) if height > 0 and width > 0 else None
        self.is_file = is_file
        self.live = not is_file
        self.damaged = False
        self.raw = reopen is not None and _fourcc(capture) == "MJPG" and self._try_raw(reopen)

    def _try_raw(self, path: str) -> bool:
        """Switch to reading the file's JPEG images if the first one decodes as such."""
        raw = cv2.VideoCapture(path)
        if not raw.set(cv2.CAP_PROP_FORMAT, -1):
            raw.release()
            return False
        ok, packet = raw.read()
        image = cv2.imdecode(packet, cv2.IMREAD_COLOR) if ok and packet is not None else None
        raw.release()
        if image is None:
            return False
        self.capture.release()
        self.capture = cv2.VideoCapture(path)
        self.capture.set(cv2.CAP_PROP_FORMAT, -1)
        self.size = image.shape[:2]
        return True

    def _read(self, index: int) -> np.ndarray | None:
        """The next frame; None at the end of the stream or at a frame that cannot be
        decoded (:meth:`frames` tells the two apart by the container's frame count)."""
        ok, image = self.capture.read()
        if not ok or image is None:
            return None
        if not self.raw:
            return image
        try:
            pixels = to_bgr8(decode_pixels(image.tobytes(), self.name, jpeg=True))
        except GpmaskError:
            self.damaged = True
            return None
        if pixels.shape[:2] != self.size:
            raise GpmaskError(
                f"{self.name}: frame {index} is {pixels.shape[1]}x{pixels.shape[0]}, the "
                f"frames before it {self.size[1]}x{self.size[0]}; gpmask restores a stream "
                f"of one size: split the video where the size changes")
        return pixels

    def frames(self) -> Iterator[Frame]:
        index = 0
        while (image := self._read(index)) is not None:
            yield Frame(index, index / self.fps, _check_layout(image, self.name))
            index += 1
        if index == 0:
            raise GpmaskError(f"{self.name}: no frames could be decoded")
        if self.is_file and self.expected_frames and index < self.expected_frames:
            raise GpmaskError(
                f"{self.name}: truncated or damaged video: decoded {index} of the "
                f"{self.expected_frames} frames its container lists"
            )
        if self.damaged:
            raise GpmaskError(f"{self.name}: truncated or damaged video: frame {index} "
                              f"cannot be decoded")

    def close(self) -> None:
        self.capture.release()


def _fourcc(capture: cv2.VideoCapture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    return code.to_bytes(4, "little").decode("ascii", errors="replace")


def open_source(spec: str) -> FrameSource:
    """The frame source ``spec`` names: a folder of images, an image file, a video file, a
    camera index, or a GStreamer pipeline (any string containing ``!``, opened with
    ``CAP_GSTREAMER``)."""
    if not spec.strip():
        raise GpmaskError("-i '': name a video file, an image, a folder of images or a "
                          "camera index")
    if re.fullmatch(r"\d+", spec):
        if int(spec) > _MAX_CAMERA:
            raise GpmaskError(f"camera {spec}: no such camera (camera indices go up to "
                              f"{_MAX_CAMERA})")
        with _opencv_errors_only():
            capture = cv2.VideoCapture(int(spec))
        if not capture.isOpened():
            raise GpmaskError(f"camera {spec}: cannot be opened (no such camera or it is busy)")
        return CaptureSource(capture, f"camera {spec}", is_file=False)
    if "!" in spec:
        if not _has_gstreamer():
            raise GpmaskError(
                "this OpenCV was built without GStreamer, so a pipeline input cannot be "
                "opened; install an OpenCV built with GStreamer (JetPack's is)"
            )
        with _opencv_errors_only():
            capture = cv2.VideoCapture(spec, cv2.CAP_GSTREAMER)
        if not capture.isOpened():
            raise GpmaskError(f"GStreamer pipeline cannot be opened: {spec}")
        return CaptureSource(capture, "GStreamer pipeline", is_file=False)
    path = Path(spec)
    if path.is_dir():
        paths = image_files(path)
        if not paths:
            raise GpmaskError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return ImageFolderSource(paths, str(path))
    if not path.exists():
        raise GpmaskError(f"{spec}: no such file or folder")
    if path.stat().st_size == 0:
        raise GpmaskError(f"{spec}: empty file")
    if is_image(path):
        return ImageFolderSource([path], spec)
    with _opencv_errors_only():
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise GpmaskError(f"{spec}: not a video OpenCV can read (unknown format or damaged)")
    return CaptureSource(capture, spec, is_file=True, reopen=str(path))


@contextlib.contextmanager
def _opencv_errors_only() -> Iterator[None]:
    """Keep OpenCV's warnings (each backend it tries says why it could not open the
    input) off the terminal while an input is opened: a failure is reported as one
    gpmask error line instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return re.search(r"GStreamer:\s*YES", info) is not None


def side_by_side(
    original: np.ndarray, restored: np.ndarray, left: str = "input", right: str = "restored"
) -> np.ndarray:
    """Input and restored frame next to each other (input left), each half captioned.

    A viewer of the side-by-side video must be able to tell the halves apart without
    reading the documentation, so each half gets its caption (``left``, ``right``)
    drawn into a band along its top edge; the rest of both frames is unchanged.
    """
    halves = [np.array(original, copy=True), np.array(restored, copy=True)]
    for half, text in zip(halves, (left, right), strict=True):
        _caption(half, text)
    return np.hstack(halves)


def _caption(frame: np.ndarray, text: str) -> None:
    """Write ``text`` in white on a darkened band along the top of ``frame`` (in place).

    The font is scaled down until the text fits the frame's width; the band darkens
    the picture instead of hiding it, so the caption stays readable on snow.
    """
    height, width = frame.shape[:2]
    font, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1
    scale = max(0.3, min(0.6, height / 400))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    if text_w > width - 4:
        scale *= (width - 4) / text_w
        (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    band = min(height, text_h + baseline + 4)
    frame[:band] = (frame[:band] * 0.35).astype(frame.dtype)
    cv2.putText(frame, text, (2, band - baseline - 2), font, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


def read_video(path: str | os.PathLike) -> list[np.ndarray]:
    """Every frame of a video file (BGR), for reports and tests; refuses what cannot be read."""
    source = open_source(str(path))
    try:
        return [frame.pixels for frame in source.frames()]
    finally:
        source.close()
