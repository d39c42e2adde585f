"""Options several verbs share, defined once so that one meaning has one name and one help.

Sizes use :mod:`gpmask.sizes` (``HxW`` everywhere); these are the rest: turning the
progress bar off, and the runtime backend.
"""

from __future__ import annotations

import argparse


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (they go to stderr; the default shows them)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (default: shown on stderr)")


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend``, its choices read from the runtime's own list."""
    from gpmask.runtime.backends import BACKENDS

    parser.add_argument("--backend", default="auto", choices=BACKENDS, metavar="NAME",
                        help=f"{', '.join(BACKENDS)} (default auto: TensorRT engines built "
                             "for this GPU, else ONNX Runtime with CUDA, else OpenVINO on the "
                             "CPU, else ONNX Runtime on the CPU)")
