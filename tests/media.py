"""Media files OpenCV cannot write, made by hand for tests: a Motion-JPEG AVI whose frames
change size (a camera that renegotiated, two clips joined), and a JPEG cut short."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, body: bytes) -> bytes:
    return _chunk(b"LIST", kind + body)


def write_mjpg_avi(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    """An AVI 1.0 file of ``frames`` as JPEG images (each at its own size); the headers
    give the first frame's size, as a stream that changes size later does."""
    jpegs = [cv2.imencode(".jpg", frame)[1].tobytes() for frame in frames]
    height, width = frames[0].shape[:2]
    main_header = struct.pack("<14I", 1_000_000 // fps, 0, 0, 0x10, len(frames), 0, 1, 0,
                              width, height, 0, 0, 0, 0)
    stream_header = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, 1, fps, 0,
                                len(frames), 0, 0xFFFFFFFF, 0, 0, 0, width, height)
    stream_format = struct.pack("<IiiHH4sIiiII", 40, width, height, 1, 24, b"MJPG",
                                width * height * 3, 0, 0, 0, 0)
    headers = _list(b"hdrl", _chunk(b"avih", main_header) + _list(
        b"strl", _chunk(b"strh", stream_header) + _chunk(b"strf", stream_format)))
    movie, index, offset = b"", b"", 4
    for jpeg in jpegs:
        chunk = _chunk(b"00dc", jpeg)
        index += struct.pack("<4sIII", b"00dc", 0x10, offset, len(jpeg))
        movie += chunk
        offset += len(chunk)
    body = b"AVI " + headers + _list(b"movi", movie) + _chunk(b"idx1", index)
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A BGR image of gradients: a JPEG of it cut short still decodes (gray below the cut)."""
    y, x = np.mgrid[0:height, 0:width]
    shift = seed * 17
    return np.stack([(x + shift) % 256, (y * 2) % 256, (x + y) % 256], axis=2).astype(np.uint8)


def truncated_jpeg(path: Path, image: np.ndarray, fraction: float = 0.6) -> None:
    """``image`` as a JPEG file cut after ``fraction`` of its bytes."""
    data = cv2.imencode(".jpg", image)[1].tobytes()
    path.write_bytes(data[: int(len(data) * fraction)])
