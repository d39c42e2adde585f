"""The one small interface every runtime backend implements, and the spec that registers it.

As in Polygraphy, a backend is split in two: loading (the constructor) prepares every
weather of a bundle once — sessions or engines, device buffers, shared weights — and
:meth:`Backend.run` restores one batch with the weather it is told. Keeping all the
expensive work in loading is what makes switching weather between two frames free:
``run`` only chooses another prepared session or context.

Each backend module declares a :class:`BackendSpec`: its name and device, why it cannot
run on this machine, why it cannot run a given bundle at a given precision, the
precisions it runs fastest first, and how to load it. The registry
(:mod:`gpmask.runtime.backends`) lists the specs in preference order; ``auto``, the
command line's choices and the benchmark's targets are all read from it.

Every backend checks each file it reads against the manifest's sha256
(:meth:`gpmask.bundle.Bundle.verify`) before reading it, so a damaged or tampered
bundle is refused by name instead of producing wrong frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bundle import Bundle
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
    #: What the backend's library raises when a graph, a shape or memory fails at run
    #: time (the Restorer reports those as one line naming backend, weather and frame).
    error_types: tuple[type[BaseException], ...] = (RuntimeError,)

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


def prepared_weathers(bundle: Bundle, section: str, precision: str,
                      weathers: Sequence[str] | None = None) -> list[str]:
    """The networks a backend loads: ``weathers`` (default every network of the bundle,
    its weathers in order, then ``common``), refused unless each has an entry in
    ``section`` (``graphs`` or ``engines``) at ``precision``.

    A backend loads every network or none: a bundle with some engines missing (a build
    interrupted half way) would otherwise refuse weathers in the middle of a video.
    """
    wanted = bundle.networks if weathers is None else list(weathers)
    for weather in wanted:
        bundle.check_weather(weather)
    present = bundle.engines(precision) if section == "engines" else bundle.graphs(precision)
    missing = [w for w in wanted if w not in present]
    if missing:
        raise GpmaskError(missing_reason(bundle, section, precision, missing))
    return wanted


def missing_reason(bundle: Bundle, section: str, precision: str, missing: list[str]) -> str:
    """Why a bundle lacking ``precision``'s graphs or engines for ``missing`` cannot run,
    with the command that makes them."""
    kind = "TensorRT engines" if section == "engines" else "graphs"
    verb = "build" if section == "engines" else "calibrate"
    which = "" if len(missing) == len(bundle.networks) else f" for {', '.join(missing)}"
    return (f"bundle {bundle.root} has no {precision} {kind}{which}; run gpmask {verb} "
            f"{bundle.root} --precision {precision}")


@dataclass(frozen=True)
class BackendSpec:
    """What the registry knows of one backend, without loading it or its library.

    Attributes:
        name: as ``--backend`` spells it.
        device: ``cpu`` or ``gpu``: where its arithmetic runs.
        precisions: the precisions it runs, fastest first (``--precision auto`` takes the
            first this bundle and machine offer).
        unavailable: ``(device index) ->`` why it cannot run on this machine (its
            library missing, no usable GPU), or None.
        refusal: ``(bundle, precision, device index) ->`` why it cannot run that bundle
            at that precision (graphs or engines missing, a CPU lacking the
            instructions), or None. Only asked once :attr:`unavailable` said None.
        load: ``(bundle, precision, device index) ->`` the loaded :class:`Backend`.
    """

    name: str
    device: str
    precisions: tuple[str, ...]
    unavailable: Callable[[int], str | None]
    refusal: Callable[[Bundle, str, int], str | None]
    load: Callable[[Bundle, str, int], Backend]


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
