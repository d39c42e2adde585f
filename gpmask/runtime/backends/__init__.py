"""Choosing and loading a runtime backend by name.

Names a user can give: ``auto``; ``tensorrt`` (native engines); ``openvino`` (the CPU);
``onnxruntime`` (the best execution provider this ONNX Runtime offers, CUDA before
CPU); or an explicit provider, ``onnxruntime-cpu``, ``onnxruntime-cuda``,
``onnxruntime-tensorrt``.

``auto`` takes the fastest thing that can run here: TensorRT when it is importable and
the bundle has engines at the precision built for this TensorRT and GPU, then ONNX
Runtime with CUDA, then, on a machine without either, OpenVINO on the CPU (measured
faster than ONNX Runtime's CPU provider at every precision: ``benchmarks/bench_cpu.py``),
then ONNX Runtime on the CPU where OpenVINO is not installed. A GPU that cannot be
queried (the tensorrt package present without a GPU, driver or CUDA runtime) means
TensorRT is not usable here: ``auto`` logs why and falls back. Backend modules import
their runtime library only when chosen, so a machine without TensorRT never tries to
import it.

Precisions are the bundle's graphs (``fp32``, ``fp16``, ``int8``, ``int8-cpu``,
``int8-openvino``), plus
``bf16``, which is OpenVINO's bfloat16 inference of the fp32 graphs and only exists
there (see :mod:`gpmask.runtime.backends.openvino`).
"""

from __future__ import annotations

import importlib.util
import logging

from gpmask.bundle import HINTED_PRECISIONS, Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends.base import Backend

#: Backend names accepted by :func:`load_backend` (and by ``--backend`` on the command line).
BACKENDS = ("auto", "tensorrt", "openvino", "onnxruntime", "onnxruntime-cpu",
            "onnxruntime-cuda", "onnxruntime-tensorrt")

log = logging.getLogger("gpmask.runtime")


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package can be imported here."""
    return importlib.util.find_spec("tensorrt") is not None


def _engines_usable(bundle: Bundle, precision: str, device: int) -> bool:
    """Whether ``auto`` should take TensorRT: engines exist and were built for this machine."""
    from gpmask.runtime.backends.tensorrt import engine_mismatch, probe_running_target

    engines = [per.get(precision) for per in bundle.manifest.get("engines", {}).values()]
    engines = [record for record in engines if record]
    if not engines or not tensorrt_available():
        return False
    running, problem = probe_running_target(device)
    if running is None:
        log.warning("not using TensorRT: %s", problem)
        return False
    for record in engines:
        problem = engine_mismatch(record, running, str(bundle.root), precision)
        if problem:
            log.warning("not using TensorRT: %s", problem)
            return False
    return True


def resolve_backend(bundle: Bundle, backend: str, precision: str, device: int) -> str:
    """The backend ``backend`` means here: ``auto`` resolved, every other name checked.

    Returns ``tensorrt``, ``openvino`` or ``onnxruntime-<provider>``.
    """
    from gpmask.runtime.backends.onnxruntime import available_providers
    from gpmask.runtime.backends.openvino import openvino_available

    if backend not in BACKENDS:
        raise GpmaskError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    hinted = precision in HINTED_PRECISIONS
    if hinted and backend not in ("auto", "openvino"):
        raise GpmaskError(
            f"precision {precision} is OpenVINO's {precision} inference of the "
            f"{HINTED_PRECISIONS[precision]} graphs and has no graphs or engines of its own; "
            f"use --backend openvino (or auto on a CPU)")
    if backend == "auto":
        cuda = "cuda" in available_providers()
        if not hinted and _engines_usable(bundle, precision, device):
            backend = "tensorrt"
        elif hinted or (not cuda and openvino_available()):
            log.info("auto: no TensorRT engines or CUDA here; running on the CPU with OpenVINO")
            backend = "openvino"
        else:
            backend = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
    elif backend == "onnxruntime":
        backend = "onnxruntime-cuda" if "cuda" in available_providers() else "onnxruntime-cpu"
    if backend == "tensorrt" and not tensorrt_available():
        raise GpmaskError("backend tensorrt: the tensorrt Python package is not installed "
                          "(it comes with JetPack, or from NVIDIA's package index)")
    if backend == "openvino" and not openvino_available():
        raise GpmaskError("backend openvino: the openvino Python package is not installed "
                          "(pip install openvino)")
    return backend


def load_backend(bundle: Bundle, backend: str, precision: str, device: int) -> Backend:
    """Load ``bundle`` on the backend named ``backend`` (see :data:`BACKENDS`)."""
    backend = resolve_backend(bundle, backend, precision, device)
    if backend == "tensorrt":
        from gpmask.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, precision, device)
    if backend == "openvino":
        from gpmask.runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(bundle, precision)
    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(bundle, precision, backend.removeprefix("onnxruntime-"), device)
