"""Where restored frames go: a video file, a folder of images, or one image.

Every sink writes to a temporary file or folder beside its target and decides what
becomes of it in :meth:`FrameSink.close`: when the run ended whole (the input's end, or
Ctrl-C on a live camera) it replaces the target; when it stopped short (a failure,
Ctrl-C or SIGTERM on a file input) the target is left as it was and the frames done are
kept under a name that says so (:func:`gpmask.fileio.partial_name`), or nothing is kept
when that name is taken. A folder output holds gpmask's marker
(:data:`gpmask.fileio.MARKER`), so a later run replaces it only when it holds nothing
but what a run wrote.

What a sink cannot store is refused when it is opened, from what the source knows
(:func:`open_sink`), and again at each frame: video containers need an even width and
height (OpenCV's writers would silently crop an odd one) and 8-bit frames; an image
format is kept, and 16-bit pixels are written only where the format holds them.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from pathlib import Path

import cv2
import numpy as np

from gpmask.data.images import IMAGE_SUFFIXES, check_depth, encode_image, is_image
from gpmask.errors import GpmaskError
from gpmask.fileio import (
    check_file_output,
    check_replaceable,
    install_folder,
    keep_partial,
    marked_by,
    new_folder_beside,
    temporary_file_beside,
    write_marker,
)
from gpmask.runtime.video import FrameSource, to_bgr8

#: Video container suffix -> FourCC that OpenCV's FFmpeg backend writes and reads back here.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "MJPG", ".mov": "mp4v"}
#: What the marker of a folder ``gpmask run`` wrote says.
RUN_OUTPUT = "gpmask run"
#: What such a folder is called in messages.
RUN_FOLDER = "an earlier run's frame folder"


class FrameSink(ABC):
    """Receives frames in order; :meth:`close` decides where they end up.

    Attributes:
        path: the output the user named.
        frames_written: frames received so far.
        kept: after :meth:`close`, where the frames are (``path``, a partial name), or
            None when nothing was kept.
    """

    path: Path
    frames_written: int = 0
    kept: Path | None = None

    @abstractmethod
    def write(self, pixels: np.ndarray, name: str | None = None) -> None:
        """Append one frame; ``name`` is the input image's file name, when it had one."""

    @abstractmethod
    def close(self, complete: bool = True) -> None:
        """Finalise the output: onto :attr:`path` when ``complete``, else as a partial
        output; safe to call more than once."""


class VideoFileSink(FrameSink):
    """A video file written by ``cv2.VideoWriter`` with the container's FourCC
    (:data:`VIDEO_CODECS`), opened on the first frame (its size is known then)."""

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

    def check_frames(self, size: tuple[int, int] | None, dtype: np.dtype | None) -> None:
        """Refuse frames of ``size`` (height, width) or ``dtype`` this container cannot
        hold, before any is restored."""
        if dtype is not None and np.dtype(dtype) == np.uint16:
            raise GpmaskError(
                f"{self.path}: the input has 16-bit pixels and videos store 8 bits; write "
                f"to a folder (PNG or TIFF images keep all 16)")
        if size is not None and (size[0] % 2 or size[1] % 2):
            raise GpmaskError(
                f"{self.path}: frames of {size[1]}x{size[0]} cannot be stored in a "
                f"{self.path.suffix} video, whose encoders need an even width and height "
                f"(OpenCV would crop them); write to a folder of images, or crop or pad "
                f"the input to an even size")

    def write(self, pixels: np.ndarray, name: str | None = None) -> None:
        self.check_frames(pixels.shape[:2], pixels.dtype)
        pixels = to_bgr8(pixels)
        height, width = pixels.shape[:2]
        if self.writer is None:
            self.temp = temporary_file_beside(self.path, self.path.suffix)
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.temp), fourcc, self.fps, (width, height))
            self.size = (width, height)
            if not self.writer.isOpened():
                self.close(complete=False)
                raise GpmaskError(f"{self.path}: OpenCV cannot open a video writer for it")
        if (width, height) != self.size:
            raise GpmaskError(
                f"{self.path}: frame {self.frames_written} is {width}x{height}, "
                f"the video is {self.size[0]}x{self.size[1]}"
            )
        self.writer.write(pixels)
        self.frames_written += 1

    def close(self, complete: bool = True) -> None:
        if self.writer is not None:
            self.writer.release()  # finalises the container
            self.writer = None
        self.kept = _finish(self.temp, self.path, complete, self.frames_written)
        self.temp = None


def _finish(temp: Path | None, target: Path, complete: bool, frames: int) -> Path | None:
    """Put a sink's temporary output where :meth:`FrameSink.close` says it goes; whatever
    interrupts that (Ctrl-C, SIGTERM) leaves no temporary output behind."""
    if temp is None or not temp.exists():
        return None
    try:
        return _place(temp, target, complete and frames > 0, frames)
    finally:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        elif temp.exists():
            temp.unlink()


def _place(temp: Path, target: Path, complete: bool, frames: int) -> Path | None:
    if not frames:
        return None  # nothing to keep; _finish removes the temporary output
    if complete:
        if temp.is_dir():
            install_folder(temp, target)
        else:
            os.replace(temp, target)
        return target
    return keep_partial(temp, target)


class ImageFolderSink(FrameSink):
    """One image per frame in a new folder: an input image's own name and format, else
    ``frame_000000.png`` onwards.

    The images go into a temporary folder beside the target with gpmask's marker listing
    them, moved into place by :meth:`close`, so the folder never mixes two runs' frames.
    An existing target is replaced only when it is empty or an earlier run's output that
    holds nothing else; a folder of anything else is refused and left as it is.
    """

    def __init__(self, folder: Path) -> None:
        if folder.name in ("", ".", ".."):
            raise GpmaskError(f"-o {folder}: name the output folder itself (restored/, say), "
                              f"not the current or parent folder")
        check_replaceable(folder, True, marked_by(RUN_OUTPUT), RUN_FOLDER)
        shutil.rmtree(new_folder_beside(folder))  # refuses what cannot be written
        self.path = folder
        self.temp: Path | None = None
        self.names: list[str] = []

    def write(self, pixels: np.ndarray, name: str | None = None) -> None:
        name = name or f"frame_{self.frames_written:06d}.png"
        encoded = encode_image(pixels, Path(name).suffix, self.path / name)
        if self.temp is None:
            self.temp = new_folder_beside(self.path)
        (self.temp / name).write_bytes(encoded)
        self.names.append(name)
        self.frames_written += 1

    def close(self, complete: bool = True) -> None:
        if self.temp is not None and self.temp.exists() and self.frames_written:
            write_marker(self.temp, RUN_OUTPUT, self.names)
        self.kept = _finish(self.temp, self.path, complete, self.frames_written)
        self.temp = None


class ImageFileSink(FrameSink):
    """The one restored frame of an image input, in the format its suffix names."""

    def __init__(self, path: Path) -> None:
        check_file_output(path, path.suffix)
        self.path = path
        self.temp: Path | None = None

    def write(self, pixels: np.ndarray, name: str | None = None) -> None:
        if self.frames_written:
            raise GpmaskError(f"{self.path}: an image output holds one frame and the input "
                              f"has more; write to a folder or a video")
        encoded = encode_image(pixels, self.path.suffix, self.path)
        self.temp = temporary_file_beside(self.path, self.path.suffix)
        self.temp.write_bytes(encoded)
        self.frames_written = 1

    def close(self, complete: bool = True) -> None:
        # one image is whole or nothing: no partial image is kept
        self.kept = _finish(self.temp, self.path, complete, self.frames_written if complete
                            else 0)
        self.temp = None


def open_sink(spec: str, source: FrameSource, side_by_side: bool = False) -> FrameSink:
    """The sink ``spec`` names for frames of ``source``: a video file for a video suffix,
    an image file for an image suffix (an image input only), else a folder of images.
    What the sink could not store is refused now, before any frame is restored."""
    if not spec.strip():
        raise GpmaskError("-o '': name a video file, an image file or a folder")
    path = Path(spec)
    suffix = path.suffix.lower()
    size = source.size
    if size is not None and side_by_side:
        size = (size[0], 2 * size[1])
    if suffix in VIDEO_CODECS:
        sink = VideoFileSink(path, source.fps)
        sink.check_frames(size, np.uint8 if side_by_side else source.dtype)
        return sink
    if is_image(path):
        if not (source.images and source.expected_frames == 1):
            raise GpmaskError(f"{spec}: an image output takes one image as input, and "
                              f"{source.name} is not one; write to a folder or a video")
        if source.dtype is not None and not side_by_side:
            check_depth(suffix, source.dtype, spec)
        return ImageFileSink(path)
    if suffix and not path.is_dir():
        raise GpmaskError(
            f"{spec}: unsupported output {path.suffix}; use a video file "
            f"({', '.join(VIDEO_CODECS)}), an image ({', '.join(IMAGE_SUFFIXES)}) or a "
            f"folder for images"
        )
    return ImageFolderSink(path)
