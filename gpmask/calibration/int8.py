"""INT8 Q/DQ graphs by ONNX Runtime's static quantization, with a calibration cache.

Three schemes. The activation ranges a weather's frames produce do not depend on how
they are later turned into scales, so schemes quantizing the same graph read the same
cache; a scheme that rewrites the graph first quantizes it with ranges of its own.

- ``int8``: what TensorRT (10 and 11, strongly typed) wants: explicit
  QuantizeLinear/DequantizeLinear pairs, int8 activations *and* weights, symmetric
  (zero point 0), per-channel weight scales, per-tensor activation scales; biases stay
  float (TensorRT fuses them into the convolution itself). A convolution's output is
  quantized only where its reader needs quantized inputs (an addition), not before a
  ReLU: a Q/DQ pair between a convolution and its activation would make TensorRT run
  the activation as a kernel of its own instead of fusing it. Convolutions over a channel
  concatenation are split into sums first (:mod:`gpmask.graph.concat_split`):
  exact, fused by TensorRT as a residual addition, and it keeps the graph off the
  pattern OpenVINO 2026 computes wrongly with signed activations (a Concat read by a
  quantized convolution; see ``tests/test_int8_consumers.py``).
- ``int8-cpu``: what ONNX Runtime's x86 kernels run fastest (U8S8): uint8 asymmetric
  activations, int8 symmetric per-channel weights, int32 biases, so that its graph
  optimiser fuses each DQ-Conv-Q group into one QLinearConv. The fp32 graph is first
  rewritten, exactly, into the shapes those kernels run fastest: upsampling transposed
  convolutions as convolutions (:mod:`gpmask.graph.subpixel`), since ONNX Runtime
  has no quantized ConvTranspose; convolutions over a channel concatenation as sums
  of convolutions (:mod:`gpmask.graph.concat_split`); narrow convolutions
  widened with zero channels (:mod:`gpmask.graph.channel_padding`).
- ``int8-openvino``: what OpenVINO's CPU plugin runs fastest: uint8 asymmetric
  activations, float biases, Q/DQ only on the inputs of convolutions and additions;
  upsampling as sub-pixel convolutions (OpenVINO runs a quantized ConvTranspose in
  float32 on x86) and concatenations split, but no channel padding: OpenVINO's int8
  kernels take narrow layers as they are, and the padding would cost it the extra
  multiply-accumulates plus reference-kernel Slice, Pad and Convert nodes
  (``benchmarks/profile_layers.py`` shows both; ``bench_cpu.py`` compares the graphs).

All schemes quantize weights to 7 bits (``[-64, 64]``, ONNX Runtime's ``reduce_range``).
x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake) multiply uint8 by int8 with
``vpmaddubsw``, which adds each pair of products into a saturating int16: with 8-bit
weights a pair reaches ``2 * 255 * 127 = 64770`` and clips. Both ONNX Runtime's and
OpenVINO's int8 kernels use it there, and on an AVX2 CPU the demo network's int8-cpu graph
came out more than 10 dB further from fp32 than its Q/DQ arithmetic (the README gives the
figures). With 7-bit weights a pair stays below ``2 * 255 * 64 = 32640``, so every x86 CPU
computes what the graph says, and the quality budget measured on the calibrating machine
holds on the deploying one (and on TensorRT, which reads the same scales). It costs a
fraction of a dB of PSNR against fp32 on the demo network.

The cache is ONNX Runtime's own calibration-cache JSON, stored under
``BUNDLE/calibration/`` with a file name that is a hash of the graph, the frames and the
calibration settings: a re-run with the same inputs loads it instead of running the
frames again; a changed input gets a new file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpmask.calibration.frame_sets import Frames, to_batch
from gpmask.precision import Int8Scheme

#: Calibration method names on the command line -> ONNX Runtime CalibrationMethod names.
METHODS = {"entropy": "Entropy", "percentile": "Percentile", "minmax": "MinMax"}

#: Folder, inside the bundle, of cached calibration ranges.
CACHE_FOLDER = "calibration"

#: Percentile kept by the ``percentile`` method.
PERCENTILE = 99.999


def quantize_options(scheme: Int8Scheme) -> dict:
    """``extra_options`` for ``quantize_static`` from ``scheme`` (the calibration-side
    options excluded)."""
    return {
        "ActivationSymmetric": scheme.activations_symmetric,
        "WeightSymmetric": True,
        "QuantizeBias": scheme.quantize_bias,
        "OpTypesToExcludeOutputQuantization":
            [] if scheme.quantize_conv_outputs else ["Conv", "ConvTranspose"],
    }


class FrameReader:
    """ONNX Runtime ``CalibrationDataReader`` over a :class:`Frames` set.

    ``fed`` counts the frames handed to the calibrator, so a caller can tell a cache
    hit (nothing fed) from a computed calibration.
    """

    def __init__(self, input_name: str, frames: Frames) -> None:
        self.input_name = input_name
        self.frames = frames
        self.fed = 0
        self._iterator: Iterable[np.ndarray] = iter(frames.degraded)

    def get_next(self) -> dict[str, np.ndarray] | None:
        frame = next(iter(self._iterator), None)
        if frame is None:
            return None
        self.fed += 1
        return {self.input_name: to_batch(frame)}

    def rewind(self) -> None:
        self._iterator = iter(self.frames.degraded)

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class Calibration:
    """What is needed to quantize one graph: its frames, method and cache file.

    Attributes:
        graph: the fp32 graph file (its external weights beside it).
        graph_digest: sha256 standing for the graph's content (graph file and weights).
        frames: calibration frames of the graph's weather.
        method: ``entropy``, ``percentile`` or ``minmax``.
        cache_folder: where cached ranges live.
        reader: the data reader (its ``fed`` count says whether calibration ran).
    """

    graph: Path
    graph_digest: str
    frames: Frames
    method: str
    cache_folder: Path
    reader: FrameReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = FrameReader(_input_name(self.graph), self.frames)

    def settings(self) -> dict:
        """Calibration settings that change the ranges (part of the cache key and reports)."""
        settings = {"method": self.method, "frames": len(self.frames)}
        if self.method == "percentile":
            settings["percentile"] = PERCENTILE
        return settings

    @property
    def cache_path(self) -> Path:
        key = json.dumps(
            {"graph": self.graph_digest, "frames": self.frames.digest(), **self.settings()},
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.cache_folder / f"{self.graph.stem}.{self.method}.{digest}.json"


def _input_name(graph: Path) -> str:
    import onnx

    model = onnx.load(graph, load_external_data=False)
    initializers = {tensor.name for tensor in model.graph.initializer}
    return next(i.name for i in model.graph.input if i.name not in initializers)


def quantize(
    calibration: Calibration,
    scheme: Int8Scheme,
    output: str | os.PathLike,
    nodes_to_exclude: list[str] | None = None,
) -> None:
    """Quantize ``calibration.graph`` to ``output`` (weights embedded) with ``scheme``.

    Ranges come from the cache when it holds them; otherwise the frames are run and the
    cache written.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    calibration.cache_folder.mkdir(parents=True, exist_ok=True)
    _drop_damaged_cache(calibration.cache_path)
    calibration.reader.rewind()
    calib_options = {"CalibPercentile": PERCENTILE} if calibration.method == "percentile" else {}
    with _quiet_root_logger():
        quantize_static(
            str(calibration.graph),
            str(output),
            calibration.reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=scheme.reduce_range,
            activation_type=QuantType.QUInt8 if scheme.activations_unsigned else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude or []),
            calibrate_method=getattr(CalibrationMethod, METHODS[calibration.method]),
            extra_options={**quantize_options(scheme), **calib_options},
            calibration_cache_path=calibration.cache_path,
        )


def _drop_damaged_cache(path: Path) -> None:
    """Delete a cache file that is not JSON (a write cut short, a disk error): the quantizer
    would fail on it, and the ranges it held are computed again."""
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        logging.getLogger("gpmask").warning(
            "gpmask: warning: calibration cache %s was damaged; its ranges are computed "
            "again", path.name)
        path.unlink()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence the advice ONNX Runtime's quantizer logs on the root logger at every call."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def quantizable_nodes(graph: str | os.PathLike) -> list[str]:
    """Names of the nodes static quantization touches: candidates to keep in fp32."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    op_types = set(QDQRegistry) | set(QLinearOpsRegistry)
    model = onnx.load(graph, load_external_data=False)
    return [node.name for node in model.graph.node if node.op_type in op_types]
