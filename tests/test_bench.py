"""gpmask bench: a real run at a tiny size, checked for schema and internal consistency."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from gpmask.bench import run_benchmark
from gpmask.bench.stats import latency_summary
from gpmask.errors import GpmaskError
from gpmask.host import gpu_problem, tensorrt_problem
from gpmask.sizes import parse_size
from tests.conftest import make_checkpoint

SIZES = ["32x32", "36x40"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """A small three-weather bundle exported from a checkpoint file, and that file."""
    from gpmask.export import export_bundle

    folder = tmp_path_factory.mktemp("bench")
    checkpoint = folder / "model.gpmask.safetensors"
    make_checkpoint().save(checkpoint)
    export_bundle(checkpoint, folder / "bundle", verify=False, progress=False)
    return folder / "bundle", checkpoint


@pytest.fixture(scope="module")
def report(exported) -> dict:
    bundle, checkpoint = exported
    return run_benchmark(bundle, backends=["torch", "onnxruntime-cpu", "onnxruntime-cuda",
                                           "tensorrt"],
                         precisions=["fp32", "int8"], sizes=SIZES, iters=3, warmup=1,
                         checkpoint=str(checkpoint), progress=False)


def _entries(report: dict):
    for record in report["results"]:
        for entry in record["sizes"]:
            yield record, entry


def test_latency_summary_matches_hand_computation() -> None:
    summary = latency_summary([4.0, 1.0, 3.0, 2.0])
    assert summary["p50_ms"] == pytest.approx(2.5)
    assert summary["p90_ms"] == pytest.approx(3.7)  # linear: 3 + 0.7 * (4 - 3)
    assert summary["mean_ms"] == pytest.approx(2.5)
    assert summary["fps"] == pytest.approx(400.0)
    assert (summary["min_ms"], summary["max_ms"], summary["iterations"]) == (1.0, 4.0, 4)
    with pytest.raises(GpmaskError, match="no timed iterations"):
        latency_summary([])


def test_report_schema_and_machine(report) -> None:
    assert report["schema"] == 1
    for key in ("bundle", "settings", "machine", "versions", "reference", "macs", "results",
                "skipped"):
        assert key in report
    assert report["versions"]["onnxruntime"] == onnxruntime.__version__
    machine = report["machine"]
    assert machine["threads"] == report["settings"]["threads"] >= 1
    assert machine["cpu"] and machine["physical_cores"] >= 1
    assert machine["matmul_peak_gflops"]["cpu"] > 0
    assert [r["label"] for r in report["results"]][:2] == ["torch/fp32", "onnxruntime-cpu/fp32"]
    assert report["reference"] == {"latency": "torch/fp32", "quality": "torch/fp32"}
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or Infinity
    for record, entry in _entries(report):
        assert [e["size"] for e in record["sizes"]] == SIZES
        assert entry["latency"]["iterations"] == 3


def test_percentiles_ordered_and_fps_from_mean(report) -> None:
    for _, entry in _entries(report):
        for latency in (entry["latency"], entry["switching"]["latency"]):
            assert latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] \
                <= latency["p99_ms"] <= latency["max_ms"]
            assert latency["min_ms"] <= latency["mean_ms"] <= latency["max_ms"]
            assert latency["fps"] == pytest.approx(1000 / latency["mean_ms"])


def test_ratios_come_from_the_same_run(report) -> None:
    torch_p50 = {e["size"]: e["latency"]["p50_ms"] for r, e in _entries(report)
                 if r["backend"] == "torch"}
    peak = report["machine"]["matmul_peak_gflops"]["cpu"]
    for _, entry in _entries(report):
        p50 = entry["latency"]["p50_ms"]
        assert entry["vs_torch"] == pytest.approx(p50 / torch_p50[entry["size"]])
        switching = entry["switching"]
        assert switching["ratio"] == pytest.approx(switching["latency"]["p50_ms"] / p50)
        work = entry["work"]
        assert work["macs"] == report["macs"][entry["size"]]
        assert work["gflops"] == pytest.approx(2 * work["macs"] / (p50 / 1000) / 1e9)
        assert work["roofline_fraction"] == pytest.approx(work["gflops"] / peak)


def test_quality_against_torch(report) -> None:
    by_label = {r["label"]: r for r in report["results"]}
    assert all(e["psnr_db"] == "inf" for e in by_label["torch/fp32"]["sizes"])
    # The fp32 graph is the torch network exported: equal up to float rounding.
    assert all(e["psnr_db"] > 60 for e in by_label["onnxruntime-cpu/fp32"]["sizes"])


def test_memory_and_cold_start(report) -> None:
    for record in report["results"]:
        memory = record["memory"]
        assert memory["peak_rss_mib"] >= memory["rss_before_load_mib"] > 0
        if record["device"] == "cpu":
            assert memory["device_memory_mib"] is None
        assert 0 < record["load_s"] <= record["cold_start_s"]
        assert record["cold_start_size"] == SIZES[0]


def test_torch_references_are_gpu_targets_where_torch_has_cuda(monkeypatch) -> None:
    """The torch references run on cuda:0 when torch sees a GPU, and are then measured as
    GPU targets (device memory read); test_memory_and_cold_start expects no device
    memory for CPU targets only."""
    import gpmask.bench.torch_reference as torch_reference
    from gpmask.bench.measure import target_device
    from gpmask.bench.targets import Target, reference_specs

    for device, kind in (("cuda:0", "gpu"), ("cpu", "cpu")):
        monkeypatch.setattr(torch_reference, "torch_device", lambda d=device: d)
        specs = reference_specs(None, "no checkpoint", 1)
        assert specs["torch"].device == specs["torch-compile"].device == kind
        assert target_device(Target(specs["torch"], "fp32")) == device
        assert specs["openvino-default"].device == "cpu"


def test_missing_backends_and_precisions_are_skipped_with_reasons(report, exported) -> None:
    lines = [skip["line"] for skip in report["skipped"]]
    assert f"int8: bundle {exported[0]} has no int8 graphs; run gpmask calibrate " \
           f"{exported[0]} --precision int8" in lines
    assert not any(r["precision"] == "int8" for r in report["results"])
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert "onnxruntime-cuda: this ONNX Runtime has no CUDAExecutionProvider " \
               "(install onnxruntime-gpu)" in lines
    if tensorrt_problem() or gpu_problem(0):  # TensorRT's lean runtime without a GPU too
        assert f"tensorrt: {tensorrt_problem() or gpu_problem(0)}" in lines


def test_torch_skipped_when_bundle_checkpoint_is_not_found(exported, tmp_path) -> None:
    bundle = shutil.copytree(exported[0], tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["checkpoint"]["sha256"] = "0" * 64
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = run_benchmark(bundle, backends=["torch", "onnxruntime-cpu"], precisions=["fp32"],
                           sizes=["32x32"], iters=1, warmup=0, progress=False)
    assert [r["label"] for r in result["results"]] == ["onnxruntime-cpu/fp32"]
    assert result["skipped"][0]["line"].startswith("torch: the bundle's checkpoint (sha256 "
                                                   "000000000000...) is not the shipped demo")
    assert result["results"][0]["sizes"][0]["vs_torch"] is None
    assert result["reference"] == {"latency": None, "quality": "onnxruntime-cpu/fp32"}


def test_bad_input_is_refused(exported, tmp_path) -> None:
    bundle, _ = exported
    with pytest.raises(GpmaskError, match="is not a gpmask bundle"):
        run_benchmark(tmp_path / "missing", progress=False)
    with pytest.raises(GpmaskError, match="is not HxW"):
        parse_size("32by32")
    with pytest.raises(GpmaskError, match="unknown backend 'onnx'"):
        run_benchmark(bundle, backends=["onnx"], sizes=["32x32"], progress=False)
    other = tmp_path / "other.gpmask.safetensors"
    make_checkpoint(seed=1).save(other)
    with pytest.raises(GpmaskError, match="is not the one bundle .* was exported from"):
        run_benchmark(bundle, checkpoint=str(other), sizes=["32x32"], progress=False)
    with pytest.raises(GpmaskError, match="--iters must be >= 1"):
        run_benchmark(bundle, iters=0, progress=False)


def test_cli_writes_report_json_markdown_and_plots(exported, tmp_path, capsys) -> None:
    import cv2

    from gpmask.cli import main

    bundle, checkpoint = exported
    out = tmp_path / "report"
    code = main(["bench", str(bundle), "--backends", "torch,onnxruntime-cpu", "--precisions",
                 "fp32,fp16", "--sizes", "32x32", "--iters", "2", "--warmup", "0",
                 "--checkpoint", str(checkpoint), "-o", str(out), "--no-progress"])
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert [r["label"] for r in report["results"]] == ["torch/fp32", "onnxruntime-cpu/fp32"]
    table = (out / "bench.md").read_text()
    assert "| onnxruntime-cpu | fp32 | 32x32 |" in table
    assert f"- fp16: bundle {bundle} has no fp16 graphs" in table
    assert "| onnxruntime-cpu | fp32 | 32x32 |" in capsys.readouterr().out
    for name in ("latency_by_size.png", "quality_vs_speed.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["bench.json", "bench.md", "latency_by_size.png", "quality_vs_speed.png"])


def test_cli_bad_bundle_is_one_error_line(tmp_path, capsys) -> None:
    from gpmask.cli import main

    assert main(["bench", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"gpmask: error: {tmp_path / 'nowhere'} is not a gpmask bundle (no " \
                  "manifest.json)\n"
    assert not (tmp_path / "out").exists()


def test_psnr_inf_only_for_identical(report) -> None:
    values = [e["psnr_db"] for _, e in _entries(report) if e["psnr_db"] != "inf"]
    assert values and all(math.isfinite(v) for v in values)
    assert np.isfinite(values).all()


def test_openvino_targets_report_limit_fractions_and_skip_bf16_with_a_reason(exported) -> None:
    from gpmask.runtime.backends.openvino import precision_refusal

    bundle, _ = exported
    result = run_benchmark(bundle, backends=["onnxruntime-cpu", "openvino", "openvino-default"],
                           precisions=["fp32", "bf16"], sizes=["32x32"], iters=2, warmup=0,
                           progress=False)
    labels = [r["label"] for r in result["results"]]
    # The quality reference first, then the other references, then the backends as asked.
    assert labels[:3] == ["onnxruntime-cpu/fp32", "openvino-default/fp32", "openvino/fp32"]
    assert result["reference"]["quality"] == "onnxruntime-cpu/fp32"  # not OpenVINO's default
    refusal = precision_refusal("bf16")
    if refusal:
        assert f"openvino bf16: {refusal}" in [s["line"] for s in result["skipped"]]
    else:
        assert "openvino/bf16" in labels
    assert result["settings"]["openvino_compile"]["performance_hint"] == "LATENCY"
    limits = result["machine"]["instruction_limits"]
    for record in result["results"]:
        assert record["inference_precision"] in (("f32", "bf16") if "openvino" in
                                                 record["backend"] else (None,))
        for entry in record["sizes"]:
            limit = entry["work"]["limit"]
            expected = "bf16" if record["inference_precision"] == "bf16" else "fp32"
            assert limit["precision"] == expected
            gops = limits[expected]["gops"]
            if gops:
                assert limit["fraction"] == pytest.approx(entry["work"]["gflops"] / gops)
            else:
                assert limit["fraction"] is None and limits[expected]["reason"]
            assert entry["psnr_db"] == "inf" or entry["psnr_db"] > 60  # all fp32 here


def test_instruction_loops_count_their_operations() -> None:
    """Each kernel's ops per iteration, recounted from its assembly text."""
    import re

    from gpmask.bench.instruction_limit import KERNELS

    # AMX: a 16x16 tile of sums of 32 bf16 (64 u8*s8) products, two ops each
    ops = {"vfmadd231ps %%zmm": 32, "vfmadd231ps %%ymm": 16, "vdpbf16ps %%zmm": 64,
           "vpdpbusd %%zmm": 128, "{vex} vpdpbusd %%ymm": 64, "vpmaddubsw %%ymm": 64,
           "tdpbf16ps %%tmm": 2 * 16 * 16 * 32, "tdpbusd %%tmm": 2 * 16 * 16 * 64}
    for kernels in KERNELS.values():
        for kernel in kernels:
            counted = sum(len(re.findall(re.escape('"' + mnemonic), kernel.body)) * per
                          for mnemonic, per in ops.items())
            assert counted == kernel.ops_per_iteration, kernel.instruction


def test_instruction_limits_measured_or_skipped_with_reasons(monkeypatch) -> None:
    from gpmask.bench import instruction_limit

    flags = instruction_limit.cpu_flags() or set()
    limits = instruction_limit.instruction_limits(1, 0.05)
    assert set(limits) == {"fp32", "bf16", "int8"}
    for precision, limit in limits.items():
        available = [k for k in instruction_limit.KERNELS[precision] if k.cpu_flag in flags]
        if available and instruction_limit.platform.machine() == "x86_64":
            assert limit.instruction == available[0].instruction and limit.gops > 0
            assert limit.reason is None
        else:
            assert limit.gops is None and limit.reason
    monkeypatch.setattr(instruction_limit, "cpu_flags", lambda: {"fma", "avx2"})
    instruction_limit.instruction_limits.cache_clear()
    bare = instruction_limit.instruction_limits(1, 0.05)
    assert bare["bf16"].reason == "this CPU lacks amx_bf16 or avx512_bf16"
    monkeypatch.setattr(instruction_limit.shutil, "which", lambda name: None)
    instruction_limit.instruction_limits.cache_clear()
    no_compiler = instruction_limit.instruction_limits(1, 0.05)
    assert all(v.reason == "no C compiler (cc or gcc) to build the instruction loop"
               for v in no_compiler.values())
    instruction_limit.instruction_limits.cache_clear()


def test_best_limits_keeps_each_precisions_fastest_measurement() -> None:
    """A VM's two CPUs on one physical core halve the loop's rate: the higher measurement
    wins per precision, and a precision measured nowhere stays unmeasured with its reason."""
    from gpmask.bench.instruction_limit import InstructionLimit, best_limits

    def limits(fp32: float, int8: float) -> dict:
        return {"fp32": InstructionLimit("fp32", "vfmadd231ps ymm", fp32, 2),
                "bf16": InstructionLimit("bf16", None, None, 2, "this CPU lacks amx_bf16"),
                "int8": InstructionLimit("int8", "vpmaddubsw", int8, 2)}

    best = best_limits(limits(95.0, 380.0), limits(190.0, 191.0))
    assert (best["fp32"].gops, best["int8"].gops) == (190.0, 380.0)
    assert best["bf16"].gops is None and best["bf16"].reason == "this CPU lacks amx_bf16"


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_amx_tile_loops_build_and_run_their_instruction(precision, tmp_path) -> None:
    """Where a CPU has AMX its tile instructions are the bf16 and int8 limit; the loop is
    checked to build into exactly those instructions on any x86 machine with a compiler
    (it can only run where the CPU has AMX)."""
    import platform
    import shutil
    import subprocess

    from gpmask.bench import instruction_limit

    compiler, objdump = shutil.which("cc") or shutil.which("gcc"), shutil.which("objdump")
    if platform.machine() != "x86_64" or not compiler or not objdump:
        pytest.skip("needs an x86_64 machine with a C compiler and objdump")
    kernel = instruction_limit.KERNELS[precision][0]
    assert kernel.cpu_flag == f"amx_{precision}"
    source, binary = tmp_path / "loop.c", tmp_path / "loop"
    source.write_text(instruction_limit._source(kernel))
    subprocess.run([compiler, "-O1", "-pthread", *kernel.compiler_flags, str(source), "-o",
                    str(binary)], check=True, capture_output=True)
    code = subprocess.run([objdump, "-d", str(binary)], capture_output=True, text=True).stdout
    name = kernel.instruction.split()[0]
    assert code.count(f"{name} ") == 4 and "ldtilecfg" in code and "tilerelease" in code
    assert kernel.ops_per_iteration == 4 * 2 * 16 * 16 * (32 if precision == "bf16" else 64)


@pytest.mark.slow
def test_torch_compile_reference_matches_eager_and_switches_without_recompiling() -> None:
    import torch

    from gpmask.bench.torch_reference import (
        TorchCompileBackend,
        TorchEagerBackend,
        torch_compile_refusal,
    )

    if torch_compile_refusal():
        pytest.skip(torch_compile_refusal())
    checkpoint = make_checkpoint()
    weathers = ["rain", "snow"]
    eager = TorchEagerBackend(checkpoint, weathers, "cpu", 1)
    compiled = TorchCompileBackend(checkpoint, weathers, "cpu", 1)
    batch = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    outputs = {}
    for weather in ("rain", "snow", "rain"):
        outputs[weather] = compiled.run(weather, batch)
        np.testing.assert_allclose(outputs[weather], eager.run(weather, batch), atol=1e-4)
    assert np.abs(outputs["rain"] - outputs["snow"]).max() > 1e-3
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # one for both weathers


def test_auto_benchmarks_each_backend_at_the_precision_auto_takes(exported, tmp_path) -> None:
    """The bench's default: each backend at what ``--precision auto`` takes there, which a
    calibrated bundle makes its int8 graph; a precision also named is measured once."""
    import shutil

    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle

    bundle = Path(shutil.copytree(exported[0], tmp_path / "bundle"))
    calibrate_bundle(bundle, "int8-cpu", CalibrationOptions(
        max_psnr_drop=100, synthetic=2, calibration_size=(32, 32), eval_size=(32, 32)))
    result = run_benchmark(bundle, backends=["onnxruntime-cpu"], precisions=["auto", "fp32"],
                           sizes=["32x32"], iters=1, warmup=0, progress=False)
    # the fp32 target first: it is the quality reference
    assert [(r["label"], r["auto"]) for r in result["results"]] == [
        ("onnxruntime-cpu/fp32", False), ("onnxruntime-cpu/int8-cpu", True)]
    again = run_benchmark(bundle, backends=["onnxruntime-cpu"], precisions=["auto", "int8-cpu"],
                          sizes=["32x32"], iters=1, warmup=0, progress=False)
    assert [r["label"] for r in again["results"]] == ["onnxruntime-cpu/int8-cpu"]
