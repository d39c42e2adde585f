"""Frame sources and sinks for the video loop, all through OpenCV.

Frames flow through the loop as OpenCV delivers them: ``uint8`` arrays of shape
``HxWx3`` in BGR order. Sources turn gray or four-channel images into that shape and
refuse what cannot be (16-bit or float pixels), so nothing downstream guesses.

Sinks write to a temporary file or folder beside the target and move it into place,
so an interrupted run leaves either nothing or a complete, playable file (or folder of
images) holding the frames done so far (:meth:`FrameSink.close` runs on every exit).
Both check when they are opened that the temporary output can be created, so a target
that cannot be written (``/proc/x.mp4``) is refused before any frame is restored.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gpmask.errors import GpmaskError
from gpmask.fileio import (
    check_file_output,
    check_replaceable,
    install_folder,
    new_folder_beside,
    temporary_file_beside,
)

#: Image file suffixes a folder source reads (OpenCV decodes all of them).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Video container suffix -> FourCC that OpenCV's FFmpeg backend writes and reads back here.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG", ".mov": "mp4v"}
#: Frame rate given to frames that carry none (image folders, cameras reporting 0).
DEFAULT_FPS = 25.0
#: The names :class:`ImageFolderSink` gives its images (``frame_000000.png``, ...).
FRAME_NAME = re.compile(r"frame_\d{6}\.png")


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its position in the stream, its time, its BGR pixels."""

    index: int
    time_s: float
    pixels: np.ndarray


def to_bgr(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as uint8 HxWx3 BGR; gray and BGRA are converted, other formats refused."""
    if image.dtype != np.uint8:
        raise GpmaskError(
            f"{name}: unsupported pixel format {image.dtype} (8-bit images and videos only)"
        )
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise GpmaskError(f"{name}: unsupported pixel format, shape {image.shape}")


class FrameSource(ABC):
    """Iterates :class:`Frame` objects; ``fps`` and ``expected_frames`` (or None) are known up
    front. Subclasses implement :meth:`frames` and may hold an OpenCV capture to release."""

    name: str
    fps: float = DEFAULT_FPS
    expected_frames: int | None = None

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The frames in order; raises :class:`GpmaskError` when the input fails."""

    def close(self) -> None:  # noqa: B027 - sources that hold nothing need not override it
        """Release what the source holds."""


class ImageFolderSource(FrameSource):
    """The images of a folder in sorted file-name order, at :data:`DEFAULT_FPS` (or ``fps``)."""

    def __init__(self, folder: Path, fps: float = DEFAULT_FPS) -> None:
        self.name = str(folder)
        self.fps = fps
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise GpmaskError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        self.expected_frames = len(self.paths)

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise GpmaskError(f"{path}: unreadable image")
            yield Frame(index, index / self.fps, to_bgr(image, str(path)))


class CaptureSource(FrameSource):
    """A video file, a camera or a GStreamer pipeline, read with ``cv2.VideoCapture``.

    A file whose container promises more frames than can be decoded is reported as
    truncated once the decodable frames have been delivered, so the loop finishes
    (and finalises) the output it has before failing.
    """

    def __init__(self, capture: cv2.VideoCapture, name: str, is_file: bool) -> None:
        self.capture = capture
        self.name = name
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and fps > 0 and np.isfinite(fps) else DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if is_file else 0
        self.expected_frames = count if count > 0 else None
        self.is_file = is_file

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                break
            yield Frame(index, index / self.fps, to_bgr(image, self.name))
            index += 1
        if index == 0:
            raise GpmaskError(f"{self.name}: no frames could be decoded")
        if self.is_file and self.expected_frames and index < self.expected_frames:
            raise GpmaskError(
                f"{self.name}: truncated or damaged video: decoded {index} of the "
                f"{self.expected_frames} frames its container lists"
            )

    def close(self) -> None:
        self.capture.release()


def open_source(spec: str) -> FrameSource:
    """The frame source ``spec`` names: a folder, a video file, a camera index, or a
    GStreamer pipeline (any string containing ``!``, opened with ``CAP_GSTREAMER``)."""
    if re.fullmatch(r"\d+", spec):
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
        return ImageFolderSource(path)
    if not path.exists():
        raise GpmaskError(f"{spec}: no such file or folder")
    if path.stat().st_size == 0:
        raise GpmaskError(f"{spec}: empty file")
    with _opencv_errors_only():
        capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise GpmaskError(f"{spec}: not a video OpenCV can read (unknown format or damaged)")
    return CaptureSource(capture, spec, is_file=True)


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


class FrameSink(ABC):
    """Receives BGR frames in order; :meth:`close` finalises what was written."""

    path: Path
    frames_written: int = 0

    @abstractmethod
    def write(self, pixels: np.ndarray) -> None:
        """Append one frame."""

    @abstractmethod
    def close(self) -> None:
        """Finalise the output; safe to call more than once."""


class VideoFileSink(FrameSink):
    """A video file written by ``cv2.VideoWriter`` with the container's FourCC
    (:data:`VIDEO_CODECS`).

    The writer opens on the first frame (its size is known then) on a temporary file
    beside the target; :meth:`close` releases it, which finalises the container, and
    renames it onto the target. With no frame written, no file is left.
    """

    def __init__(self, path: Path, fps: float) -> None:
        suffix = path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise GpmaskError(
                f"{path}: unsupported video container {suffix or '(none)'}; use one of "
                f"{', '.join(VIDEO_CODECS)} or a folder for images"
            )
        check_file_output(path, path.suffix)
        self.path = path
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.temp: Path | None = None

    def write(self, pixels: np.ndarray) -> None:
        height, width = pixels.shape[:2]
        if self.writer is None:
            self.temp = temporary_file_beside(self.path, self.path.suffix)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, (width, height))
            self.size = (width, height)
            if not self.writer.isOpened():
                self.close()
                raise GpmaskError(f"{self.path}: OpenCV cannot open a video writer for it")
        if (width, height) != self.size:
            raise GpmaskError(
                f"{self.path}: frame {self.frames_written} is {width}x{height}, "
                f"the video is {self.size[0]}x{self.size[1]}"
            )
        self.writer.write(pixels)
        self.frames_written += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.temp is not None and self.temp.exists():
            if self.frames_written:
                os.replace(self.temp, self.path)
            else:
                self.temp.unlink()
        self.temp = None


def is_frame_folder(folder: Path) -> bool:
    """Whether ``folder`` holds only images named as :class:`ImageFolderSink` names them,
    i.e. an earlier run's output, which a new run may replace."""
    return all(FRAME_NAME.fullmatch(p.name) and p.is_file() for p in folder.iterdir())


class ImageFolderSink(FrameSink):
    """One PNG image per frame, ``frame_000000.png`` onwards, in a new folder.

    The images go into a temporary folder beside the target, moved into place by
    :meth:`close`, so the folder never mixes two runs' frames. An existing target is
    replaced only when it is empty or holds nothing but an earlier run's frames; a
    folder of anything else is refused and left as it is.
    """

    def __init__(self, folder: Path) -> None:
        check_replaceable(folder, True, is_frame_folder, "an earlier run's frame folder")
        shutil.rmtree(new_folder_beside(folder))  # refuses what cannot be written
        self.path = folder
        self.temp: Path | None = None

    def write(self, pixels: np.ndarray) -> None:
        ok, encoded = cv2.imencode(".png", pixels)
        if not ok:
            raise GpmaskError(f"{self.path}: cannot encode frame {self.frames_written}")
        if self.temp is None:
            self.temp = new_folder_beside(self.path)
        (self.temp / f"frame_{self.frames_written:06d}.png").write_bytes(encoded.tobytes())
        self.frames_written += 1

    def close(self) -> None:
        if self.temp is not None and self.temp.exists():
            if self.frames_written:
                install_folder(self.temp, self.path)
            else:
                shutil.rmtree(self.temp)
        self.temp = None


def open_sink(spec: str, fps: float) -> FrameSink:
    """A video file sink for a known video suffix, else an image folder sink."""
    path = Path(spec)
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoFileSink(path, fps)
    if path.suffix:
        raise GpmaskError(
            f"{spec}: unsupported output {path.suffix}; use a video file "
            f"({', '.join(VIDEO_CODECS)}) or a folder for images"
        )
    return ImageFolderSink(path)


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
