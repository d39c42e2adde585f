"""Compact graphs: each weather's graph stores only what differs from the common graph.

GGPM masks touch a fraction of the elements of almost every tensor, so a weather's
dense weights share almost no whole tensor with the common network, and a bundle of
dense graphs holds N + 1 copies of the network. In a compact set of graphs:

- the common graph's floating-point weights are concatenated, flattened, into one
  tensor per element type (``compact/float32/common``; everything the rebuild reads is
  named ``compact/...``, :data:`gpmask.bundle.COMPACT_PREFIX`), stored once in the shared
  weight file, and every graph of the set reads it (the same bytes; the weight store
  addresses tensors by content);
- each weather's graph adds where it differs from that tensor, as a bit-packed mask
  (uint8, :func:`numpy.packbits` order) or as the steps between changed positions
  (uint8 or uint16; a step longer than the type holds gets filler positions that
  rewrite the common value), whichever is smallest, and its values there, in order;
- each graph rebuilds its dense weights with standard ONNX operators on initializers
  only::

      mask:      packed -> BitwiseAnd [128 .. 1] -> Cast(bool) -> Reshape -> Slice = M
                 W = Where(M, Gather(values, CumSum(M) - 1), common)
      steps:     positions = CumSum(Cast(steps, int64)) - 1
                 W = ScatterElements(common, positions, values)
      common:    W = common
      then       Split(W, sizes) -> Reshape(shape) of each -> the weights, by name

So every graph is an ordinary ONNX model: onnx.checker passes, ONNX Runtime's
constant folding evaluates the rebuild once when a session is created (with graph
optimizations disabled it would run the rebuild on every run instead), and
:func:`gpmask.graph.fold.fold_rebuild` turns it back into plain initializers (what
TensorRT's parser, OpenVINO and ONNX Runtime's quantizer are given). The rebuild moves
values and never computes any, so the folded weights are bit-identical to the dense
ones.

Why one rebuild per graph, not one per tensor: ONNX Runtime folds node by node, at a
fixed cost each, and a per-tensor rebuild needs about ten nodes, which made creating a
session several times slower than for the dense graph; one rebuild needs a few nodes
plus one Reshape per tensor. Why steps before the mask when they are smaller (below
about 1/8 of the elements changed): the mask's CumSum, Gather and Where run over every
element of the network when a session is created, the steps' CumSum and
ScatterElements only over the changed ones (``benchmarks/bench_compact.py`` measures
the cold start of both layouts).
Every intermediate has a shape known before execution, which ONNX Runtime's folding
needs (it skips NonZero).

Where a weather differs is found element by element, comparing bits: the weather's
GGPM mask less any element whose specific value equals the common one. That works
unchanged on any precision's graphs made from dense graphs of one structure (fp16
weights, say). A graph's initializer joins the rebuild only where the common graph
has one of the same name, type and shape; others stay plain initializers.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gpmask.bundle.manifest import COMPACT_PREFIX
from gpmask.bundle.weight_store import shape_operands
from gpmask.errors import GpmaskError

#: Element types whose initializers are weights the rebuild covers. Shape operands (every
#: int64 tensor, and a Resize's float scales: :func:`shape_operands`) stay plain
#: initializers: shape inference reads them when a graph is loaded.
WEIGHT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                TensorProto.DOUBLE)
#: Ops constant folding leaves alone (ONNX Runtime keeps Q/DQ pairs for its int8 kernels;
#: onnx-graphsurgeon does not fold them either).
_NOT_FOLDED = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class CompactGroup:
    """How one graph stores the weights of one element type.

    Attributes:
        dtype: the element type's name (``float32``, ``float16``).
        encoding: ``common`` (the graph reads the common tensor as it is: the common
            graph, or a weather that does not differ), ``mask`` (bit-packed mask and
            values) or ``steps8`` / ``steps16`` (uint8 / uint16 steps between the
            changed positions, and values).
        tensors: weights rebuilt.
        elements: elements of the common tensor.
        differing: elements where this graph differs from it.
        stored_bytes: bytes the graph adds beside the common tensor (mask or steps,
            and values).
    """

    dtype: str
    encoding: str
    tensors: int
    elements: int
    differing: int
    stored_bytes: int


def _bits(array: np.ndarray) -> np.ndarray:
    """Elements as unsigned integers of the same width: compare bits, not values
    (-0.0 and 0.0 differ, a NaN equals itself)."""
    return array.reshape(-1).view(f"u{array.dtype.itemsize}")


@dataclass(frozen=True)
class _Layout:
    """The common graph's weights of one element type, in concatenation order."""

    dtype: np.dtype
    names: list[str]
    shapes: list[list[int]]
    common: np.ndarray  # flat concatenation

    @property
    def prefix(self) -> str:
        return f"{COMPACT_PREFIX}{self.dtype.name}"

    def matches(self, tensor: TensorProto) -> bool:
        index = self.index.get(tensor.name)
        return (index is not None and list(tensor.dims) == self.shapes[index]
                and helper.tensor_dtype_to_np_dtype(tensor.data_type) == self.dtype)

    @cached_property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}


def _layouts(common: onnx.ModelProto) -> list[_Layout]:
    groups: dict[int, list[TensorProto]] = {}
    operands = shape_operands(common)
    for tensor in common.graph.initializer:
        if tensor.data_type in WEIGHT_TYPES and tensor.name not in operands:
            groups.setdefault(tensor.data_type, []).append(tensor)
    layouts = []
    for data_type, tensors in groups.items():
        arrays = [numpy_helper.to_array(t).reshape(-1) for t in tensors]
        layouts.append(_Layout(helper.tensor_dtype_to_np_dtype(data_type),
                               [t.name for t in tensors], [list(t.dims) for t in tensors],
                               np.concatenate(arrays)))
    return layouts


def _steps(differ: np.ndarray, limit: int) -> np.ndarray:
    """Flat positions to write, as steps from the previous one (the first from -1), each at
    most ``limit``: a longer step gets filler positions in between, which rewrite the
    common value there (the same bits) and cost one entry each."""
    positions = np.flatnonzero(differ)
    previous = np.concatenate([[-1], positions[:-1]])
    fillers = (positions - previous - 1) // limit
    if fillers.any():
        starts = np.repeat(previous, fillers)
        rank = np.arange(int(fillers.sum())) - np.repeat(np.cumsum(fillers) - fillers, fillers)
        positions = np.sort(np.concatenate([positions, starts + limit * (rank + 1)]))
    return np.diff(np.concatenate([[-1], positions]))


def _encode(differ: np.ndarray, itemsize: int) -> tuple[str, np.ndarray]:
    """The smallest way to store where ``differ`` is set: ``mask`` (packed bits) or
    ``steps8`` / ``steps16`` (uint8 / uint16 steps between positions), and its array."""
    candidates = [("mask", np.packbits(differ).reshape(-1, 1), int(differ.sum()))]
    for encoding, dtype in (("steps8", np.uint8), ("steps16", np.uint16)):
        steps = _steps(differ, np.iinfo(dtype).max).astype(dtype)
        candidates.append((encoding, steps, steps.size))
    encoding, data, values = min(candidates, key=lambda c: c[1].nbytes + c[2] * itemsize)
    return encoding, data


def _rebuild(
    layout: _Layout, weights: np.ndarray, wanted: set[str]
) -> tuple[list[onnx.NodeProto], list[TensorProto], CompactGroup]:
    """Nodes and initializers that rebuild ``weights`` (flat, in ``layout`` order) from the
    common tensor; outputs named after the weights in ``wanted``."""
    prefix = layout.prefix
    differ = _bits(weights) != _bits(layout.common)
    count, size = int(differ.sum()), differ.size
    common = f"{prefix}/common"
    constants = [numpy_helper.from_array(layout.common, common)]
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{prefix}/{output}"],
                                      name=f"{prefix}/{output}", **attributes))
        return f"{prefix}/{output}"

    def constant(array: np.ndarray, name: str) -> str:
        constants.append(numpy_helper.from_array(array, f"{prefix}/{name}"))
        return f"{prefix}/{name}"

    encoding, stored = "common", 0
    flat = common
    if count:
        encoding, where = _encode(differ, weights.itemsize)
        stored = where.nbytes
        # Index arithmetic in int64: int64 operands stay in the graph file (the weight
        # store keeps them there), where shape inference with data propagation reads them.
        one, axis = constant(np.array(1, np.int64), "one"), constant(np.array(0, np.int64), "axis")
        if encoding == "mask":
            values = np.ascontiguousarray(weights[differ])
            bits = node("BitwiseAnd", [constant(where, "mask"), constant(
                np.array([128, 64, 32, 16, 8, 4, 2, 1], np.uint8), "bit_values")], "bits")
            padded = node("Reshape", [node("Cast", [bits], "set", to=TensorProto.BOOL),
                                      constant(np.array([-1], np.int64), "flat_shape")],
                          "padded_mask")
            mask = node("Slice", [padded, constant(np.array([0], np.int64), "start"),
                                  constant(np.array([size], np.int64), "size")], "differs")
            counts = node("CumSum", [node("Cast", [mask], "ones", to=TensorProto.INT64), axis],
                          "counts")
            gathered = node("Gather", [constant(values, "values"),
                                       node("Sub", [counts, one], "slot")], "gathered", axis=0)
            flat = node("Where", [mask, gathered, common], "weights")
        else:
            positions = np.cumsum(where, dtype=np.int64) - 1
            values = np.ascontiguousarray(weights[positions])
            steps = node("Cast", [constant(where, "steps")], "steps64", to=TensorProto.INT64)
            positions = node("Sub", [node("CumSum", [steps, axis], "ends"), one], "positions")
            flat = node("ScatterElements", [common, positions, constant(values, "values")],
                        "weights", axis=0)
        stored += values.nbytes
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in layout.shapes]
    parts = [f"{prefix}/part/{index}" for index in range(len(layout.names))]
    nodes.append(helper.make_node("Split", [flat, constant(np.array(sizes, np.int64), "split")],
                                  parts, axis=0, name=f"{prefix}/split"))
    for index, (part, name, shape) in enumerate(zip(parts, layout.names, layout.shapes,
                                                     strict=True)):
        if name in wanted:  # numbered, not named: the graph file repeats these names
            shape_name = constant(np.array(shape, np.int64), f"shape/{index}")
            nodes.append(helper.make_node("Reshape", [part, shape_name], [name],
                                          name=f"{prefix}/reshape/{index}"))
    group = CompactGroup(layout.dtype.name, encoding, len(wanted), size, count, stored)
    return nodes, constants, group


def compact_graph(
    model: onnx.ModelProto, common: onnx.ModelProto
) -> tuple[onnx.ModelProto, list[CompactGroup]]:
    """A copy of ``model`` (initializers in memory) whose weights rebuild from ``common``'s.

    ``common`` may be ``model`` itself (the common graph of a compact set). Returns the
    graph and, per element type, how it stores its weights.
    """
    compact = onnx.ModelProto()
    compact.CopyFrom(model)
    graph = compact.graph
    kept = list(graph.initializer)
    rebuild_nodes: list[onnx.NodeProto] = []
    added: list[TensorProto] = []
    groups = []
    for layout in _layouts(common):
        index = layout.index
        weights = layout.common.copy()
        offsets = np.cumsum([0, *(int(np.prod(s, dtype=np.int64)) for s in layout.shapes)])
        wanted = set()
        for tensor in graph.initializer:
            if layout.matches(tensor):
                i = index[tensor.name]
                weights[offsets[i]:offsets[i + 1]] = numpy_helper.to_array(tensor).reshape(-1)
                wanted.add(tensor.name)
        if not wanted:
            continue
        nodes, constants, group = _rebuild(layout, weights, wanted)
        dense_bytes = sum(layout.common.itemsize * int(np.prod(layout.shapes[index[name]],
                                                                dtype=np.int64))
                          for name in wanted)
        if model is not common and group.stored_bytes >= dense_bytes:
            continue  # differs almost everywhere: its own tensors are smaller
        rebuild_nodes += nodes
        added += constants
        groups.append(group)
        kept = [t for t in kept if t.name not in wanted]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(rebuild_nodes + nodes)  # the rebuild first: still topologically sorted
    return compact, groups


def compact_graphs(
    models: Mapping[str, onnx.ModelProto], common: str
) -> tuple[dict[str, onnx.ModelProto], dict[str, list[CompactGroup]]]:
    """Every graph of ``models`` (weather -> graph, weights in memory) compacted against
    ``models[common]``, the common graph included; and how each stores its weights."""
    if common not in models:
        raise GpmaskError(f"a compact set of graphs needs the {common!r} graph")
    for name, model in models.items():
        if rebuild_nodes(model):
            raise GpmaskError(f"graph {name!r} already rebuilds weights from initializers; "
                              f"fold it (fold_rebuild) before compacting it again")
    compacted, groups = {}, {}
    for name, model in models.items():
        compacted[name], groups[name] = compact_graph(model, models[common])
    return compacted, groups


def folded_nodes(model: onnx.ModelProto) -> list[bool]:
    """Per node: computed from initializers alone, Q/DQ excepted (what folding evaluates)."""
    constant = {t.name for t in model.graph.initializer}
    folded = []
    for node in model.graph.node:
        foldable = node.op_type not in _NOT_FOLDED and all(
            name in constant for name in node.input if name)
        if foldable:
            constant.update(node.output)
        folded.append(foldable)
    return folded


def rebuild_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes computed from initializers alone, Q/DQ excepted: constant folding evaluates
    them. In a bundle's graphs these are exactly the rebuild of compact weights."""
    return [node for node, folded in zip(model.graph.node, folded_nodes(model), strict=True)
            if folded]


def rebuild_inputs(model: onnx.ModelProto) -> set[str]:
    """Initializers only the rebuild reads: folded away when a graph is folded."""
    read_by_rebuild, read_elsewhere = set(), set()
    for node, folded in zip(model.graph.node, folded_nodes(model), strict=True):
        (read_by_rebuild if folded else read_elsewhere).update(node.input)
    read_elsewhere.update(output.name for output in model.graph.output)
    initializers = {t.name for t in model.graph.initializer}
    return (read_by_rebuild & initializers) - read_elsewhere
