"""One way to run a graph on the CPU outside the runtime: an ONNX Runtime session.

Export verification, calibration, the engine build's folding check and the benchmarks
all need "this graph, on the CPU, now"; they make it here, so that the options (quiet
logging, threads) are the same everywhere. The runtime's backends make their own
sessions, tuned and sharing weights (:mod:`gpmask.runtime.backends.onnxruntime`).
"""

from __future__ import annotations

import os
from typing import Any

import onnx


def cpu_session(model: str | os.PathLike | bytes | onnx.ModelProto, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for a graph file, serialized graph or ModelProto
    (weights in memory); ``threads`` 0 lets ONNX Runtime choose."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
