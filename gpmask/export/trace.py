"""Trace a restoration network into an ONNX graph once, with the bundle's input and output.

The bundle's graphs all share one structure; only their weights differ. This module
produces that structure from PyTorch with the ``torch.export``-based exporter (the
default of ``torch.onnx.export`` since torch 2.9; the TorchScript exporter is
deprecated). The graph takes ``image`` (NCHW float32) with dynamic batch, height and
width (or a static shape) and returns ``restored``. The exporter's own progress lines
and warnings are kept off the terminal; its failures become one :class:`GpmaskError`
line naming the operator that could not be converted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import onnx
import torch

from gpmask.errors import GpmaskError

INPUT_NAME = "image"
OUTPUT_NAME = "restored"
OPSET = 18
#: Names given to the dynamic axes of ``image`` and ``restored``.
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}


def check_static_shape(shape: tuple[int, ...], multiple: int) -> None:
    """Refuse a static input shape the network cannot take."""
    if len(shape) != 4 or shape[1] != 3:
        raise GpmaskError(f"bad shape {'x'.join(map(str, shape))}: the input is Nx3xHxW (RGB)")
    if shape[2] % multiple or shape[3] % multiple:
        raise GpmaskError(
            f"bad shape {'x'.join(map(str, shape))}: height and width must be multiples of "
            f"{multiple} for this architecture"
        )


def example_shape(multiple: int) -> tuple[int, int, int, int]:
    """A small input shape to trace with: batch 2 and unequal sides, so none is specialised."""
    side = multiple * max(2, math.ceil(32 / multiple))
    return 2, 3, side, side + multiple


@dataclass(frozen=True)
class TracedGraph:
    """The exported graph, and the state-dict entries ``forward`` never reads.

    The exporter drops unread parameters (say the coarse-scale heads of a multi-output
    network that deploys only its full-resolution output); knowing which they are tells
    them apart from parameters folded into other constants.
    """

    model: onnx.ModelProto
    unused: frozenset[str]


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, log lines and deprecation warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def exporter_failure(exc: BaseException) -> str:
    """The exporter's message cut down to the operator that failed (or its first line)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    op = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if op:
        return f"no ONNX conversion for operator {op.group(1)}"
    summary = text.split("## Exception summary", 1)[-1]
    lines = [line.strip() for line in summary.splitlines() if line.strip().startswith("<class")]
    line = lines[0] if lines else text.strip().splitlines()[0] if text.strip() else repr(exc)
    return re.sub(r"^<class '[\w.]*\.(\w+)'>", r"\1", line)[:300]


def trace_graph(
    model: torch.nn.Module,
    static_shape: tuple[int, int, int, int] | None,
    multiple: int,
    optimize: bool = True,
) -> TracedGraph:
    """Export ``model`` (in eval mode) to an ONNX graph with initializers in memory.

    Args:
        model: the network, with any weights (the structure is what matters here).
        static_shape: fixed NCHW input shape, or None for dynamic batch, height, width.
        multiple: the factor height and width must divide by (checked for static shapes).
        optimize: run the exporter's graph optimizer, which folds constants but may also
            fuse parameters into each other (a BatchNorm into the convolution before it).
    """
    if static_shape is not None:
        check_static_shape(static_shape, multiple)
    example = torch.rand(static_shape or example_shape(multiple))
    dynamic = None
    if static_shape is None:
        dynamic = {INPUT_NAME: {axis: torch.export.Dim.DYNAMIC for axis in DYNAMIC_AXES}}
    try:
        with quiet_exporter():
            program = torch.onnx.export(
                model.eval(),
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=OPSET,
                dynamic_shapes=dynamic,
                optimize=optimize,
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        raise GpmaskError(
            f"cannot export {type(model).__name__}.forward to ONNX: {exporter_failure(exc)}"
        ) from exc
    graph = program.model_proto
    if len(graph.graph.input) != 1 or len(graph.graph.output) != 1:
        raise GpmaskError(
            f"{type(model).__name__}.forward must take one image and return one image; the "
            f"exported graph has {len(graph.graph.input)} inputs, {len(graph.graph.output)} outputs"
        )
    if static_shape is None:
        _name_dynamic_axes(graph)
    for node in graph.graph.node:  # FX node text and stack traces (with local paths): 70% of
        del node.metadata_props[:]  # a small graph's size, of no use to any consumer
    return TracedGraph(graph, _unused_state(program.exported_program))


def _unused_state(program: torch.export.ExportedProgram) -> frozenset[str]:
    """State-dict names whose placeholder in the traced program has no users."""
    signature = program.graph_signature
    state = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    return frozenset(
        state[node.name]
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in state and not node.users
    )


def _name_dynamic_axes(model: onnx.ModelProto) -> None:
    """Rename the exporter's symbolic sizes (``s40``...) to ``batch``, ``height``, ``width``."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    renames = {dims[axis].dim_param: name for axis, name in DYNAMIC_AXES.items()
               if dims[axis].dim_param}
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for value in values:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in renames:
                dim.dim_param = renames[dim.dim_param]
