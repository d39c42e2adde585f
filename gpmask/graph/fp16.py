"""FP16 graphs: weights and compute in half precision, sensitive ops kept in fp32.

TensorRT 11 has no FP16 builder flag: a strongly typed network computes in the types
the graph says. So the fp16 graph is made here, once, by ONNX Runtime's converter
(``onnxruntime.transformers.float16``), which casts initializers and tensors to fp16 and
inserts Casts around the ops it is told to keep in fp32. Kept in fp32: the converter's
own default list plus reductions, normalisations and exp/log/pow-style ops, whose
intermediate sums or powers overflow fp16's 65504 or lose its 11-bit mantissa on real
frames. Graph inputs and outputs stay float32 unless asked otherwise, so a caller
feeds the same arrays to every precision.
"""

from __future__ import annotations

import onnx

from gpmask.graph.fold import fold_rebuild

#: Op types computed in fp32 inside an fp16 graph (added to the converter's defaults).
FP32_OPS = (
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "ReduceProd",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
    "BatchNormalization", "LpNormalization", "Softmax", "LogSoftmax",
    "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div",
)


def convert_graph(model: onnx.ModelProto, fp16_io: bool = False) -> onnx.ModelProto:
    """An fp16 copy of ``model`` (weights in memory) with :data:`FP32_OPS` left in fp32.

    The converter appends the Casts it inserts at the end of the node list; the nodes
    are sorted again, since the ONNX checker and TensorRT's parser want them in order.
    Where it casts an initializer (a constant an fp32 op shares with fp16 ones, such as
    GELU's square root of two) the Cast is folded into the initializer: a node computed
    from initializers alone is what a compact graph's weight rebuild is made of, and the
    fp16 graphs of a compact bundle are compacted in turn.
    """
    from onnxruntime.transformers.float16 import (
        DEFAULT_OP_BLOCK_LIST,
        convert_float_to_float16,
    )
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = convert_float_to_float16(
        model,
        keep_io_types=not fp16_io,
        op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
    )
    OnnxModel(converted).topological_sort()
    return fold_rebuild(converted)

