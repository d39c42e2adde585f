"""How much working memory a graph needs per input pixel, read from the graph itself.

A restoration network's activations grow with the frame: a frame a hundred times larger
needs a hundred times the memory, and an 8000x8000 image keeps growing a process past
what the machine has until the kernel kills it. The runtime refuses such a frame up
front instead (:mod:`gpmask.runtime.memory`), and so does the export's verification of a
static shape, from :func:`working_bytes_per_pixel`.

The estimate: ONNX shape inference at a reference size gives every intermediate
tensor's bytes; walking the nodes in their (topological) order, a tensor computed from
the input is alive from the node that makes it to the last node that reads it; the
largest sum of live tensors is what an engine that frees each tensor after its last
use needs at least. Tensors that do not depend on the input (weights, a compact graph's
rebuilt weights) are left out: they do not grow with the frame. Engines take more than
that (memory planning that keeps tensors longer, convolution workspaces, the frame's
float copies on the way in and out): :data:`RUNTIME_FACTOR` times it.
"""

from __future__ import annotations

import onnx

#: Side of the square reference frame the graph's shapes are inferred at.
REFERENCE_SIDE = 128
#: Measured working memory of ONNX Runtime and OpenVINO over the live-tensor estimate,
#: rounded up (``benchmarks/bench_working_memory.py`` prints the ratio per runtime).
RUNTIME_FACTOR = 3.0


def _bytes(value: onnx.ValueInfoProto) -> int | None:
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    if not dims or not all(d.HasField("dim_value") for d in dims):
        return None
    size = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
    for dim in dims:
        size *= dim.dim_value
    return size


def live_bytes_per_pixel(model: onnx.ModelProto, side: int = REFERENCE_SIDE) -> float:
    """Peak bytes of input-dependent tensors alive at once, per input pixel (per frame of
    the batch). Dynamic dimensions are set to a batch of one ``side`` x ``side`` frame; a
    graph exported with a static shape is measured at that shape."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {tensor.name for tensor in model.graph.initializer}
    image = next(i for i in model.graph.input if i.name not in initializers)
    shape = []
    for dim, value in zip(image.type.tensor_type.shape.dim, (1, 3, side, side), strict=False):
        if not dim.HasField("dim_value"):
            dim.ClearField("dim_param")
            dim.dim_value = value
        shape.append(dim.dim_value)
    frames, pixels = shape[0], shape[2] * shape[3]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    sizes = {v.name: _bytes(v) for v in values}
    nodes = list(inferred.graph.node)
    varying = {image.name}  # tensors computed from the input
    last_use: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if varying.intersection(node.input):
            varying.update(node.output)
        for name in node.input:
            last_use[name] = index
    for output in inferred.graph.output:
        last_use[output.name] = len(nodes)
    # A tensor whose size inference could not tell is counted as large as the largest
    # known one, so the estimate errs high.
    largest = max((s for n, s in sizes.items() if n in varying and s), default=0)
    alive = {image.name: sizes.get(image.name) or largest}
    peak = sum(alive.values())
    for index, node in enumerate(nodes):
        for name in node.output:
            if name in varying:
                alive[name] = sizes.get(name) or largest
        peak = max(peak, sum(alive.values()))
        for name in [n for n in alive if last_use.get(n, -1) <= index]:
            del alive[name]
    return peak / (frames * pixels)


def working_bytes_per_pixel(model: onnx.ModelProto) -> float:
    """What a CPU runtime takes per input pixel to run ``model`` (batch 1)."""
    return RUNTIME_FACTOR * live_bytes_per_pixel(model)
