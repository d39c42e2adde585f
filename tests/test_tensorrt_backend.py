"""TensorRT backend: the engine/machine mismatch refusal, and real engines where TensorRT is.

The mismatch rule is a pure function tested everywhere. The engine test builds real
engines from a bundle's graphs with ``gpmask build``'s API and compares the TensorRT backend's
frames with ONNX Runtime's; it is skipped where ``import tensorrt`` fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from gpmask.runtime.backends.tensorrt import EngineTarget, engine_mismatch

RUNNING = EngineTarget("10.3.0", "Orin", "8.7")
RECORD = {"path": "engines/rain.fp16.engine", "sha256": "0" * 64,
          "tensorrt_version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


def test_matching_engine_is_accepted():
    assert engine_mismatch(RECORD, RUNNING, "bundle", "fp16") is None


@pytest.mark.parametrize(("field", "value", "built"), [
    ("tensorrt_version", "10.8.0", "TensorRT 10.8.0 on Orin (compute capability 8.7)"),
    ("gpu", "NVIDIA H100 80GB HBM3", "TensorRT 10.3.0 on NVIDIA H100 80GB HBM3"),
    ("compute_capability", "9.0", "TensorRT 10.3.0 on Orin (compute capability 9.0)"),
])
def test_mismatch_names_both_and_the_rebuild_command(field, value, built):
    message = engine_mismatch({**RECORD, field: value}, RUNNING, "out/bundle", "fp16")
    assert message.startswith(f"engine engines/rain.fp16.engine was built for {built}")
    assert "this machine has TensorRT 10.3.0 on Orin (compute capability 8.7)" in message
    assert message.endswith("`gpmask build out/bundle --precision fp16`")


def test_record_without_target_fields_is_refused():
    message = engine_mismatch({"path": "engines/snow.int8.engine"}, RUNNING, "b", "int8")
    assert "built for TensorRT unknown on unknown (compute capability unknown)" in message
    assert "gpmask build b --precision int8" in message


@pytest.mark.tensorrt
def test_tensorrt_backend_matches_onnxruntime(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    from gpmask.export.exporter import export_bundle
    from gpmask.export.tensorrt_build import build_bundle_engines
    from gpmask.runtime import Restorer
    from tests.conftest import make_checkpoint

    bundle_dir = tmp_path / "bundle"
    export_bundle(make_checkpoint(), bundle_dir, verify=False, progress=False)
    build_bundle_engines(bundle_dir, "fp32", shapes="32x32:40x52:64x64")
    frame = np.random.default_rng(0).random((37, 50, 3), dtype=np.float32)
    with Restorer(bundle_dir, backend="tensorrt", precision="fp32") as trt_restorer, \
            Restorer(bundle_dir, backend="onnxruntime-cpu") as ort_restorer:
        assert trt_restorer.backend_name == "tensorrt"
        for weather in ("rain", "snow", "common", "rain"):
            np.testing.assert_allclose(trt_restorer.restore(frame, weather),
                                       ort_restorer.restore(frame, weather), atol=2e-3)
        # one scratch buffer serves every context
        backend = trt_restorer.backend
        assert backend.scratch.allocated_nbytes >= max(
            e.device_memory_size_v2 for e in backend.engines.values())
    with Restorer(bundle_dir, precision="fp32") as auto:
        assert auto.backend_name == "tensorrt"
