"""Image files in and out: their formats, their bit depth, and whether a file is whole.

Every image gpmask reads (training and evaluation data, calibration frames, the
frames ``gpmask run`` restores) and writes goes through here. OpenCV reads and writes
the images; two things it lets through are checked:

- a JPEG cut short (a copy interrupted, a camera's card pulled) decodes without an
  error into a picture whose lower part is gray, which would be restored as if whole:
  a JPEG is read only when its markers run up to the end-of-image marker;
- a 16-bit image written to a format of 8-bit samples (JPEG, WebP, BMP) is cut to its
  high byte with no more than a warning on the terminal: such an output is refused,
  and every other image is written at the bit depth it was read with.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from gpmask.errors import GpmaskError

#: Image file suffixes gpmask reads (OpenCV decodes all of them).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Formats whose files hold 16-bit samples as well as 8-bit ones.
SIXTEEN_BIT_SUFFIXES = (".png", ".tif", ".tiff", ".ppm", ".pgm")
#: Pixel types an image may have: 8 or 16 bits per sample.
IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
_JPEG_SUFFIXES = (".jpg", ".jpeg")
#: Inside entropy-coded data 0xFF is followed by 0x00 (a stuffed byte) or a restart
#: marker; any other byte after it is the next marker.
_SCAN_END = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


def is_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image suffix gpmask reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a regular file with an image suffix, and not hidden: a hidden
    ``._name.jpg`` is the resource fork a Mac leaves beside each file it copies, not an
    image, and would stop a folder's run half way."""
    return not path.name.startswith(".") and is_image(path) and path.is_file()


def image_files(folder: Path) -> list[Path]:
    """The images of ``folder`` (not its subfolders), sorted by file name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def jpeg_is_complete(data: bytes) -> bool:
    """Whether the JPEG ``data`` runs from its start marker to its end-of-image marker.

    The segments are walked by their lengths, so a thumbnail inside the EXIF segment
    (which has an end marker of its own) is skipped, and bytes after the end marker
    (some cameras append data) do not matter.
    """
    if data[:2] != b"\xff\xd8":
        return False
    position = 2
    while position + 2 <= len(data):
        if data[position] != 0xFF:
            return False
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
        elif marker == 0xD9:  # end of image
            return True
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            position += 2
        else:
            if position + 4 > len(data):
                return False
            position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
            if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
                end = _SCAN_END.search(data, position)
                if end is None:
                    return False
                position = end.start()
    return False


def decode_pixels(data: bytes, name: str, jpeg: bool) -> np.ndarray:
    """The pixels of one encoded image as OpenCV decodes them (8 or 16 bits, gray, BGR or
    BGRA); a damaged, cut or unsupported image is a :class:`GpmaskError` naming it."""
    if not data:
        raise GpmaskError(f"{name}: cannot read image (an empty file)")
    if jpeg and not jpeg_is_complete(data):
        raise GpmaskError(f"{name}: cannot read image: truncated or damaged JPEG (it ends "
                          f"before its end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise GpmaskError(f"{name}: cannot read image (damaged, cut short, or not an image "
                          f"OpenCV decodes)")
    if image.dtype not in IMAGE_DTYPES:
        raise GpmaskError(f"{name}: cannot read image: unsupported pixel format "
                          f"{image.dtype} (8- and 16-bit images only)")
    return image


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """The pixels of the image file ``path`` as stored (see :func:`decode_pixels`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GpmaskError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    return decode_pixels(data, str(path), path.suffix.lower() in _JPEG_SUFFIXES)


def check_depth(suffix: str, dtype: np.dtype, target: str | os.PathLike) -> None:
    """Refuse to write ``dtype`` pixels to a ``suffix`` file that would lose bits."""
    if np.dtype(dtype) == np.uint16 and suffix.lower() not in SIXTEEN_BIT_SUFFIXES:
        raise GpmaskError(
            f"{target}: the input has 16-bit pixels and {suffix} stores 8 bits; write "
            f"{', '.join(SIXTEEN_BIT_SUFFIXES)} to keep all 16 (nothing was written)")


def encode_image(pixels: np.ndarray, suffix: str, target: str | os.PathLike) -> bytes:
    """``pixels`` encoded in the format of ``suffix``, at their own bit depth."""
    check_depth(suffix, pixels.dtype, target)
    ok, encoded = cv2.imencode(suffix.lower(), pixels)
    if not ok:
        raise GpmaskError(f"{target}: OpenCV cannot encode a {suffix} image")
    return encoded.tobytes()
