"""One external-data weight file shared by several ONNX graphs, each distinct tensor once.

ONNX lets an initializer keep its bytes outside the graph file: the TensorProto then
names a ``location`` (a file beside the graph), an ``offset`` and a ``length``. Graphs
that describe the same network for different weathers share most of their tensors
bit for bit, so instead of letting :func:`onnx.save` write one data file per graph,
this module hashes every initializer's bytes and writes each distinct tensor once;
every graph that holds that tensor points at the same (location, offset, length).

The result is an ordinary ONNX layout that every stock consumer reads
(``onnx.load(..., load_external_data=True)``, onnx.checker, ONNX Runtime, Polygraphy).
Nothing here knows about weathers, precisions or the bundle: export uses it for the
fp32 ``weights.bin``, calibration for ``weights.fp16.bin``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import numpy_helper

from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path

#: Offsets are multiples of this, so a memory-mapped tensor starts on an aligned address.
ALIGNMENT = 64


@dataclass(frozen=True)
class SharedWeights:
    """What :func:`write_shared_weights` wrote.

    Attributes:
        path: the weight file.
        bytes_stored: its size (distinct tensors plus alignment padding).
        bytes_referenced: the sum, over every graph, of the bytes its initializers
            reference (what separate data files per graph would hold).
        tensors_stored: distinct tensors written.
        tensors_referenced: initializers over all graphs.
    """

    path: Path
    bytes_stored: int
    bytes_referenced: int
    tensors_stored: int
    tensors_referenced: int


def _tensor_bytes(tensor: onnx.TensorProto, graph: str) -> bytes:
    """The little-endian bytes of an in-memory initializer (raw_data or typed fields)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        raise GpmaskError(
            f"{graph}: initializer {tensor.name!r} already lives in external data; "
            f"load the graph with load_external_data=True first"
        )
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.to_array(tensor).tobytes()


def _point_at(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Empty ``tensor``'s in-graph data and make it reference the weight file."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                  "uint64_data", "string_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


#: Operators whose inputs after the first are sizes or scales, whatever their type.
_SIZE_OPERANDS = {"Resize": slice(1, None), "Upsample": slice(1, None)}
#: Operators that pass their first input on, changed in type at most: ONNX Runtime's fp16
#: converter reads a Resize's scales through a Cast to float32 it inserts.
_PASS_THROUGH = frozenset({"Cast", "Identity"})


def shape_operands(model: onnx.ModelProto) -> set[str]:
    """Initializers that are shape operands rather than weights: every int64 tensor (the
    pads of a Pad, the bounds of a Slice, a Reshape's shape) and the float scales of a
    Resize (``F.interpolate(scale_factor=2)``), also where a Cast stands between them."""
    names = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT64}
    producers = {output: node for node in model.graph.node for output in node.output}
    pending = [name for node in model.graph.node if node.op_type in _SIZE_OPERANDS
               for name in node.input[_SIZE_OPERANDS[node.op_type]] if name]
    while pending:
        name = pending.pop()
        names.add(name)
        producer = producers.get(name)
        if producer is not None and producer.op_type in _PASS_THROUGH:
            pending.append(producer.input[0])
    return names


def write_shared_weights(
    models: Mapping[str, onnx.ModelProto],
    folder: str | os.PathLike,
    weights_name: str,
) -> SharedWeights:
    """Move the initializers of ``models`` into ``folder/weights_name``, each distinct one once.

    Shape operands stay in the graphs (:func:`shape_operands`): ONNX's and ONNX
    Runtime's shape inference must read them when a graph is loaded or checked, and
    cannot read them from external data.

    Args:
        models: name (used in messages only) -> graph whose initializers are in memory.
            The graphs are changed in place: afterwards their initializers reference the
            weight file, and they should be saved into ``folder`` with :func:`onnx.save`
            (no ``save_as_external_data``: the data is already outside).
        folder: where the graphs will be saved; the weight file is written there.
        weights_name: file name of the weight file, relative to the graphs.

    The weight file is written atomically; the graphs are changed only once it is in place.
    """
    path = Path(folder) / weights_name
    offsets: dict[bytes, tuple[int, int]] = {}
    pending: list[tuple[onnx.TensorProto, bytes]] = []
    referenced = count = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        for graph_name, model in models.items():
            inline = shape_operands(model)
            for tensor in model.graph.initializer:
                if tensor.name in inline:
                    continue
                data = _tensor_bytes(tensor, graph_name)
                key = hashlib.sha256(data).digest()
                if key not in offsets:
                    offset = handle.tell()
                    handle.write(data)
                    handle.write(b"\0" * (-handle.tell() % ALIGNMENT))
                    offsets[key] = (offset, len(data))
                pending.append((tensor, key))
                referenced += len(data)
                count += 1
        handle.flush()
        stored = handle.tell()
    for tensor, key in pending:
        _point_at(tensor, weights_name, *offsets[key])
    return SharedWeights(path, stored, referenced, len(offsets), count)
