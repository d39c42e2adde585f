"""The one small interface every runtime backend implements.

As in Polygraphy, a backend is split in two: loading (the constructor) prepares every
weather of a bundle once — sessions or engines, device buffers, shared weights — and
:meth:`Backend.run` restores one batch with the weather it is told. Keeping all the
expensive work in loading is what makes switching weather between two frames free:
``run`` only chooses another prepared session or context.

Every backend checks each file it reads against the manifest's sha256
(:meth:`gpmask.bundle.Bundle.verify`) before reading it, so a damaged or tampered
bundle is refused by name instead of producing wrong frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bundle import COMMON, Bundle
from gpmask.errors import GpmaskError


class Backend(ABC):
    """A loaded bundle, ready to restore any of its weathers.

    Attributes:
        name: what the backend is, for logs and ``Restorer.backend_name``
            (e.g. ``onnxruntime-cpu``, ``tensorrt``).
        weathers: the weathers prepared, in bundle order, ``common`` last when the
            bundle has a common graph (engine) at the loaded precision.
    """

    name: str
    weathers: list[str]

    @abstractmethod
    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        """Restore an NCHW float32 RGB batch in [0, 1] with ``weather``'s network.

        ``batch`` height and width are multiples of the bundle's ``size_multiple``.
        Returns an NCHW float32 array of the same shape. The array may be a buffer
        the backend reuses: it is valid until the next call.
        """

    @abstractmethod
    def close(self) -> None:
        """Release sessions, engines and buffers now rather than at garbage collection."""


def prepared_weathers(bundle: Bundle, section: str, precision: str) -> list[str]:
    """Weathers with an entry in ``section`` (``graphs`` or ``engines``) at ``precision``.

    The bundle's weathers come first, in order, then ``common`` when it has one. A
    weather lacking the precision is left out here and refused with the precisions it
    has when asked for (see :meth:`gpmask.bundle.Bundle.graph_path`).
    """
    entries = bundle.manifest.get(section, {})
    weathers = [w for w in (*bundle.weathers, COMMON) if precision in entries.get(w, {})]
    if not weathers:
        kind = "TensorRT engines" if section == "engines" else "graphs"
        raise GpmaskError(f"bundle {bundle.root} has no {precision} {kind}")
    return weathers


def verify_files(bundle: Bundle, paths: Iterable[Path]) -> None:
    """Check files a backend is about to read against the manifest's sha256.

    A file the manifest does not record has no hash to check against and is refused
    as well: a backend reads nothing unverified.
    """
    relative = sorted({Path(path).resolve().relative_to(bundle.root.resolve()).as_posix()
                       for path in paths})
    recorded = {record["path"] for record in bundle.files()}
    for path in relative:
        if path not in recorded:
            raise GpmaskError(f"bundle file {path} is not recorded in {bundle.root}/manifest.json")
    bundle.verify(relative)


def external_data_files(graphs: Mapping[str, Any], paths: Mapping[str, Path]) -> set[Path]:
    """The external-data files the graphs read (each graph's locations are beside it).

    ``graphs`` maps a weather to its ``onnx.ModelProto`` loaded without external data,
    ``paths`` the weather to the graph's file.
    """
    import onnx

    return {
        paths[weather].parent / entry.value
        for weather, graph in graphs.items()
        for tensor in graph.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
