"""Frame sources and sinks: what is written reads back with OpenCV; bad input is refused."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.errors import GpmaskError
from gpmask.runtime.sinks import ImageFolderSink, VideoFileSink, open_sink
from gpmask.runtime.video import open_source, side_by_side, to_bgr8


def _frames(count: int, height: int = 48, width: int = 64) -> list[np.ndarray]:
    """Smooth frames (gradients shifted per frame) that lossy codecs keep close."""
    y, x = np.mgrid[0:height, 0:width]
    return [
        np.stack([(x * 3 + i * 9) % 256, (y * 4 + i * 5) % 256, np.full_like(x, 40 * (i % 6))],
                 axis=2).astype(np.uint8)
        for i in range(count)
    ]


def _write_with_opencv(path: Path, frames: list[np.ndarray], fourcc: str = "MJPG") -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_video_sink_reads_back_with_opencv(tmp_path: Path, suffix: str) -> None:
    frames = _frames(12)
    path = tmp_path / f"out{suffix}"
    sink = VideoFileSink(path, fps=10)
    for frame in frames:
        sink.write(frame)
    sink.close()
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened()
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    decoded = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        decoded.append(image)
    assert len(decoded) == 12
    assert decoded[0].shape == (48, 64, 3)
    for original, back in zip(frames, decoded, strict=True):
        assert np.abs(original.astype(int) - back.astype(int)).mean() < 6
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_video_sink_without_frames_leaves_nothing(tmp_path: Path) -> None:
    sink = VideoFileSink(tmp_path / "out.avi", fps=10)
    sink.close()
    assert list(tmp_path.iterdir()) == []


def test_video_sink_refuses_a_frame_of_another_size(tmp_path: Path) -> None:
    sink = VideoFileSink(tmp_path / "out.avi", fps=10)
    sink.write(_frames(1)[0])
    with pytest.raises(GpmaskError, match="frame 1 is 32x16, the video is 64x48"):
        sink.write(np.zeros((16, 32, 3), np.uint8))
    sink.close()
    assert len(_read_all(tmp_path / "out.avi")) == 1


def _read_all(path: Path) -> list[np.ndarray]:
    source = open_source(str(path))
    try:
        return [f.pixels for f in source.frames()]
    finally:
        source.close()


def test_image_folder_round_trip_is_exact_and_sorted(tmp_path: Path) -> None:
    frames = _frames(5)
    _write_with_opencv(tmp_path / "in.avi", frames)
    sink = open_sink(str(tmp_path / "frames"), open_source(str(tmp_path / "in.avi")))
    assert isinstance(sink, ImageFolderSink)
    for frame in frames:
        sink.write(frame)
    sink.close()
    names = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(5)] + ["gpmask-output.json"]
    source = open_source(str(tmp_path / "frames"))
    read = list(source.frames())
    assert [f.index for f in read] == list(range(5))
    assert read[2].time_s == pytest.approx(2 / 25)
    for original, frame in zip(frames, read, strict=True):
        np.testing.assert_array_equal(frame.pixels, original)


def test_image_folder_keeps_gray_and_rgba_and_shows_them_as_bgr(tmp_path: Path) -> None:
    """An image keeps its layout on the way to the restorer (which restores gray as gray
    and passes alpha through); router, side-by-side view and videos see BGR."""
    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    bgra = np.dstack([_frames(1)[0], np.full((48, 64), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), gray)
    cv2.imwrite(str(tmp_path / "b.png"), bgra)
    frames = list(open_source(str(tmp_path)).frames())
    assert [f.name for f in frames] == ["a.png", "b.png"]
    np.testing.assert_array_equal(frames[0].pixels, gray)
    np.testing.assert_array_equal(frames[1].pixels, bgra)
    shown = [to_bgr8(f.pixels) for f in frames]
    assert [f.shape for f in shown] == [(48, 64, 3), (48, 64, 3)]
    np.testing.assert_array_equal(shown[0], np.repeat(gray[:, :, None], 3, axis=2))
    np.testing.assert_array_equal(shown[1], bgra[:, :, :3])


def test_image_folder_keeps_16_bit_pixels(tmp_path: Path) -> None:
    deep = np.random.default_rng(0).integers(0, 65536, (8, 8, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), deep)
    source = open_source(str(tmp_path))
    assert source.dtype == np.uint16 and source.size == (8, 8)
    np.testing.assert_array_equal(next(source.frames()).pixels, deep)
    np.testing.assert_array_equal(to_bgr8(deep), np.rint(deep / 257).astype(np.uint8))


def test_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(GpmaskError, match="no images"):
        open_source(str(tmp_path))


def test_missing_empty_and_unreadable_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(GpmaskError, match="no such file or folder"):
        open_source(str(tmp_path / "missing.mp4"))
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(GpmaskError, match="empty file"):
        open_source(str(tmp_path / "empty.mp4"))
    (tmp_path / "junk.avi").write_bytes(b"not a video at all " * 50)
    with pytest.raises(GpmaskError, match="not a video OpenCV can read"):
        open_source(str(tmp_path / "junk.avi"))


def test_video_with_zero_frames_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()
    with pytest.raises(GpmaskError, match="zero.avi"):
        source = open_source(str(path))
        list(source.frames())


def test_truncated_video_delivers_its_frames_then_fails(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(30)]
    whole = tmp_path / "whole.avi"
    _write_with_opencv(whole, noisy)
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    source = open_source(str(cut))
    delivered = []
    with pytest.raises(GpmaskError, match=r"truncated or damaged video: decoded \d+ of the 30"):
        for frame in source.frames():
            delivered.append(frame)
    source.close()
    assert 0 < len(delivered) < 30


def test_unsupported_outputs_are_refused(tmp_path: Path) -> None:
    _write_with_opencv(tmp_path / "in.avi", _frames(2))
    source = open_source(str(tmp_path / "in.avi"))
    with pytest.raises(GpmaskError, match="unsupported output .gif"):
        open_sink(str(tmp_path / "out.gif"), source)
    with pytest.raises(GpmaskError, match="folder .* does not exist"):
        open_sink(str(tmp_path / "missing" / "out.avi"), source)


def test_gstreamer_pipeline_without_gstreamer_says_so() -> None:
    if re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()):
        pytest.skip("this OpenCV has GStreamer; the refusal is for builds without it")
    with pytest.raises(GpmaskError, match="built without GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


def test_side_by_side_puts_input_left_and_captions_each_half() -> None:
    left, right = _frames(2)
    originals = [left.copy(), right.copy()]
    both = side_by_side(left, right, "input", "restored: snow, 3.0 ms")
    assert both.shape == (48, 128, 3)
    np.testing.assert_array_equal(left, originals[0])  # the inputs are not drawn on
    np.testing.assert_array_equal(right, originals[1])
    for half, original in ((both[:, :64], left), (both[:, 64:], right)):
        changed = np.flatnonzero((half != original).any(axis=(1, 2)))
        band = int(changed.max()) + 1
        # the caption is a band along the top; everything below it is the frame as it was
        np.testing.assert_array_equal(changed, np.arange(band))
        assert 6 <= band <= 24
        np.testing.assert_array_equal(half[band:], original[band:])
        # the band darkens the picture to 35 % (at most 89 here); the text is white on it
        darkened = (original[:band] * 0.35).astype(np.uint8)
        text = (half[:band] > darkened + 1).any(axis=2)
        assert text.mean() > 0.02
        assert darkened.max() < 90
        # readable: the text stands out from the band. How bright anti-aliased strokes of
        # a one-pixel font get depends on OpenCV's rasteriser (its SIMD path differs by
        # CPU), so the check is a contrast, not a pixel value.
        brightness = half[:band].max(axis=2)
        assert np.percentile(brightness[text], 90) >= brightness[~text].max() + 50
    other = side_by_side(left, right, "input", "restored: rain, 3.0 ms")
    assert not np.array_equal(other[:, 64:], both[:, 64:])
    np.testing.assert_array_equal(other[:, :64], both[:, :64])


def test_a_missing_camera_is_one_error_without_opencvs_warnings(capfd) -> None:
    """OpenCV warns on the terminal for every backend that fails to open a camera; the
    error gpmask raises says it all."""
    with pytest.raises(GpmaskError, match=r"^camera 57: cannot be opened"):
        open_source("57")
    assert capfd.readouterr().err == ""
