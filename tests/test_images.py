"""Images in, images out: `gpmask run` on an image gives an image of the same format, bit
depth and layout; a folder gives a folder of the same names; a JPEG cut short is refused.

Every output is read back by OpenCV and by Pillow (a second, independent reader, which
also names the file's format), and compared with the Restorer's own result on the input.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gpmask.cli import main
from gpmask.data.images import jpeg_is_complete
from gpmask.fileio import MARKER
from gpmask.runtime import Restorer
from tests.conftest import make_checkpoint
from tests.media import smooth_image

HEIGHT, WIDTH = 30, 46  # not multiples of the network's 4
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    path = tmp_path_factory.mktemp("images") / "bundle"
    export_bundle(make_checkpoint(), path, verify=False, progress=False)
    return path


@pytest.fixture(scope="module")
def restorer(bundle: Path) -> Restorer:
    return Restorer(bundle, backend="onnxruntime-cpu")


def _image(layout: str, depth: int) -> np.ndarray:
    """A test image: ``bgr``, ``gray`` or ``bgra``, 8 or 16 bits per sample."""
    bgr = smooth_image(HEIGHT, WIDTH).astype(np.uint16)
    pixels = bgr * 257 + np.arange(WIDTH, dtype=np.uint16)[None, :, None] if depth == 16 else bgr
    pixels = pixels.astype(np.uint16 if depth == 16 else np.uint8)
    if layout == "gray":
        return pixels[:, :, 1].copy()
    if layout == "bgra":
        alpha = np.linspace(0, np.iinfo(pixels.dtype).max, WIDTH).astype(pixels.dtype)
        return np.dstack([pixels, np.broadcast_to(alpha, (HEIGHT, WIDTH))])
    return pixels


def _run(bundle: Path, source: Path, output: Path, capsys) -> None:
    code = main(["run", str(bundle), "-i", str(source), "-o", str(output), "--weather", "rain",
                 "--backend", "onnxruntime-cpu", "--no-progress"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize(("suffix", "layout", "depth"), [
    (".png", "bgr", 8), (".png", "gray", 8), (".png", "bgra", 8), (".png", "bgr", 16),
    (".png", "gray", 16), (".jpg", "bgr", 8), (".jpg", "gray", 8), (".tif", "bgr", 8),
    (".tif", "bgr", 16), (".tif", "bgra", 16),
])
def test_an_image_gives_an_image_of_its_format_depth_and_layout(
    bundle: Path, restorer: Restorer, tmp_path: Path, capsys, suffix: str, layout: str,
    depth: int
) -> None:
    source, output = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    assert cv2.imwrite(str(source), _image(layout, depth))
    _run(bundle, source, output, capsys)
    given = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)  # what the run read (JPEG: decoded)
    written = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert written.shape == given.shape and written.dtype == given.dtype
    assert Image.open(output).format == FORMATS[suffix]
    assert Image.open(output).size == (WIDTH, HEIGHT)
    expected = restorer.restore(given, "rain", bgr=True)
    if suffix == ".jpg":  # a lossy format: the restored image, within JPEG's rounding
        assert cv2.PSNR(written, expected) > 30
    else:
        np.testing.assert_array_equal(written, expected)
    if layout == "bgra":
        np.testing.assert_array_equal(written[:, :, 3], given[:, :, 3])  # alpha kept
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, output.name])


def test_sixteen_bits_are_restored_at_sixteen_bits(restorer: Restorer) -> None:
    """Not 8 bits widened: the result is the float restoration rounded to 1/65535."""
    deep = _image("bgr", 16)
    restored = restorer.restore(deep, "rain", bgr=True)
    as_float = restorer.restore(deep.astype(np.float32) / 65535, "rain", bgr=True)
    # to the float's rounding (1/65535 is not exact in float32)
    difference = restored.astype(int) - np.rint(as_float * 65535).astype(int)
    assert np.abs(difference).max() <= 1
    assert len(np.unique(restored % 257)) > 1  # levels between the 8-bit ones are used


def test_a_folder_gives_a_folder_of_the_same_names_and_formats(
    bundle: Path, restorer: Restorer, tmp_path: Path, capsys
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    images = {"a.png": _image("bgr", 8), "b.jpg": _image("bgr", 8),
              "c.tif": _image("gray", 16), "d.PNG": _image("bgra", 8)}
    for name, pixels in images.items():
        assert cv2.imwrite(str(source / name), pixels)
    (source / "notes.txt").write_text("not an image: ignored")
    output = tmp_path / "out"
    _run(bundle, source, output, capsys)
    assert sorted(p.name for p in output.iterdir()) == sorted([*images, MARKER])
    for name in images:
        given = cv2.imread(str(source / name), cv2.IMREAD_UNCHANGED)
        written = cv2.imread(str(output / name), cv2.IMREAD_UNCHANGED)
        assert written.shape == given.shape and written.dtype == given.dtype, name
        assert Image.open(output / name).format == FORMATS[Path(name).suffix.lower()]
        expected = restorer.restore(given, "rain", bgr=True)
        if name.endswith(".jpg"):
            assert cv2.PSNR(written, expected) > 30
        else:
            np.testing.assert_array_equal(written, expected)
    # a second run replaces the first run's folder (its marker lists what it wrote)
    _run(bundle, source, output, capsys)
    assert sorted(p.name for p in output.iterdir()) == sorted([*images, MARKER])


def _jpeg_with_thumbnail(image: np.ndarray) -> bytes:
    """A JPEG with an EXIF-like APP1 segment holding a whole small JPEG (its own end
    marker included), as cameras write them."""
    main_jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    thumbnail = cv2.imencode(".jpg", cv2.resize(image, (8, 6)))[1].tobytes()
    payload = b"Exif\0\0" + thumbnail
    segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return main_jpeg[:2] + segment + main_jpeg[2:]


def test_a_jpeg_is_whole_only_up_to_its_end_marker() -> None:
    image = smooth_image(64, 96)
    whole = _jpeg_with_thumbnail(image)
    assert cv2.imdecode(np.frombuffer(whole, np.uint8), cv2.IMREAD_COLOR).shape == (64, 96, 3)
    assert jpeg_is_complete(whole)
    assert jpeg_is_complete(whole + b"\0" * 32 + b"appended by a camera")
    for cut in range(len(whole) - 1, 1, -max(1, len(whole) // 97)):
        assert not jpeg_is_complete(whole[:cut]), cut
    progressive = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert jpeg_is_complete(progressive) and not jpeg_is_complete(progressive[:-40])
    restarts = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])[1].tobytes()
    assert jpeg_is_complete(restarts) and not jpeg_is_complete(restarts[:-40])
    assert not jpeg_is_complete(b"") and not jpeg_is_complete(b"\x89PNG\r\n")
