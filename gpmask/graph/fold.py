"""Compact graphs folded into plain weights: what every consumer but ONNX Runtime reads.

A compact graph rebuilds its weights from the common values and each weather's
differences with standard ONNX operators (:mod:`gpmask.bundle.compact`). ONNX Runtime
evaluates that rebuild once when it creates a session; OpenVINO, TensorRT's parser and
ONNX Runtime's quantizer want plain weight initializers instead, so they are given
the graph with its rebuild folded (:func:`fold_rebuild`), which is exactly the dense
graph: the rebuild moves values and never computes any.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from gpmask.bundle.compact import folded_nodes, rebuild_inputs, rebuild_nodes
from gpmask.errors import GpmaskError
from gpmask.graph.session import cpu_session


def fold_rebuild(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (weights in memory) with its rebuild evaluated into plain initializers.

    onnx-graphsurgeon's constant folding (what Polygraphy's ``FoldConstants`` runs; it
    evaluates with ONNX Runtime and leaves Q/DQ alone) computes the weights; they
    replace the rebuild and its inputs, and the rest of ``model`` (nodes, names,
    inputs, outputs, metadata) is kept as it is, so a folded compact graph is the dense
    graph. A graph without a rebuild comes back as a copy.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    flags = folded_nodes(model)
    if not any(flags):
        return folded
    import onnx_graphsurgeon as gs

    kept = [node for node, flag in zip(model.graph.node, flags, strict=True) if not flag]
    read = {name for node in kept for name in node.input}
    read |= {output.name for output in model.graph.output}
    wanted = [name for node, flag in zip(model.graph.node, flags, strict=True) if flag
              for name in node.output if name in read]
    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=False, error_ok=False)
    tensors = graph.tensors()
    values = []
    for name in wanted:
        if not isinstance(tensors.get(name), gs.Constant):
            raise GpmaskError(f"constant folding did not evaluate {name!r}")
        values.append(numpy_helper.from_array(np.asarray(tensors[name].values), name))
    dropped = rebuild_inputs(model)
    initializers = [t for t in folded.graph.initializer if t.name not in dropped]
    del folded.graph.initializer[:]
    folded.graph.initializer.extend(initializers + values)
    del folded.graph.node[:]
    folded.graph.node.extend(kept)
    return folded


def load_dense(graph: str | os.PathLike) -> onnx.ModelProto:
    """The graph file ``graph`` with its weights as plain initializers, in memory."""
    return fold_rebuild(onnx.load(str(graph)))


def check_folded(original: str | os.PathLike, folded: onnx.ModelProto,
                 sample_shape: tuple[int, ...]) -> None:
    """Refuse ``folded`` unless it gives, element for element, the output of the graph
    file ``original`` on a random input of ``sample_shape`` (NCHW), on ONNX Runtime."""
    sessions = [cpu_session(original), cpu_session(folded)]
    spec = sessions[0].get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    sample = np.random.default_rng(0).random(sample_shape).astype(dtype)
    compact, plain = (session.run(None, {spec.name: sample})[0] for session in sessions)
    if compact.shape != plain.shape or not np.array_equal(compact, plain):
        raise GpmaskError(f"{Path(original).name}: the folded graph's output differs from the "
                          f"compact graph's")


@contextlib.contextmanager
def saved_graph(model: onnx.ModelProto, name: str) -> Iterator[Path]:
    """``model`` written to a temporary folder as ``name`` with its weights beside it in
    ``name.data`` (for readers that take a path), deleted when the block ends."""
    with tempfile.TemporaryDirectory(prefix="gpmask-graph-") as folder:
        path = Path(folder) / name
        onnx.save(model, str(path), save_as_external_data=True, location=f"{name}.data")
        yield path


@contextlib.contextmanager
def dense_graph_file(
    graph: str | os.PathLike,
    transform: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
    check_shape: tuple[int, ...] | None = None,
) -> Iterator[Path]:
    """A path to ``graph`` with plain weights, and ``transform`` applied if given.

    ``graph`` itself when it has no rebuild and ``transform`` leaves it as it is;
    otherwise the folded (and transformed) graph in a temporary folder, deleted when
    the block ends. With ``check_shape``, the folded graph is first checked against
    ``graph`` (:func:`check_folded`).
    """
    graph = Path(graph)
    model = onnx.load(str(graph))
    changed = bool(rebuild_nodes(model))
    if changed:
        model = fold_rebuild(model)
        if rebuild_nodes(model):
            raise GpmaskError(f"{graph.name}: constant folding left rebuild nodes behind")
        if check_shape is not None:
            check_folded(graph, model, check_shape)
    if transform is not None:
        transformed = transform(model)
        changed = changed or transformed.graph != model.graph
        model = transformed
    if not changed:
        yield graph
        return
    with saved_graph(model, graph.name) as path:
        yield path
