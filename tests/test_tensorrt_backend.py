"""TensorRT backend: mismatch refusal, error mapping and ``auto``'s fallback (everywhere);
real engines where TensorRT and a GPU are.

The mismatch rule, the error mapping and the fallback are pure Python and tested
everywhere. The engine tests build real engines with ``gpmask build``'s API and compare
the TensorRT backend's frames with ONNX Runtime's; they are skipped, with the reason,
where TensorRT or a GPU is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from polygraphy.exception import PolygraphyException

import gpmask.errors as errors
import gpmask.runtime.backends as backends
import gpmask.runtime.backends.tensorrt as tensorrt_backend
from gpmask.bench.targets import plan_targets
from gpmask.bundle import Bundle, EngineRecord, EngineTarget
from gpmask.errors import GpmaskError, tensorrt_errors
from tests.conftest import make_checkpoint, needs_tensorrt

RUNNING = EngineTarget("10.3.0", "Orin", "8.7")
RECORD = {"path": "engines/rain.fp16.engine", "sha256": "0" * 64,
          "tensorrt_version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"}
NO_GPU = "no NVIDIA GPU visible: the CUDA driver (libcuda.so.1) cannot be loaded"


def engine_mismatch(record: dict, running: EngineTarget, root: str, precision: str) -> str | None:
    return EngineRecord.of(record).mismatch(running, root, precision)


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
    message = engine_mismatch({"path": "engines/snow.int8.engine", "sha256": "0" * 64},
                              RUNNING, "b", "int8")
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
    monkeypatch.setattr(errors, "tensorrt_error_types", lambda: (FakeTensorRTError,))
    with pytest.raises(GpmaskError, match=r"^running rain: out of memory$"), \
            tensorrt_errors("running rain"):
        raise FakeTensorRTError("out of memory")
    with pytest.raises(KeyError), tensorrt_errors("running rain"):  # a bug keeps its traceback
        raise KeyError("input")


# ----------------------------------------------------------------- auto's fallback
def _tensorrt_without_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT importable, but no GPU the CUDA driver reports."""
    monkeypatch.setattr(tensorrt_backend, "tensorrt_problem", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "gpu_problem", lambda device: NO_GPU)


def _with_engine_records(exported: Path, weathers: list[str] | None = None) -> Bundle:
    """The bundle with fp32 engine records for ``weathers`` (default all; never read)."""
    bundle = Bundle.open(exported)
    names = bundle.networks if weathers is None else weathers
    bundle.manifest["engines"] = {w: {"fp32": {**RECORD, "path": f"engines/{w}.fp32.engine"}}
                                  for w in names}
    return bundle


def test_auto_falls_back_to_the_cpu_when_no_gpu_is_visible(exported, monkeypatch):
    from gpmask.runtime.backends.openvino import openvino_available

    _tensorrt_without_gpu(monkeypatch)
    choice = backends.choose(_with_engine_records(exported), "auto", "fp32", 0)
    # the CPU backend auto picks on a machine without a usable GPU, saying why
    assert choice.spec.name == ("openvino" if openvino_available() else "onnxruntime-cpu")
    assert f"tensorrt: {NO_GPU}" in choice.reason


def test_auto_never_takes_engines_that_cover_only_some_weathers(exported, monkeypatch):
    """An interrupted build leaves engines for some networks: auto passes TensorRT over
    rather than refuse the other weathers in the middle of a video."""
    monkeypatch.setattr(tensorrt_backend, "tensorrt_problem", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "gpu_problem", lambda device: None)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_target", lambda device: RUNNING)
    bundle = _with_engine_records(exported, ["rain"])
    choice = backends.choose(bundle, "auto", "fp32", 0)
    assert choice.spec.name != "tensorrt"
    assert (f"tensorrt: bundle {exported} has no fp32 TensorRT engines for raindrop, "
            f"snow, common; run gpmask build {exported} --precision fp32") in choice.reason
    with pytest.raises(GpmaskError, match="has no fp32 TensorRT engines for raindrop"):
        backends.choose(bundle, "tensorrt", "fp32", 0)
    assert backends.choose(_with_engine_records(exported), "auto", "fp32", 0).spec.name == \
        "tensorrt"


def test_bench_skips_tensorrt_when_no_gpu_is_visible(exported, monkeypatch):
    _tensorrt_without_gpu(monkeypatch)
    planned, skipped = plan_targets(_with_engine_records(exported), ["tensorrt"], ["fp32"], {})
    assert planned == []
    assert [s.line() for s in skipped] == [f"tensorrt: {NO_GPU}"]


# ----------------------------------------------------------------- real engines
@pytest.fixture(scope="module")
def engines(exported, tmp_path_factory) -> Path:
    """A copy of the bundle with fp32 engines for frames from 32x32 to 64x64."""
    import shutil

    from gpmask.build.tensorrt import ShapeRange, build_bundle_engines

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


@pytest.mark.parametrize(("shape", "outside", "command"), [
    ((4, 3, 40, 52), "a batch of 4 frames, where the engines take 1",
     "gpmask build --min-size 32x32 --opt-size 40x52 --max-size 64x64 --max-batch 4"),
    ((1, 3, 100, 60), "frames of 100x60, where the engines take 32x32 to 64x64",
     "gpmask build --min-size 32x32 --opt-size 40x52 --max-size 100x64"),
    ((2, 3, 16, 40), "a batch of 2 frames, where the engines take 1 and frames of 16x40, "
                     "where the engines take 32x32 to 64x64",
     "gpmask build --min-size 16x32 --opt-size 40x52 --max-size 64x64 --max-batch 2"),
])
def test_a_refused_input_shape_names_the_build_that_takes_it(shape, outside, command):
    """A batch the engines' profile lacks is fixed by --max-batch, not by sizes; the advice
    keeps the recorded sizes and widens only what the input needs."""
    recorded = {"min": [32, 32], "opt": [40, 52], "max": [64, 64], "batch": 1}
    message = tensorrt_backend.input_shape_refusal("rain", shape, recorded, "out/b", "fp16")
    assert message == (f"the rain engine does not accept input shape {shape} ({outside}); "
                       f"rebuild the engines with `{command} out/b --precision fp16`")
    from gpmask.build.tensorrt import ShapeRange

    widened = ShapeRange.of(recorded).covering(shape)
    assert widened.outside(shape) is None and widened.outside((1, 3, 32, 32)) is None


# ----------------------------------------------------------------- which TensorRT
@pytest.fixture
def stub_tensorrt(tmp_path, monkeypatch):
    """A folder named ``tensorrt`` first on the path, as a stubs package leaves one."""
    import sys

    import gpmask.host as host

    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text('"""type stubs only"""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    host._tensorrt_package.cache_clear()
    yield tmp_path / "tensorrt"
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    host._tensorrt_package.cache_clear()


def test_a_folder_named_tensorrt_is_not_taken_for_tensorrt(stub_tensorrt, exported):
    """find_spec finds a stubs folder; gpmask imports it and refuses it by name, and
    `--backend tensorrt` ends in a GpmaskError, not an AttributeError on __version__."""
    from gpmask.host import gpu_problem, tensorrt_problem

    problem = tensorrt_problem(builder=True)
    assert problem == (f"the tensorrt package found at {stub_tensorrt / '__init__.py'} is not "
                       f"NVIDIA's TensorRT (it has no __version__ or Runtime)")
    runtime = tensorrt_problem()  # the lean runtime, where installed, is used instead
    assert runtime is None or runtime.startswith(problem)
    with pytest.raises(GpmaskError) as caught:
        backends.choose(_with_engine_records(exported), "tensorrt", "fp32", 0)
    expected = runtime or gpu_problem(0)
    if expected:
        assert str(caught.value) == f"backend tensorrt: {expected}"
    else:  # the lean runtime and a GPU are here: the records are for TensorRT 10.3 on Orin
        assert "engine engines/rain.fp32.engine was built for TensorRT 10.3.0 on Orin" in \
            str(caught.value)


def test_the_lean_runtime_is_taken_where_the_full_library_is_missing(stub_tensorrt):
    from gpmask.host import is_lean_runtime, tensorrt_module

    lean = pytest.importorskip("tensorrt_lean", reason="TensorRT's lean runtime is not "
                                                       "installed")
    module = tensorrt_module()
    assert module is lean and is_lean_runtime(module)
    with pytest.raises(GpmaskError, match="is not NVIDIA's TensorRT"):
        tensorrt_module(builder=True)  # building needs the full library


@pytest.mark.parametrize(("built", "compatible", "running", "runs"), [
    ("10.3.0", False, EngineTarget("10.3.0", "Orin", "8.7"), True),
    ("10.3.0", False, EngineTarget("10.8.0", "Orin", "8.7"), False),
    ("10.3.0", True, EngineTarget("10.8.0", "Orin", "8.7"), True),
    ("10.3.0", True, EngineTarget("11.4.0.106", "Orin", "8.7"), True),
    ("10.8.0", True, EngineTarget("10.3.0", "Orin", "8.7"), False),
    ("10.3.0", True, EngineTarget("10.8.0", "NVIDIA H100", "9.0"), False),
    ("11.4.0.106", True, EngineTarget("11.4.0.106", "Orin", "8.7", lean=True), True),
    ("11.4.0.106", False, EngineTarget("11.4.0.106", "Orin", "8.7", lean=True), False),
])
def test_version_compatible_engines_run_on_later_tensorrt_and_the_lean_runtime(
        built, compatible, running, runs):
    record = EngineRecord.of({**RECORD, "tensorrt_version": built,
                              "version_compatible": compatible})
    problem = record.mismatch(running, "b", "fp16")
    assert (problem is None) == runs
    if running.lean and not compatible:
        assert problem == (
            "engine engines/rain.fp16.engine was not built version-compatible, and this "
            "machine has TensorRT lean runtime 11.4.0.106 on Orin (compute capability 8.7), "
            "which runs version-compatible engines only; rebuild the engines with `gpmask "
            "build b --precision fp16 --version-compatible` (on a machine with the full "
            "TensorRT), or install the full TensorRT here")


# ----------------------------------------------------------------- build and run agree
def test_run_takes_the_engines_build_makes_by_default(exported, monkeypatch):
    """`gpmask build` with no --precision makes the engines `gpmask run` (and Restorer)
    loads with no --precision: auto takes engines first, fastest first."""
    import argparse

    from gpmask.cli import build_parser
    from gpmask.runtime import Restorer

    def default(verb: str) -> str:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return sub.choices[verb].get_default("precision")

    built = default("build")
    assert (built, default("run"), default("demo")) == ("fp16", "auto", "auto")
    assert inspect_default(Restorer, "precision") == "auto"
    monkeypatch.setattr(tensorrt_backend, "tensorrt_problem", lambda: None)
    monkeypatch.setattr(tensorrt_backend, "gpu_problem", lambda device: None)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_target", lambda device: RUNNING)
    bundle = Bundle.open(exported)
    bundle.manifest["engines"] = {w: {built: {**RECORD, "path": f"engines/{w}.{built}.engine"}}
                                  for w in bundle.networks}
    choice = backends.choose(bundle)  # what run and Restorer call with their defaults
    assert (choice.spec.name, choice.precision) == ("tensorrt", built)
    assert choice.reason.startswith("backend tensorrt (auto: the first that runs here), "
                                    "precision fp16 (auto: int8: bundle ")
    for weather in bundle.networks:  # and fp32 engines beside them do not win
        bundle.manifest["engines"][weather]["fp32"] = {
            **RECORD, "path": f"engines/{weather}.fp32.engine"}
    assert backends.choose(bundle).precision == "fp16"


def inspect_default(function, name: str):
    import inspect

    return inspect.signature(function).parameters[name].default
