"""A three-weather dense-layout bundle, checked with stock tools: sharing, numerics, manifest,
readers (the compact layout: tests/test_export_compact.py)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from gpmask.bundle.summary import describe_bundle, format_bytes
from gpmask.cli import main
from gpmask.export import export_bundle
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.model import build_model
from tests.conftest import make_checkpoint


def partly_shared_checkpoint(weathers: tuple[str, ...], seed: int = 0) -> MaskedCheckpoint:
    """A random checkpoint whose biases and first encoder level have no specific elements,
    so those tensors are identical in every weather's graph."""
    full = make_checkpoint(weathers, seed=seed)

    def keep(name: str) -> bool:
        return not (name.endswith(".bias") or name.startswith("enc1."))

    masks = {w: {n: m for n, m in full.masks[w].items() if keep(n)} for w in weathers}
    specific = {w: {n: v for n, v in full.specific[w].items() if keep(n)} for w in weathers}
    return MaskedCheckpoint(full.arch, full.arch_kwargs, full.common, masks, specific,
                            full.provenance, weathers=list(weathers))


def reference_model(checkpoint: MaskedCheckpoint, weather: str) -> torch.nn.Module:
    """The weather's network baked here with torch indexing (not MaskedCheckpoint.bake)."""
    state = {name: torch.tensor(value) for name, value in checkpoint.common.items()}
    if weather != "common":
        for name, mask in checkpoint.masks[weather].items():
            values = torch.from_numpy(checkpoint.specific[weather][name])
            state[name][torch.from_numpy(mask)] = values
    model = build_model(checkpoint.arch, checkpoint.arch_kwargs)
    model.load_state_dict(state)
    return model.eval()


def assert_graph_matches_torch(graph: Path, model: torch.nn.Module, shape: tuple) -> None:
    """ONNX Runtime on ``graph`` vs ``model`` on one random input, within 1e-4."""
    image = np.random.default_rng(7).random(shape, dtype=np.float32)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (restored,) = session.run(["restored"], {"image": image})
    with torch.inference_mode():
        expected = model(torch.from_numpy(image)).numpy()
    assert restored.shape == expected.shape
    assert np.max(np.abs(restored - expected)) <= 1e-4


def initializer_records(graph: Path) -> dict[str, tuple[str, int, int]]:
    """Initializer name -> (location, offset, length) of its external data."""
    model = onnx.load(str(graph), load_external_data=False)
    records = {}
    for tensor in model.graph.initializer:
        assert tensor.data_location == onnx.TensorProto.EXTERNAL, tensor.name
        entry = {e.key: e.value for e in tensor.external_data}
        records[tensor.name] = (entry["location"], int(entry["offset"]), int(entry["length"]))
    return records


WEATHERS = ("rain", "raindrop", "snow")
GRAPHS = ("common", *WEATHERS)


CHECKPOINT_FILE = "model.gpmask.safetensors"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[MaskedCheckpoint, Path]:
    """The checkpoint, and its bundle exported from a file saved beside the bundle."""
    checkpoint = partly_shared_checkpoint(WEATHERS)
    folder = tmp_path_factory.mktemp("export")
    checkpoint.save(folder / CHECKPOINT_FILE)
    export_bundle(folder / CHECKPOINT_FILE, folder / "bundle", progress=False, layout="dense")
    return checkpoint, folder / "bundle"


def test_bundle_files_and_manifest_hashes(exported) -> None:
    checkpoint, bundle = exported
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert names == sorted(["manifest.json", "weights.bin", "reports/export.json",
                            *(f"{g}.onnx" for g in GRAPHS)])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["weathers"] == list(WEATHERS) and manifest["default_weather"] == "rain"
    assert manifest["input"]["name"] == "image" and manifest["output"]["name"] == "restored"
    assert manifest["input"]["size_multiple"] == 4
    assert manifest["input"]["shape"] == [None, 3, None, None]
    assert manifest["checkpoint"]["metadata"]["weathers"] == list(WEATHERS)
    assert manifest["verification"] == {"status": "passed", "report": "reports/export.json"}
    assert set(manifest["versions"]) >= {"gpmask", "torch", "onnx"}
    records = [*manifest["weights"], *(manifest["graphs"][g]["fp32"] for g in GRAPHS)]
    for record in records:
        digest = hashlib.sha256((bundle / record["path"]).read_bytes()).hexdigest()
        assert digest == record["sha256"], record["path"]
    assert manifest["weights"][0]["bytes"] == (bundle / "weights.bin").stat().st_size
    ckpt_bytes = (bundle.parent / CHECKPOINT_FILE).read_bytes()
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(ckpt_bytes).hexdigest()


def test_every_graph_points_into_one_weight_file_each_tensor_once(exported) -> None:
    checkpoint, bundle = exported
    records = {g: initializer_records(bundle / f"{g}.onnx") for g in GRAPHS}
    assert {loc for r in records.values() for loc, _, _ in r.values()} == {"weights.bin"}
    data = (bundle / "weights.bin").read_bytes()
    baked = {g: checkpoint.bake_numpy(g) for g in GRAPHS}
    regions: dict[bytes, set[tuple[int, int]]] = {}
    for graph, per_name in records.items():
        for name, (_, offset, length) in per_name.items():
            stored = data[offset:offset + length]
            if name in baked[graph]:  # a parameter: the weather's baked value
                assert stored == baked[graph][name].tobytes(), (graph, name)
            regions.setdefault(stored, set()).add((offset, length))
    assert all(len(places) == 1 for places in regions.values())  # identical -> one location
    shared = [n for n in records["rain"] if n.endswith(".bias")]
    assert shared and all(len({records[g][n] for g in GRAPHS}) == 1 for n in shared)
    specific = [n for n in records["rain"] if n in checkpoint.masks["rain"]]
    assert specific and all(len({records[g][n] for g in GRAPHS}) == 4 for n in specific)
    distinct = sum(len(b) for b in regions)
    assert distinct <= len(data) < distinct + 64 * len(regions)
    referenced = sum(length for r in records.values() for _, _, length in r.values())
    assert len(data) < referenced


def test_stock_onnx_reads_and_checks_every_graph(exported) -> None:
    checkpoint, bundle = exported
    for graph in GRAPHS:
        path = bundle / f"{graph}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=True)
        assert model.opset_import[0].version >= 17
        values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        baked = checkpoint.bake_numpy(graph)
        np.testing.assert_array_equal(values["head.weight"], baked["head.weight"])
        (image,), (restored,) = model.graph.input, model.graph.output
        assert (image.name, restored.name) == ("image", "restored")
        dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
        assert dims == ["batch", 3, "height", "width"]
        assert [d.dim_param or d.dim_value for d in restored.type.tensor_type.shape.dim] == dims


@pytest.mark.parametrize("graph", GRAPHS)
def test_onnxruntime_matches_independently_baked_torch(exported, graph: str) -> None:
    checkpoint, bundle = exported
    model = reference_model(checkpoint, graph)
    assert_graph_matches_torch(bundle / f"{graph}.onnx", model, (1, 3, 40, 56))
    assert_graph_matches_torch(bundle / f"{graph}.onnx", model, (3, 3, 24, 12))


def test_weathers_differ_from_each_other(exported) -> None:
    _, bundle = exported
    image = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    outputs = [ort.InferenceSession(str(bundle / f"{g}.onnx")).run(None, {"image": image})[0]
               for g in GRAPHS]
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert np.max(np.abs(outputs[i] - outputs[j])) > 1e-3


def test_verification_report_covers_every_graph_at_two_sizes(exported) -> None:
    _, bundle = exported
    report = json.loads((bundle / "reports/export.json").read_text())
    assert report["status"] == "passed" and report["tolerance"] == 1e-4
    assert list(report["graphs"]) == list(GRAPHS)
    for graph, entry in report["graphs"].items():
        assert entry["checker"] == "passed"
        weather = "rain" if graph == "common" else graph  # synthetic weather of the input
        names = [r["input"] for r in entry["inputs"]]
        assert names == ["random", f"{weather}-photo-a", f"{weather}-photo-b"]
        assert all(0 <= r["max_abs_error"] <= 1e-4 for r in entry["inputs"])
        assert len({tuple(r["shape"][2:]) for r in entry["inputs"]}) >= 2


def test_polygraphy_reads_a_graph(exported) -> None:
    _, bundle = exported
    result = subprocess.run(
        ["polygraphy", "inspect", "model", str(bundle / "snow.onnx"), "--show", "layers"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "image" in result.stdout and "restored" in result.stdout
    assert "Conv" in result.stdout
    result = subprocess.run(
        ["polygraphy", "run", str(bundle / "rain.onnx"), "--onnxrt",
         "--input-shapes", "image:[1,3,32,24]"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored [dtype=float32, shape=(1, 3, 32, 24)]" in result.stdout
    assert "PASSED" in result.stdout


def test_describe_bundle_reports_sharing(exported) -> None:
    _, bundle = exported
    text = describe_bundle(bundle)
    stored = (bundle / "weights.bin").stat().st_size
    referenced = sum(length for g in GRAPHS
                     for _, _, length in initializer_records(bundle / f"{g}.onnx").values())
    assert "rain, raindrop, snow (default rain)" in text
    assert f"fp32: {format_bytes(stored)} stored in weights.bin" in text
    assert f"for {format_bytes(referenced)} referenced by the graphs" in text
    independent = sum(
        (bundle / f"{w}.onnx").stat().st_size
        + sum(length for _, _, length in initializer_records(bundle / f"{w}.onnx").values())
        for w in WEATHERS
    )
    total = stored + sum((bundle / f"{g}.onnx").stat().st_size for g in GRAPHS)
    assert (f"bundle {format_bytes(total)} (with common) vs 3 single-weather exports "
            f"{format_bytes(independent)} ({total / independent:.2f}x)") in text
    assert "verification  passed (reports/export.json); every file matches" in text
    for graph in GRAPHS:
        assert f"{graph}.onnx" in text


def test_inspect_verb_prints_the_summary_and_spots_damage(exported, tmp_path, capsys) -> None:
    _, bundle = exported
    assert main(["inspect", str(bundle)]) == 0
    assert capsys.readouterr().out.strip() == describe_bundle(bundle)
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    data = bytearray((damaged / "weights.bin").read_bytes())
    data[0] ^= 0xFF
    (damaged / "weights.bin").write_bytes(bytes(data))
    assert ("DAMAGED: bundle file weights.bin does not match its manifest sha256"
            in describe_bundle(damaged))


def test_inspect_json_of_a_bundle_gives_the_same_figures_as_data(exported, capsys) -> None:
    _, bundle = exported
    assert main(["inspect", str(bundle), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["weathers"] == list(WEATHERS)
    assert summary["damage"] is None
    assert {(row["weather"], row["file"]) for row in summary["graphs"]} == {
        (g, f"{g}.onnx") for g in GRAPHS}
    fp32 = summary["sharing"]["fp32"]
    assert fp32["stored_bytes"] == (bundle / "weights.bin").stat().st_size
    assert fp32["referenced_bytes"] == sum(
        length for g in GRAPHS
        for _, _, length in initializer_records(bundle / f"{g}.onnx").values())
    assert summary["weight_files"] == {"weights.bin": fp32["stored_bytes"]}


def test_describe_bundle_names_a_missing_graph(exported, tmp_path) -> None:
    _, bundle = exported
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    (copy / "snow.onnx").unlink()
    text = describe_bundle(copy)
    assert re.search(r"\n  snow +fp32 +- +snow\.onnx +MISSING +- +- +-\n", text)
    assert "DAMAGED: bundle file snow.onnx is missing" in text
