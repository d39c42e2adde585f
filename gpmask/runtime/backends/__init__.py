"""Choosing and loading a runtime backend by name.

Names a user can give: ``auto``; ``tensorrt`` (native engines); ``onnxruntime`` (the
best execution provider this ONNX Runtime offers, CUDA before CPU); or an explicit
provider, ``onnxruntime-cpu``, ``onnxruntime-cuda``, ``onnxruntime-tensorrt``.

``auto`` takes the fastest thing that can run here: TensorRT when it is importable and
the bundle has engines at the precision built for this TensorRT and GPU, then ONNX
Runtime with CUDA, then ONNX Runtime on the CPU. A GPU that cannot be queried (the
tensorrt package present without a GPU, driver or CUDA runtime) means TensorRT is not
usable here: ``auto`` logs why and falls back. Backend modules import their runtime
library only when chosen, so a machine without TensorRT never tries to import it.
"""

from __future__ import annotations

import importlib.util
import logging

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends.base import Backend

#: Backend names accepted by :func:`load_backend`.
BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "onnxruntime-cuda",
            "onnxruntime-tensorrt")

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


def load_backend(bundle: Bundle, backend: str, precision: str, device: int) -> Backend:
    """Load ``bundle`` on the backend named ``backend`` (see :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise GpmaskError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "tensorrt" or (backend == "auto" and _engines_usable(bundle, precision, device)):
        if not tensorrt_available():
            raise GpmaskError("backend tensorrt: the tensorrt Python package is not installed "
                              "(it comes with JetPack, or from NVIDIA's package index)")
        from gpmask.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(bundle, precision, device)

    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend, available_providers

    if backend.startswith("onnxruntime-"):
        provider = backend.removeprefix("onnxruntime-")
    else:
        provider = "cuda" if "cuda" in available_providers() else "cpu"
    return OnnxRuntimeBackend(bundle, precision, provider, device)
