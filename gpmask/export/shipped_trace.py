"""Traced graph structures shipped with the package: exporting their architecture skips torch.onnx.

Tracing the demo network with the ``torch.export``-based exporter takes seconds, about
half of ``gpmask demo``'s time (``benchmarks/bench_export.py``), and gives the same graph
every time: the structure depends on the architecture (and the exporter), not on the
weights. The package therefore ships that structure for the shipped checkpoint's
architecture, ``assets/<arch>.trace.onnx``: the traced graph with its parameter
initializers emptied (names, shapes and types kept), and in its metadata the architecture,
the parameter shapes it was traced with and the state-dict entries the graph never reads.
Filled with a checkpoint's common values it is what
:func:`gpmask.export.trace.trace_graph` returns, for any checkpoint of that architecture
(the shipped demo, or one a user trained from the same preset).

It is only used for a dynamic-shape export, when the architecture, its arguments and
every parameter shape match. The export still verifies each graph against PyTorch, and
``tests/test_shipped_trace.py`` compares the shipped file with a fresh trace. After a
change to the architecture or the exporter, rewrite it with::

    python -c "from gpmask.export.shipped_trace import write_trace; write_trace('demo')"
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from gpmask.bundle import COMMON
from gpmask.export.specialize import set_initializers
from gpmask.export.trace import TracedGraph, trace_graph
from gpmask.fileio import atomic_path
from gpmask.masking.checkpoint import MaskedCheckpoint

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: Metadata key of the shipped trace's description (JSON).
METADATA_KEY = "gpmask.trace"


def trace_path(arch: str) -> Path:
    """Where the package keeps the trace of architecture ``arch``."""
    return _ASSETS / f"{arch.replace(':', '.')}.trace.onnx"


def _signature(checkpoint: MaskedCheckpoint, weights: Mapping[str, np.ndarray]) -> dict:
    """What a trace must match to stand for ``checkpoint``'s network (as JSON reads back)."""
    return json.loads(json.dumps({
        "arch": checkpoint.arch, "arch_kwargs": checkpoint.arch_kwargs,
        "parameters": {name: list(value.shape) for name, value in sorted(weights.items())},
    }))


def strip_parameters(
    model: onnx.ModelProto, checkpoint: MaskedCheckpoint, unused: frozenset[str]
) -> onnx.ModelProto:
    """A copy of a traced ``model`` without the data of its parameter initializers, with
    the description :func:`load_trace` checks in its metadata."""
    weights = checkpoint.bake_numpy(COMMON)
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    emptied = []
    for tensor in stripped.graph.initializer:
        if tensor.name in weights:
            tensor.ClearField("raw_data")
            tensor.ClearField("float_data")
            emptied.append(tensor.name)
    description = {**_signature(checkpoint, weights), "emptied": emptied,
                   "unused": sorted(unused)}
    onnx.helper.set_model_props(stripped, {METADATA_KEY: json.dumps(description)})
    return stripped


def load_trace(
    checkpoint: MaskedCheckpoint, weights: Mapping[str, np.ndarray], path: Path | None = None
) -> TracedGraph | None:
    """The shipped trace of ``checkpoint``'s architecture filled with ``weights`` (its
    common values); None if there is none or it does not match the checkpoint's
    architecture and parameter shapes."""
    path = path or trace_path(checkpoint.arch)
    if not path.is_file():
        return None
    model = onnx.load(str(path))
    props = {prop.key: prop.value for prop in model.metadata_props}
    description = json.loads(props.get(METADATA_KEY, "{}"))
    signature = _signature(checkpoint, weights)
    if any(description.get(key) != value for key, value in signature.items()):
        return None
    set_initializers(model, set(description["emptied"]), weights)
    del model.metadata_props[:]
    return TracedGraph(model, frozenset(description["unused"]))


def write_trace(checkpoint: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Trace ``checkpoint``'s network (dynamic shapes, optimized) and write its structure to
    ``path`` (default: the package's file for its architecture)."""
    from gpmask.model import size_multiple

    loaded = MaskedCheckpoint.load(checkpoint)
    model = loaded.build_model(COMMON)
    traced = trace_graph(model, None, size_multiple(model), optimize=True)
    target = Path(path) if path else trace_path(loaded.arch)
    with atomic_path(target, suffix=".onnx") as tmp:
        onnx.save(strip_parameters(traced.model, loaded, traced.unused), str(tmp))
    return target
