"""Any number of weathers with any names, a subset of weathers, and a static input shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from gpmask.bundle import Bundle
from gpmask.export import export_bundle
from gpmask.graph.fold import fold_rebuild
from tests.conftest import make_checkpoint
from tests.test_export import assert_graph_matches_torch, reference_model


class BatchNormNet(nn.Module):
    """Conv then BatchNorm: the exporter's optimizer fuses the two unless told not to."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + self.bn(self.conv(image))


@pytest.mark.parametrize(
    "weathers",
    [("haze",), ("fog", "sand", "night-rain", "hail_2", "Dust")],
    ids=["one-weather", "five-weathers"],
)
def test_any_weathers_export_and_match_torch(tmp_path: Path, weathers) -> None:
    checkpoint = make_checkpoint(weathers, seed=len(weathers))
    bundle = export_bundle(checkpoint, tmp_path / "bundle", progress=False)
    assert bundle.weathers == list(weathers)
    assert sorted(bundle.manifest["graphs"]) == sorted(["common", *weathers])
    assert bundle.manifest["checkpoint"]["sha256"] is None  # exported from memory
    report = json.loads((bundle.root / "reports/export.json").read_text())
    assert list(report["graphs"]) == ["common", *weathers]
    inputs = [r["input"] for r in report["graphs"][weathers[-1]]["inputs"]]
    assert inputs == ["random", "rain-photo-a", "rain-photo-b"]  # no renderer: rain
    locations = set()
    for weather in ["common", *weathers]:
        path = bundle.graph_path(weather)
        graph = onnx.load(str(path), load_external_data=False)
        locations |= {e.value for t in graph.graph.initializer for e in t.external_data
                      if e.key == "location"}
        assert_graph_matches_torch(path, reference_model(checkpoint, weather), (1, 3, 36, 20))
    assert locations == {"weights.bin"}
    bundle.verify()


def test_weather_subset_keeps_checkpoint_order(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(("rain", "raindrop", "snow"))
    bundle = export_bundle(checkpoint, tmp_path / "bundle", weathers="snow, rain",
                           verify=False, progress=False)
    reopened = Bundle.open(tmp_path / "bundle")
    assert reopened.weathers == ["rain", "snow"] and reopened.default_weather == "rain"
    assert sorted(p.name for p in bundle.root.glob("*.onnx")) == [
        "common.onnx", "rain.onnx", "snow.onnx"]
    assert reopened.manifest["verification"] == {"status": "skipped"}
    assert not (bundle.root / "reports").exists()
    assert_graph_matches_torch(bundle.graph_path("snow"), reference_model(checkpoint, "snow"),
                               (2, 3, 16, 16))


def test_static_shape(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(("rain",))
    bundle = export_bundle(checkpoint, tmp_path / "bundle", static_shape=(1, 3, 32, 48),
                           progress=False)
    assert bundle.manifest["input"]["shape"] == [1, 3, 32, 48]
    path = bundle.graph_path("rain")
    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 32, 48]
    assert_graph_matches_torch(path, reference_model(checkpoint, "rain"), (1, 3, 32, 48))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": np.zeros((1, 3, 64, 48), np.float32)})
    report = json.loads((bundle.root / "reports/export.json").read_text())
    assert {tuple(r["shape"]) for r in report["graphs"]["rain"]["inputs"]} == {(1, 3, 32, 48)}


def test_fused_batchnorm_keeps_per_weather_parameters(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(("rain", "snow"), arch=(f"{__name__}:BatchNormNet", {}))
    bundle = export_bundle(checkpoint, tmp_path / "bundle", progress=False)
    values = {}
    for weather in ("rain", "snow"):
        model = fold_rebuild(onnx.load(str(bundle.graph_path(weather))))
        assert "BatchNormalization" in [n.op_type for n in model.graph.node]
        values[weather] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        np.testing.assert_array_equal(values[weather]["bn.running_mean"],
                                      checkpoint.bake_numpy(weather)["bn.running_mean"])
        assert_graph_matches_torch(bundle.graph_path(weather), reference_model(checkpoint, weather),
                                   (1, 3, 12, 20))
    assert not np.array_equal(values["rain"]["bn.running_mean"], values["snow"]["bn.running_mean"])
