"""One exception type for every user-facing failure, and where library failures become it.

The command line turns a :class:`GpmaskError` into a single ``gpmask: error: ...``
line and a non-zero exit; anything else is a bug and keeps its traceback. A library
gpmask drives (ONNX Runtime, OpenVINO, TensorRT, Polygraphy) reports a bad graph, a
shape it refuses or memory it lacks with exceptions of its own; :func:`reported_as`
turns those into a :class:`GpmaskError` that says what gpmask was doing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GpmaskError(Exception):
    """Bad input or an environment that cannot do what was asked; the message says which."""


@contextlib.contextmanager
def reported_as(action: str, types: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Turn an exception of ``types`` raised inside the block into one-line
    ``GpmaskError("<action>: <its message>")``; anything else passes unchanged."""
    try:
        yield
    except GpmaskError:
        raise
    except types as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise GpmaskError(f"{action}: {detail}") from exc


def tensorrt_error_types() -> tuple[type[BaseException], ...]:
    """What Polygraphy and TensorRT's bindings raise when an operation fails (a failed
    build, a CUDA error, a refused shape), as opposed to a gpmask bug."""
    from polygraphy.exception import PolygraphyException

    return (PolygraphyException, RuntimeError)


def tensorrt_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """:func:`reported_as` for Polygraphy's and TensorRT's failures."""
    return reported_as(action, tensorrt_error_types())
