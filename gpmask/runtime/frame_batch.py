"""Frames in, network tensors out, and back: colour layout, value range, padding, cropping.

The bundle's graphs take an NCHW float32 RGB batch in [0, 1] whose height and width are
multiples of the manifest's ``size_multiple``; users hand over whatever their camera,
video library or image files give (uint8 or uint16, or float32/float64 in [0, 1]; RGB or
BGR, gray, with or without alpha, any size). This module converts between the two in
numpy alone, so that every backend sees the same input and every user gets back a
frame shaped and typed like the one they gave: gray stays gray (the restored image's
luminance), alpha is passed through untouched, and the padding the network needed is
cropped away.

Padding reflects the image at its bottom and right edges: a mirrored border has the
statistics of the image itself, so the network does not see an artificial edge there
(zero padding darkens the last rows and columns of a restoration network's output).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gpmask.errors import GpmaskError

#: Integer pixel types a frame may have, and their white level: 8-bit (0-255) and 16-bit
#: (0-65535, from PNG or TIFF files); a restored frame comes back at the same depth.
INTEGER_LEVELS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
#: Pixel types a frame may have: those, or float32/float64 already in [0, 1].
FRAME_DTYPES = (*INTEGER_LEVELS, np.dtype(np.float32), np.dtype(np.float64))
#: How far outside [0, 1] a float frame's values may stray (rounding in a user's own
#: conversion); anything further is a frame in another range (0-255 as floats, say),
#: which the network would turn into a white frame without complaint.
FLOAT_RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FrameFormat:
    """How one user frame is laid out, so that its restoration can be laid out the same.

    Attributes:
        shape: the frame's shape, ``(H, W)`` or ``(H, W, C)`` with C in 1, 3, 4.
        dtype: ``uint8`` (0-255), ``uint16`` (0-65535), ``float32`` or ``float64`` (0-1).
        bgr: colour channels are in BGR(A) order (OpenCV's), not RGB(A).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    bgr: bool = False

    @classmethod
    def of(cls, frame: np.ndarray, bgr: bool = False) -> FrameFormat:
        """The format of ``frame``; anything the runtime cannot restore is refused."""
        if not isinstance(frame, np.ndarray):
            raise GpmaskError(f"a frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype not in FRAME_DTYPES:
            raise GpmaskError(
                f"frame dtype {frame.dtype} is not supported; give uint8 (0-255) "
                f"or float32/float64 (0-1) pixels, or uint16 (0-65535)"
            )
        channels_ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))
        if not channels_ok:
            raise GpmaskError(
                f"frame shape {frame.shape} is not an image; expected HxW (gray) or HxWxC "
                f"with C = 1 (gray), 3 (RGB/BGR) or 4 (RGBA/BGRA)"
            )
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise GpmaskError(f"frame shape {frame.shape} is empty")
        if frame.dtype not in INTEGER_LEVELS:
            _check_float_range(frame)
        return cls(tuple(frame.shape), frame.dtype, bgr)

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    @property
    def channels(self) -> int:
        """1 for gray (HxW or HxWx1), 3 for colour, 4 for colour with alpha."""
        return self.shape[2] if len(self.shape) == 3 else 1

    def to_rgb(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as an HxWx3 float32 RGB image in [0, 1] (the network's colour space)."""
        pixels = frame.reshape(self.height, self.width, self.channels)
        if self.channels == 1:
            colour = np.repeat(pixels, 3, axis=2)
        else:
            colour = pixels[:, :, :3]
            if self.bgr:
                colour = colour[:, :, ::-1]
        colour = colour.astype(np.float32)
        if self.dtype in INTEGER_LEVELS:
            colour *= np.float32(1 / INTEGER_LEVELS[self.dtype])
        return colour

    def from_rgb(self, rgb: np.ndarray, original: np.ndarray) -> np.ndarray:
        """A restored HxWx3 RGB float image laid out like ``original`` (this format's frame).

        Values are clipped to [0, 1] first; a gray frame gets the restored luminance
        (ITU-R BT.601 weights, as OpenCV computes it), an alpha channel is copied from
        ``original``.
        """
        rgb = np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)
        if self.channels == 1:
            pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None]
        else:
            pixels = rgb[:, :, ::-1] if self.bgr else rgb
        pixels = _to_dtype(pixels, self.dtype)
        if self.channels == 4:
            pixels = np.concatenate([pixels, original[:, :, 3:4]], axis=2)
        return np.ascontiguousarray(pixels.reshape(self.shape))


def _check_float_range(frame: np.ndarray) -> None:
    """Refuse a float frame with NaN/Inf or with values outside [0, 1]."""
    low, high = float(np.min(frame)), float(np.max(frame))  # NaN propagates into both
    if not (np.isfinite(low) and np.isfinite(high)):
        raise GpmaskError(f"{frame.dtype} frame has NaN or infinite values; float frames "
                          f"must hold finite values in [0, 1] (uint8 frames are accepted "
                          f"as they are)")
    if low < -FLOAT_RANGE_TOLERANCE or high > 1 + FLOAT_RANGE_TOLERANCE:
        raise GpmaskError(f"{frame.dtype} frame has values in [{low:g}, {high:g}]; float "
                          f"frames must be in [0, 1] (divide 0-255 values by 255, or pass "
                          f"uint8 frames, which are accepted as they are)")


def _to_dtype(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Float pixels in [0, 1] as ``dtype`` (an integer type rounds to the nearest level)."""
    if dtype in INTEGER_LEVELS:
        return np.rint(pixels * INTEGER_LEVELS[dtype]).astype(dtype)
    return pixels.astype(dtype, copy=False)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest height and width at least as large that are multiples of ``multiple``."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def pad_reflect(nchw: np.ndarray, multiple: int) -> np.ndarray:
    """``nchw`` reflect-padded at the bottom and right to a multiple of ``multiple``.

    Returns ``nchw`` itself when no padding is needed (no copy).
    """
    height, width = nchw.shape[2:]
    target_h, target_w = padded_size(height, width, multiple)
    if (target_h, target_w) == (height, width):
        return nchw
    pads = ((0, 0), (0, 0), (0, target_h - height), (0, target_w - width))
    return np.pad(nchw, pads, mode="reflect")


def frames_to_batch(
    frames: Sequence[np.ndarray], bgr: bool, multiple: int
) -> tuple[np.ndarray, FrameFormat]:
    """Frames of one shape and type as one padded NCHW float32 RGB batch, and their format.

    A batch runs as one network call, so its frames must agree in shape and type;
    mixed frames are refused (restore them one at a time).
    """
    if len(frames) == 0:
        raise GpmaskError("an empty batch has nothing to restore")
    fmt = FrameFormat.of(frames[0], bgr)
    for index, frame in enumerate(frames[1:], start=1):
        other = FrameFormat.of(frame, bgr)
        if other != fmt:
            raise GpmaskError(
                f"batch frame {index} is {other.shape} {other.dtype} but frame 0 is "
                f"{fmt.shape} {fmt.dtype}; a batch needs frames of one shape and type"
            )
    batch = np.stack([fmt.to_rgb(frame) for frame in frames]).transpose(0, 3, 1, 2)
    return pad_reflect(np.ascontiguousarray(batch), multiple), fmt


def batch_to_frames(
    restored: np.ndarray, fmt: FrameFormat, originals: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """A restored padded NCHW RGB batch cropped and laid out like ``originals``."""
    cropped = restored[:, :, : fmt.height, : fmt.width].transpose(0, 2, 3, 1)
    return [fmt.from_rgb(rgb, original) for rgb, original in zip(cropped, originals, strict=True)]
