"""Frame conversion: layouts, value ranges, reflect padding and cropping (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from gpmask.errors import GpmaskError
from gpmask.runtime.frame_batch import (
    FrameFormat,
    batch_to_frames,
    frames_to_batch,
    pad_reflect,
    padded_size,
)

RNG = np.random.default_rng(0)


def _uint8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(("size", "multiple", "expected"), [
    ((7, 9), 4, (8, 12)), ((8, 12), 4, (8, 12)), ((1, 1), 4, (4, 4)), ((721, 1283), 4, (724, 1284)),
])
def test_padded_size_is_the_next_multiple(size, multiple, expected):
    assert padded_size(*size, multiple) == expected


def test_pad_reflect_mirrors_bottom_and_right_edges():
    image = np.arange(3 * 5, dtype=np.float32).reshape(1, 1, 3, 5)
    padded = pad_reflect(image, 4)
    assert padded.shape == (1, 1, 4, 8)
    np.testing.assert_array_equal(padded[..., :3, :5], image)
    np.testing.assert_array_equal(padded[0, 0, 3, :5], image[0, 0, 1])  # row 3 mirrors row 1
    np.testing.assert_array_equal(padded[0, 0, :3, 5:], image[0, 0, :, [3, 2, 1]].T)
    assert pad_reflect(padded, 4) is padded  # already a multiple: no copy


def test_rgb_uint8_round_trip_is_exact():
    frame = _uint8(5, 7, 3)
    batch, fmt = frames_to_batch([frame], bgr=False, multiple=4)
    assert batch.shape == (1, 3, 8, 8) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, :5, :7], frame.transpose(2, 0, 1) / 255, atol=1e-7)
    (back,) = batch_to_frames(batch, fmt, [frame])
    np.testing.assert_array_equal(back, frame)


def test_bgr_frames_are_reversed_into_rgb_and_back():
    frame = _uint8(4, 4, 3)
    batch, fmt = frames_to_batch([frame], bgr=True, multiple=4)
    np.testing.assert_allclose(batch[0], frame[:, :, ::-1].transpose(2, 0, 1) / 255, atol=1e-7)
    (back,) = batch_to_frames(batch, fmt, [frame])
    np.testing.assert_array_equal(back, frame)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1)])
def test_gray_is_replicated_in_and_luminance_out(shape):
    frame = _uint8(*shape)
    batch, fmt = frames_to_batch([frame], bgr=False, multiple=4)
    for channel in range(3):
        np.testing.assert_allclose(batch[0, channel, :6, :5], frame.reshape(6, 5) / 255, atol=1e-7)
    colour = RNG.random((1, 3, 8, 8), dtype=np.float32)
    (gray,) = batch_to_frames(colour, fmt, [frame])
    assert gray.shape == shape and gray.dtype == np.uint8
    luminance = np.tensordot([0.299, 0.587, 0.114], colour[0, :, :6, :5], axes=1) * 255
    assert np.abs(gray.reshape(6, 5).astype(float) - luminance).max() <= 0.51


def test_alpha_is_passed_through_untouched():
    frame = _uint8(3, 6, 4)
    batch, fmt = frames_to_batch([frame], bgr=False, multiple=4)
    assert batch.shape == (1, 3, 4, 8)
    restored = np.zeros_like(batch)
    (out,) = batch_to_frames(restored, fmt, [frame])
    assert out.shape == (3, 6, 4)
    np.testing.assert_array_equal(out[:, :, 3], frame[:, :, 3])
    np.testing.assert_array_equal(out[:, :, :3], 0)


def test_float_frames_stay_float_and_are_clipped():
    frame = RNG.random((5, 5, 3), dtype=np.float32)
    batch, fmt = frames_to_batch([frame], bgr=False, multiple=4)
    np.testing.assert_array_equal(batch[0, :, :5, :5], frame.transpose(2, 0, 1))
    (out,) = batch_to_frames(batch * 2 - 0.5, fmt, [frame])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(frame * 2 - 0.5, 0, 1), atol=1e-7)


def test_uint8_output_rounds_to_nearest_level():
    fmt = FrameFormat.of(_uint8(1, 1, 3))
    restored = np.array([0.1 / 255, 0.6 / 255, 254.4 / 255], dtype=np.float32).reshape(1, 1, 3)
    np.testing.assert_array_equal(fmt.from_rgb(restored, None).ravel(), [0, 1, 254])


@pytest.mark.parametrize(("frame", "message"), [
    (np.zeros((4, 4, 3), np.int16), "dtype int16 is not supported"),
    (np.zeros((4, 4, 2), np.uint8), r"shape \(4, 4, 2\) is not an image"),
    (np.zeros((4,), np.uint8), r"shape \(4,\) is not an image"),
    (np.zeros((0, 4, 3), np.uint8), "is empty"),
    ([[0, 1]], "must be a numpy array"),
])
def test_unsupported_frames_are_refused(frame, message):
    with pytest.raises(GpmaskError, match=message):
        FrameFormat.of(frame)


def test_a_batch_needs_one_shape_and_type():
    with pytest.raises(GpmaskError, match=r"batch frame 1 is \(4, 5, 3\) uint8 but frame 0"):
        frames_to_batch([_uint8(4, 4, 3), _uint8(4, 5, 3)], bgr=False, multiple=4)
    with pytest.raises(GpmaskError, match="empty batch"):
        frames_to_batch([], bgr=False, multiple=4)
