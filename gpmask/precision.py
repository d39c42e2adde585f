"""Every precision gpmask knows, each defined once.

A precision says which graph a backend runs and how that graph is made. Every other
list of precisions in gpmask (what ``calibrate`` makes, what TensorRT builds, what is
stored compact, OpenVINO's hint, the instruction limit a benchmark divides by, the
command line's choices) is a view of :data:`PRECISIONS`; a new precision is one
definition here plus its recipe in :mod:`gpmask.calibration`.

The recipes:

- ``export``: the fp32 graphs every bundle has, traced from the checkpoint;
- ``fp16``: the fp32 graph converted, sensitive ops kept in fp32
  (:mod:`gpmask.graph.fp16`);
- ``int8``: calibrated Q/DQ on the fp32 graph, after the exact rewrites its
  :class:`Int8Scheme` names (:mod:`gpmask.calibration.int8`);
- ``hint``: no graph of its own; a backend computes another precision's graph in this
  one (OpenVINO's ``bf16`` inference of the fp32 graphs).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpmask.errors import GpmaskError


@dataclass(frozen=True)
class Int8Scheme:
    """How calibrated ranges become Q/DQ nodes for one int8 precision.

    Attributes:
        activations_unsigned: uint8 activations (x86 CPU kernels' fast path) or int8
            (TensorRT's symmetric Q/DQ).
        activations_symmetric: zero point 0 for activations.
        quantize_bias: int32 biases (ONNX Runtime fuses DQ-Conv-Q into QLinearConv) or
            float biases (TensorRT and OpenVINO fuse them themselves).
        rewrites: exact graph rewrites applied to the fp32 graph before quantizing, by
            name, in order (:data:`gpmask.graph.rewrites.REWRITES`).
        quantize_conv_outputs: Q/DQ on every convolution's output, or only where a
            reader quantizes its inputs (no Q/DQ between a convolution and its ReLU,
            which TensorRT would then have to run unfused).
        reduce_range: 7-bit weights, so that no x86 int8 kernel saturates (see
            :mod:`gpmask.calibration.int8`).
    """

    activations_unsigned: bool
    activations_symmetric: bool
    quantize_bias: bool
    rewrites: tuple[str, ...]
    quantize_conv_outputs: bool
    reduce_range: bool = True


@dataclass(frozen=True)
class Precision:
    """One precision: the graph it runs, how that is made, and what consumes it.

    Attributes:
        name: as the command line and the manifest spell it.
        recipe: ``export``, ``fp16``, ``int8`` or ``hint`` (module docstring).
        graph: the precision whose graphs it runs (itself, but for a hint).
        int8: the Q/DQ scheme of an ``int8`` recipe.
        stored_compact: in a compact bundle, stored as common values plus each
            weather's differences (int8 weights differ from the common ones almost
            everywhere, so int8 graphs are stored dense).
        tensorrt: TensorRT builds engines from its graphs.
        openvino_hint: OpenVINO's ``INFERENCE_PRECISION_HINT`` for it (``f32`` keeps
            OpenVINO from running float parts in bf16 where the CPU has it).
        cpu_capability: an OpenVINO ``OPTIMIZATION_CAPABILITIES`` entry the CPU must
            have (bf16 otherwise silently runs in float32), or None.
        instruction_limit: the instruction-throughput limit its arithmetic runs
            against on a CPU (fp16 graphs compute in fp32 there).
        summary: what it is, in a few words, for ``--help``.
    """

    name: str
    recipe: str
    graph: str
    summary: str
    int8: Int8Scheme | None = None
    stored_compact: bool = False
    tensorrt: bool = False
    openvino_hint: str = "f32"
    cpu_capability: str | None = None
    instruction_limit: str = "fp32"

    @property
    def has_graphs(self) -> bool:
        """Whether the bundle holds graphs of this precision (a hint has none)."""
        return self.recipe != "hint"

    @property
    def calibrated(self) -> bool:
        """Whether ``gpmask calibrate`` makes its graphs."""
        return self.recipe in ("fp16", "int8")


#: Every precision, fp32 first.
PRECISIONS: tuple[Precision, ...] = (
    Precision("fp32", "export", "fp32", "the exported float32 graphs", stored_compact=True,
              tensorrt=True),
    Precision("fp16", "fp16", "fp16", "float16 weights and compute, sensitive ops in fp32",
              stored_compact=True, tensorrt=True),
    Precision("int8", "int8", "int8", "symmetric int8 Q/DQ, the TensorRT-ready graph",
              int8=Int8Scheme(activations_unsigned=False, activations_symmetric=True,
                              quantize_bias=False, rewrites=("concat_split",),
                              quantize_conv_outputs=False),
              tensorrt=True, instruction_limit="int8"),
    Precision("int8-cpu", "int8", "int8-cpu", "uint8 activations, ONNX Runtime's x86 fast path",
              int8=Int8Scheme(activations_unsigned=True, activations_symmetric=False,
                              quantize_bias=True,
                              rewrites=("subpixel", "concat_split", "channel_padding"),
                              quantize_conv_outputs=True),
              instruction_limit="int8"),
    Precision("int8-openvino", "int8", "int8-openvino",
              "uint8 activations, shaped for OpenVINO's CPU plugin",
              int8=Int8Scheme(activations_unsigned=True, activations_symmetric=False,
                              quantize_bias=False, rewrites=("subpixel", "concat_split"),
                              quantize_conv_outputs=False),
              instruction_limit="int8"),
    Precision("bf16", "hint", "fp32", "OpenVINO's bfloat16 inference of the fp32 graphs",
              openvino_hint="bf16", cpu_capability="BF16", instruction_limit="bf16"),
)

#: ``--precision auto``: the fastest precision the bundle, backend and machine offer
#: (:func:`gpmask.runtime.backends.choose`).
AUTO = "auto"

_BY_NAME = {precision.name: precision for precision in PRECISIONS}
#: Names, in :data:`PRECISIONS` order.
NAMES = tuple(_BY_NAME)
#: Precisions a bundle holds graphs of.
GRAPH_PRECISIONS = tuple(p.name for p in PRECISIONS if p.has_graphs)
#: Precisions ``gpmask calibrate`` makes.
CALIBRATED = tuple(p.name for p in PRECISIONS if p.calibrated)
#: Precisions TensorRT builds engines of.
TENSORRT_PRECISIONS = tuple(p.name for p in PRECISIONS if p.tensorrt)


def precision(name: str, option: str | None = None) -> Precision:
    """The definition of ``name``, or a :class:`GpmaskError` listing the known ones
    (prefixed with the command-line ``option`` that gave it, if any)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        where = f"{option}: " if option else ""
        raise GpmaskError(f"{where}unknown precision {name!r}; known precisions: "
                          f"{', '.join(NAMES)}") from None


def check_precision(name: str, option: str | None = None, allow_auto: bool = False) -> str:
    """``name`` if gpmask knows it (or it is ``auto`` where allowed), else the error of
    :func:`precision`."""
    if allow_auto and name == AUTO:
        return name
    return precision(name, option).name


def graph_precision(name: str) -> str:
    """The precision whose graphs ``name`` runs (``bf16`` runs the ``fp32`` graphs)."""
    return precision(name).graph
