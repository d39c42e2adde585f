"""TensorRT backend: mismatch refusal, error mapping and ``auto``'s fallback (everywhere);
real engines where TensorRT and a GPU are.

The mismatch rule, the error mapping and the fallback are pure Python and tested
everywhere. The engine tests build real engines with ``gpmask build``'s API and compare
the TensorRT backend's frames with ONNX Runtime's; they are skipped, with the reason,
where TensorRT or a GPU is missing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from polygraphy.exception import PolygraphyException

import gpmask.runtime.backends as backends
import gpmask.runtime.backends.tensorrt as tensorrt_backend
from gpmask.bench.targets import plan_targets
from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends.tensorrt import EngineTarget, engine_mismatch, tensorrt_errors
from tests.conftest import make_checkpoint, needs_tensorrt

RUNNING = EngineTarget("10.3.0", "Orin", "8.7")
RECORD = {"path": "engines/rain.fp16.engine", "sha256": "0" * 64,
          "tensorrt_version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from gpmask.export.exporter import export_bundle

    root = tmp_path_factory.mktemp("trt-backend") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


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


# ----------------------------------------------------------------- error mapping
class FakeTensorRTError(Exception):
    """Stands for an exception type of a TensorRT binding this machine lacks."""


def test_polygraphy_failures_become_one_gpmask_line():
    message = "CUDA Error: 2. To figure out what this means,\n  refer to the CUDA docs"
    with pytest.raises(GpmaskError) as caught, tensorrt_errors("TensorRT could not build x"):
        raise PolygraphyException(message)
    assert str(caught.value) == ("TensorRT could not build x: CUDA Error: 2. To figure out "
                                 "what this means, refer to the CUDA docs")
    assert isinstance(caught.value.__cause__, PolygraphyException)


def test_tensorrt_binding_errors_are_mapped_and_others_pass(monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "tensorrt_error_types", lambda: (FakeTensorRTError,))
    with pytest.raises(GpmaskError, match=r"^running rain: out of memory$"), \
            tensorrt_errors("running rain"):
        raise FakeTensorRTError("out of memory")
    with pytest.raises(KeyError), tensorrt_errors("running rain"):  # a bug keeps its traceback
        raise KeyError("input")


# ----------------------------------------------------------------- auto's fallback
def _gpu_query_fails(device: int) -> EngineTarget:
    raise OSError("libcudart.so: cannot open shared object file: No such file or directory")


def _with_engine_record(exported: Path) -> Bundle:
    """The bundle with fp32 engine records (never read: the GPU query fails first)."""
    bundle = Bundle.open(exported)
    bundle.manifest["engines"] = {w: {"fp32": {**RECORD, "path": f"engines/{w}.fp32.engine"}}
                                  for w in [*bundle.weathers, "common"]}
    return bundle


def test_auto_falls_back_to_the_cpu_when_the_gpu_cannot_be_queried(
    exported, monkeypatch, caplog
):
    from gpmask.runtime.backends.openvino import openvino_available

    monkeypatch.setattr(backends, "tensorrt_available", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "running_target", _gpu_query_fails)
    with caplog.at_level(logging.WARNING, logger="gpmask.runtime"):
        backend = backends.load_backend(_with_engine_record(exported), "auto", "fp32", 0)
    # the CPU backend auto picks on a machine without a usable GPU
    assert backend.name == ("openvino" if openvino_available() else "onnxruntime-cpu")
    assert caplog.messages == ["not using TensorRT: cannot query GPU 0 (OSError: libcudart.so: "
                               "cannot open shared object file: No such file or directory)"]
    backend.close()


def test_bench_skips_tensorrt_when_the_gpu_cannot_be_queried(exported, monkeypatch):
    import gpmask.bench.targets as targets

    monkeypatch.setattr(targets, "tensorrt_available", lambda: True)
    monkeypatch.setattr(tensorrt_backend, "running_target", _gpu_query_fails)
    planned, skipped = plan_targets(_with_engine_record(exported), ["tensorrt"], ["fp32"], None)
    assert planned == []
    assert [s.line() for s in skipped] == [
        "tensorrt: cannot query GPU 0 (OSError: libcudart.so: cannot open shared object file: "
        "No such file or directory)"]


def test_backend_tensorrt_refuses_with_the_reason_when_the_gpu_cannot_be_queried(
    exported, monkeypatch
):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here")
    monkeypatch.setattr(tensorrt_backend, "running_target", _gpu_query_fails)
    with pytest.raises(GpmaskError, match=r"^backend tensorrt: cannot query GPU 0 \(OSError"):
        tensorrt_backend.TensorRTBackend(_with_engine_record(exported), "fp32")


# ----------------------------------------------------------------- real engines
@pytest.fixture(scope="module")
def engines(exported, tmp_path_factory) -> Path:
    """A copy of the bundle with fp32 engines for frames from 32x32 to 64x64."""
    import shutil

    from gpmask.export.tensorrt_build import ShapeRange, build_bundle_engines

    root = Path(shutil.copytree(exported, tmp_path_factory.mktemp("engines") / "bundle"))
    build_bundle_engines(root, "fp32", ShapeRange((32, 32), (40, 52), (64, 64)))
    return root


@needs_tensorrt
@pytest.mark.tensorrt
def test_tensorrt_backend_matches_onnxruntime(engines):
    from gpmask.runtime import Restorer

    frame = np.random.default_rng(0).random((37, 50, 3), dtype=np.float32)
    with Restorer(engines, backend="tensorrt", precision="fp32") as trt_restorer, \
            Restorer(engines, backend="onnxruntime-cpu") as ort_restorer:
        assert trt_restorer.backend_name == "tensorrt"
        for weather in ("rain", "snow", "common", "rain"):
            np.testing.assert_allclose(trt_restorer.restore(frame, weather),
                                       ort_restorer.restore(frame, weather), atol=2e-3)
        # one scratch buffer serves every context
        backend = trt_restorer.backend
        assert backend.scratch.allocated_nbytes >= max(
            e.device_memory_size_v2 for e in backend.engines.values())
    with Restorer(engines, precision="fp32") as auto:
        assert auto.backend_name == "tensorrt"


@needs_tensorrt
@pytest.mark.tensorrt
def test_frame_size_change_rebinds_every_context(engines):
    from gpmask.runtime import Restorer

    rng = np.random.default_rng(2)
    frames = [rng.random(size, dtype=np.float32) for size in
              [(37, 50, 3), (64, 64, 3), (32, 32, 3), (37, 50, 3)]]
    with Restorer(engines, backend="tensorrt") as trt_restorer, \
            Restorer(engines, backend="onnxruntime-cpu") as ort_restorer:
        for frame, padded in zip(frames, [(40, 52), (64, 64), (32, 32), (40, 52)], strict=True):
            for weather in ("snow", "raindrop"):
                np.testing.assert_allclose(trt_restorer.restore(frame, weather),
                                           ort_restorer.restore(frame, weather), atol=2e-3)
            assert trt_restorer.backend._shape == (1, 3, *padded)


@needs_tensorrt
@pytest.mark.tensorrt
def test_frame_outside_the_profile_is_refused_and_the_next_one_runs(engines):
    from gpmask.runtime import Restorer

    rng = np.random.default_rng(3)
    with Restorer(engines, backend="tensorrt") as restorer:
        with pytest.raises(GpmaskError, match=r"the rain engine does not accept input shape "
                                              r"\(1, 3, 100, 100\) .*`gpmask build --min-size"):
            restorer.restore(rng.random((100, 100, 3), dtype=np.float32), "rain")
        restored = restorer.restore(rng.random((40, 40, 3), dtype=np.float32), "rain")
        assert restored.shape == (40, 40, 3) and np.isfinite(restored).all()
