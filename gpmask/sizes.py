"""Frame sizes as gpmask writes them everywhere: ``HxW``, height by width, in pixels.

Every option that takes a size (``export --size``, ``build --min-size``, ``calibrate
--eval-size``, ``demo --size``, ``bench --sizes``, ...) reads it with this module, so
there is one syntax and one error message for a bad one. Imports nothing heavy: the
command line parses sizes before any verb loads torch or onnx.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from gpmask.errors import GpmaskError

Size = tuple[int, int]

_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def parse_size(text: str) -> Size:
    """``"720x1280"`` -> ``(720, 1280)``; anything but two positive integers is refused."""
    match = _SIZE.fullmatch(text)
    if not match or not all(int(side) > 0 for side in match.groups()):
        raise GpmaskError(f"size {text!r} is not HxW (height x width in pixels, two positive "
                          f"integers, e.g. 720x1280)")
    return int(match.group(1)), int(match.group(2))


def parse_sizes(text: str) -> list[Size]:
    """``"256x256,720x1280"`` -> a list of sizes, in order; an empty list is refused."""
    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise GpmaskError(f"sizes {text!r}: expected a comma-separated list of HxW sizes")
    return sizes


def format_size(size: Size) -> str:
    """``(720, 1280)`` -> ``"720x1280"``."""
    return f"{size[0]}x{size[1]}"


def check_multiple(size: Size, multiple: int, what: str) -> Size:
    """``size`` if both sides are multiples of ``multiple``, else a :class:`GpmaskError`."""
    if size[0] % multiple or size[1] % multiple:
        raise GpmaskError(f"{what} {format_size(size)}: height and width must be multiples of "
                          f"{multiple} for this network")
    return size


def argument(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` as an argparse ``type``: its refusal becomes argparse's own error (which
    the command line prints as one ``gpmask: error:`` line naming the option)."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except GpmaskError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = parse.__name__
    return convert


#: argparse types of one size and of a comma-separated list of sizes.
size_argument = argument(parse_size)
sizes_argument = argument(parse_sizes)
