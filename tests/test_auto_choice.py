"""``--precision auto`` and ``--backend auto``: what is chosen for each bundle on each machine.

One table: what the bundle holds (graphs per precision, whether their calibration fit the
budget, TensorRT engines), what the machine has (CPU bfloat16, a GPU with TensorRT, the
CUDA provider), the backend asked for, and the backend and precision that must be
chosen. The machine is described to the registry's specs by monkeypatching the host
queries they make; the bundle is a real export whose manifest gains records of the
graphs and engines a row names (never read: choosing reads the manifest only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest

import gpmask.runtime.backends.onnxruntime as ort_backend
import gpmask.runtime.backends.openvino as openvino_backend
import gpmask.runtime.backends.tensorrt as tensorrt_backend
from gpmask.bundle import Bundle, EngineTarget, GraphQuality
from gpmask.errors import GpmaskError
from gpmask.runtime.backends import choose
from tests.conftest import make_checkpoint

TARGET = EngineTarget("10.3.0", "Orin", "8.7")


@dataclass(frozen=True)
class Machine:
    """What the host queries answer."""

    bf16: bool = False
    tensorrt: bool = False
    cuda: bool = False


AVX2 = Machine()
AMX = Machine(bf16=True)
JETSON = Machine(tensorrt=True, cuda=True)
GPU_NO_TENSORRT = Machine(cuda=True)


@dataclass(frozen=True)
class Case:
    name: str
    machine: Machine
    expected: tuple[str, str]
    graphs: tuple[str, ...] = ()
    missed_budget: tuple[str, ...] = ()
    engines: tuple[str, ...] = ()
    engine_networks: tuple[str, ...] | None = None  # None: every network
    backend: str = "auto"
    precision: str = "auto"
    note: str = field(default="", compare=False)


CASES = [
    Case("fresh-avx2", AVX2, ("openvino", "fp32")),
    Case("fresh-amx", AMX, ("openvino", "bf16"), note="bf16 where the CPU has it"),
    Case("fresh-ort", AVX2, ("onnxruntime-cpu", "fp32"), backend="onnxruntime-cpu"),
    Case("calibrated-openvino", AVX2, ("openvino", "int8-openvino"),
         graphs=("int8", "int8-cpu", "int8-openvino")),
    Case("calibrated-amx", AMX, ("openvino", "int8-openvino"),
         graphs=("int8-openvino",), note="int8 before bf16"),
    Case("only-tensorrt-int8", AMX, ("openvino", "int8"), graphs=("int8",)),
    Case("ort-takes-its-int8", AVX2, ("onnxruntime-cpu", "int8-cpu"),
         graphs=("int8", "int8-cpu", "int8-openvino"), backend="onnxruntime-cpu"),
    Case("ort-never-auto-picks-s8s8", AVX2, ("onnxruntime-cpu", "fp32"), graphs=("int8",),
         backend="onnxruntime", note="symmetric int8 is slower than fp32 on ORT's CPU"),
    Case("budget-missed", AVX2, ("openvino", "int8"), graphs=("int8", "int8-openvino"),
         missed_budget=("int8-openvino",)),
    Case("budget-missed-everywhere", AMX, ("openvino", "bf16"), graphs=("int8-openvino",),
         missed_budget=("int8-openvino",)),
    Case("asked-precision-wins", AVX2, ("openvino", "int8-openvino"),
         graphs=("int8-openvino",), missed_budget=("int8-openvino",),
         precision="int8-openvino"),
    Case("engines-just-built", JETSON, ("tensorrt", "fp16"), graphs=("fp16",),
         engines=("fp16",), note="build's default fp16 is what run's auto takes"),
    Case("int8-engines-first", JETSON, ("tensorrt", "int8"), graphs=("fp16", "int8"),
         engines=("fp16", "int8")),
    Case("engines-for-some-weathers", JETSON, ("onnxruntime-cuda", "fp16"), graphs=("fp16",),
         engines=("fp16",), engine_networks=("rain",)),
    Case("no-engines", JETSON, ("onnxruntime-cuda", "fp32")),
    Case("cuda-without-tensorrt", GPU_NO_TENSORRT, ("onnxruntime-cuda", "fp16"),
         graphs=("fp16",), engines=("fp16",)),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Bundle:
    from gpmask.export import export_bundle

    return export_bundle(make_checkpoint(), tmp_path_factory.mktemp("auto") / "bundle",
                         verify=False, progress=False)


def _bundle(exported: Bundle, case: Case) -> Bundle:
    manifest = copy.deepcopy(exported.manifest)
    for weather in exported.networks:
        fp32 = manifest["graphs"][weather]["fp32"]
        for precision in case.graphs:
            missed = precision in case.missed_budget and weather == "snow"
            quality = GraphQuality(42.0, 0.6 if missed else 0.1, 0.3, not missed)
            manifest["graphs"][weather][precision] = {**fp32, "quality": vars(quality)}
    networks = exported.networks if case.engine_networks is None else case.engine_networks
    manifest["engines"] = {w: {p: {"path": f"engines/{w}.{p}.engine", "sha256": "0" * 64,
                                   "tensorrt_version": TARGET.tensorrt_version,
                                   "gpu": TARGET.gpu,
                                   "compute_capability": TARGET.compute_capability}
                               for p in case.engines} for w in networks}
    return Bundle(exported.root, manifest)


def _describe(machine: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    capabilities = ["FP32", "INT8", *(["BF16"] if machine.bf16 else [])]
    monkeypatch.setattr(openvino_backend, "cpu_capabilities", lambda: capabilities)
    gpu = None if machine.cuda else "no NVIDIA GPU visible (the CUDA driver reports no device)"
    monkeypatch.setattr(tensorrt_backend, "tensorrt_problem",
                        lambda: None if machine.tensorrt else "the tensorrt package cannot be "
                                                              "imported")
    monkeypatch.setattr(tensorrt_backend, "gpu_problem", lambda device: gpu)
    monkeypatch.setattr(tensorrt_backend, "tensorrt_target", lambda device: TARGET)
    monkeypatch.setattr(ort_backend, "available_providers",
                        lambda: ["cuda", "cpu"] if machine.cuda else ["cpu"])
    monkeypatch.setattr(ort_backend, "gpu_problem", lambda device: gpu)
    # a provider the build lists starts a session on a machine described with a GPU
    monkeypatch.setattr(ort_backend, "provider_start", lambda kind, device: None)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_auto_chooses_the_fastest_this_bundle_and_machine_offer(exported, case, monkeypatch):
    _describe(case.machine, monkeypatch)
    choice = choose(_bundle(exported, case), case.backend, case.precision)
    assert (choice.spec.name, choice.precision) == case.expected, choice.reason
    assert choice.reason.startswith(f"backend {case.expected[0]} (")
    assert f"precision {case.expected[1]} (" in choice.reason


def test_the_reason_names_what_was_passed_over(exported, monkeypatch):
    _describe(AVX2, monkeypatch)
    case = Case("budget", AVX2, ("openvino", "int8"), graphs=("int8", "int8-openvino"),
                missed_budget=("int8-openvino",))
    reason = choose(_bundle(exported, case)).reason
    assert "tensorrt: the tensorrt package cannot be imported" in reason
    assert ("int8-openvino: its snow graph misses the quality budget (drop 0.60 dB > 0.3 dB)"
            in reason)


def test_a_precision_nothing_runs_is_refused_with_every_reason(exported, monkeypatch):
    _describe(AVX2, monkeypatch)
    with pytest.raises(GpmaskError) as caught:
        choose(_bundle(exported, Case("x", AVX2, ("", ""))), "auto", "bf16")
    message = str(caught.value)
    assert message.startswith(f"no backend can run {exported.root} at precision bf16 here (")
    assert "openvino: this CPU has no bfloat16 arithmetic" in message
    assert "onnxruntime-cpu: bf16 has no graphs of its own" in message
