"""gpmask check: each fact equals what the library or the OS says when asked directly, and
every backend x precision the report says runs does run a frame, every other one is
refused with the reason the report gave."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import gpmask
from gpmask.bundle import Bundle, GraphQuality
from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.host import NOTABLE_CPU_FLAGS, gpu_problem, tensorrt_problem
from gpmask.precision import NAMES
from gpmask.runtime import Restorer
from gpmask.runtime.backends import REGISTRY
from gpmask.runtime.backends.onnxruntime import PROVIDERS, provider_problem
from gpmask.runtime.check import check
from tests.conftest import make_checkpoint


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    root = tmp_path_factory.mktemp("check") / "bundle"
    export_bundle(make_checkpoint(), root, verify=False, progress=False)
    return root


@pytest.fixture(scope="module")
def report(bundle_dir):
    return check(bundle_dir)


def _cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_machine_facts_are_what_each_library_reports(report) -> None:
    facts = report.machine
    assert list(facts) == ["python", "gpmask", "torch", "onnxruntime", "openvino", "tensorrt",
                           "gpu", "cuda", "cpu"]
    assert facts["python"]["version"] == platform.python_version()
    assert facts["gpmask"]["version"] == gpmask.__version__
    assert facts["torch"] == {"version": importlib.metadata.version("torch")}
    runtime = facts["onnxruntime"]
    assert runtime["version"] == ort.__version__
    assert runtime["providers_listed"] == ort.get_available_providers()
    assert "CPUExecutionProvider" in runtime["providers_working"]
    for kind, name in PROVIDERS.items():  # listed ones either work or say why not
        if name in runtime["providers_listed"]:
            assert (name in runtime["providers_working"]) == (provider_problem(kind, 0) is None)
            assert runtime["providers_failing"].get(name) == provider_problem(kind, 0)
    assert facts["cpu"]["flags"] == [f for f in NOTABLE_CPU_FLAGS if f in _cpuinfo_flags()]
    if gpu_problem(0):
        assert facts["gpu"] == {"problem": gpu_problem(0)}
    else:
        from gpmask.host import gpu

        assert (facts["gpu"]["name"], facts["gpu"]["compute_capability"]) == \
            (gpu(0).name, gpu(0).compute_capability)
    if tensorrt_problem():
        assert facts["tensorrt"] == {"problem": tensorrt_problem()}
    else:
        from gpmask.host import tensorrt_module

        assert facts["tensorrt"]["version"] == tensorrt_module().__version__
        assert facts["tensorrt"]["builder"] == (tensorrt_problem(builder=True) is None)


def test_openvino_devices_and_capabilities(report) -> None:
    ov = pytest.importorskip("openvino", reason="OpenVINO publishes no wheel for this platform")
    core = ov.Core()
    assert report.machine["openvino"] == {
        "version": ov.__version__, "devices": core.available_devices,
        "cpu": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "cpu_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}


def test_every_pair_that_runs_runs_and_every_other_is_refused_with_its_reason(
        report, bundle_dir) -> None:
    """The report covers every registered backend x every precision; loading each pair
    confirms it: a frame through those that run, the reported refusal from the rest."""
    assert [(p.backend, p.precision) for p in report.pairs] == [
        (spec.name, precision) for spec in REGISTRY
        for precision in [*spec.precisions, *(n for n in NAMES if n not in spec.precisions)]]
    frame = np.random.default_rng(0).random((20, 24, 3), dtype=np.float32)
    running = []
    for pair in report.pairs:
        if pair.runs:
            with Restorer(bundle_dir, backend=pair.backend, precision=pair.precision) as loaded:
                assert loaded.restore(frame, "rain").shape == frame.shape
            running.append((pair.backend, pair.precision))
        else:
            with pytest.raises(GpmaskError) as caught:
                Restorer(bundle_dir, backend=pair.backend, precision=pair.precision).close()
            assert pair.reason in str(caught.value), pair
    assert ("onnxruntime-cpu", "fp32") in running  # the bundle has fp32 graphs only
    assert all(precision in ("fp32", "bf16") for _, precision in running)
    with Restorer(bundle_dir) as auto:
        assert report.auto == {"backend": auto.backend_name, "precision": auto.precision,
                               "reason": auto.choice.reason}


def test_a_pair_outside_the_quality_budget_runs_but_auto_skips_it(bundle_dir) -> None:
    bundle = Bundle.open(bundle_dir)
    for weather in bundle.networks:
        record = {**bundle.manifest["graphs"][weather]["fp32"]}
        record["quality"] = vars(GraphQuality(40.0, 0.5, 0.3, False))
        bundle.manifest["graphs"][weather]["int8-cpu"] = record
    pair = next(p for p in check(bundle).pairs
                if (p.backend, p.precision) == ("onnxruntime-cpu", "int8-cpu"))
    assert pair.runs and pair.auto_skips == ("its rain graph misses the quality budget "
                                             "(drop 0.50 dB > 0.3 dB)")


def test_the_command_prints_the_report_as_text_and_json(report, bundle_dir, capsys) -> None:
    assert main(["check", str(bundle_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = report.to_dict()
    assert printed["bundle"] == expected["bundle"]
    assert {key: printed[key] for key in ("python", "gpmask", "torch", "cpu")} == \
        {key: expected[key] for key in ("python", "gpmask", "torch", "cpu")}
    assert printed["onnxruntime"] == expected["onnxruntime"]
    assert main(["check", str(bundle_dir)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith(f"Python        {platform.python_version()}")
    assert f"bundle {bundle_dir} (backends in the order auto tries them):" in text
    assert any(line.split() == ["onnxruntime-cpu", "fp32", "runs"] for line in text)
    chosen = [line for line in text if line.endswith("(auto's choice)")]
    assert len(chosen) == 1 and chosen[0].split()[:2] == [report.auto["backend"],
                                                          report.auto["precision"]]
    assert main(["check"]) == 0
    assert "bundle" not in capsys.readouterr().out
    assert main(["check", str(bundle_dir / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"gpmask: error: {bundle_dir / 'missing'} is not a gpmask bundle (no " \
                  f"manifest.json)\n"
