"""Options several verbs share, defined once so that one meaning has one name and one help.

Sizes use :mod:`gpmask.sizes` (``HxW`` everywhere); these are the rest: paths, turning
the progress bar off, and the runtime's backend and precision, whose choices are read
from the backend registry and the precision definitions.
"""

from __future__ import annotations

import argparse


def path_argument(text: str) -> str:
    """argparse ``type`` of every file or folder argument: an empty one (``-o ""``, an unset
    shell variable) is refused, where Python would read it as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or folder")
    return text


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bar (they go to stderr; the default shows them)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (default: shown on stderr)")


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend``, its choices read from the runtime's registry."""
    from gpmask.runtime.backends import BACKENDS, REGISTRY

    order = ", then ".join(spec.name for spec in REGISTRY)
    parser.add_argument("--backend", default="auto", choices=BACKENDS, metavar="NAME",
                        help=f"{', '.join(BACKENDS)} (default auto: the first that runs here "
                             f"and can run the bundle: {order})")


def add_precision(parser: argparse.ArgumentParser) -> None:
    """``--precision``, its choices read from the precision definitions."""
    from gpmask.precision import AUTO, NAMES, PRECISIONS

    kinds = "; ".join(f"{p.name}: {p.summary}" for p in PRECISIONS)
    parser.add_argument("--precision", default=AUTO, choices=(AUTO, *NAMES), metavar="NAME",
                        help=f"{AUTO}, {', '.join(NAMES)} ({kinds}) (default {AUTO}: the "
                             "fastest this bundle, backend and machine offer within the "
                             "bundle's quality budget; the choice is printed)")
