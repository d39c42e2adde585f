"""Export's failure modes: bad input gives one clear line, a failed export leaves nothing."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from onnx import numpy_helper
from torch import nn

import gpmask.export.exporter as exporter
from gpmask.cli import export_main, main
from gpmask.errors import GpmaskError
from gpmask.export import export_bundle
from gpmask.masking.checkpoint import MaskedCheckpoint
from tests.conftest import make_checkpoint


class EigenvalueNet(nn.Module):
    """A network whose forward uses an operator the ONNX exporter cannot convert."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image) + torch.linalg.eigvals(image[0, 0]).real.mean()


def assert_nothing_written(parent: Path) -> None:
    """No bundle and no leftover temporary folder beside it."""
    assert [p.name for p in parent.iterdir() if "bundle" in p.name] == []


def test_unknown_weather(tmp_path: Path) -> None:
    with pytest.raises(GpmaskError, match=r"unknown weather 'fog'; this checkpoint has: rain, "):
        export_bundle(make_checkpoint(), tmp_path / "bundle", weathers=["rain", "fog"])
    assert_nothing_written(tmp_path)


def test_unknown_architecture(tmp_path: Path) -> None:
    real = make_checkpoint(("rain",))
    checkpoint = MaskedCheckpoint("no-such-net", {}, real.common, real.masks, real.specific)
    with pytest.raises(GpmaskError, match=r"unknown architecture 'no-such-net'"):
        export_bundle(checkpoint, tmp_path / "bundle")
    assert_nothing_written(tmp_path)


def test_forward_the_exporter_rejects_names_the_operator(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(("rain",), arch=(f"{__name__}:EigenvalueNet", {}))
    with pytest.raises(GpmaskError) as caught:
        export_bundle(checkpoint, tmp_path / "bundle", progress=False)
    message = str(caught.value)
    assert message == (
        "cannot export EigenvalueNet.forward to ONNX: no ONNX conversion for operator "
        "aten.linalg_eig"
    )
    assert_nothing_written(tmp_path)


def test_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(GpmaskError, match=r"^cannot write .*a-file/bundle: "):
        export_bundle(make_checkpoint(), tmp_path / "a-file" / "bundle")


def test_static_shape_not_a_multiple_of_the_architecture(tmp_path: Path) -> None:
    with pytest.raises(GpmaskError, match=r"bad shape 1x3x30x40: height and width must be "
                                          r"multiples of 4"):
        export_bundle(make_checkpoint(), tmp_path / "bundle", static_shape=(1, 3, 30, 40))
    assert_nothing_written(tmp_path)


def test_existing_bundle_is_refused_without_force(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "mine.txt").write_text("keep")
    with pytest.raises(GpmaskError, match=r"bundle exists; pass --force to replace it"):
        export_bundle(make_checkpoint(), tmp_path / "bundle")
    assert (tmp_path / "bundle" / "mine.txt").read_text() == "keep"


def test_failure_mid_export_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    written = []

    def fail_after_writing(paths, *args, **kwargs):
        written.extend(p for p in paths.values() if p.is_file())
        raise RuntimeError("injected failure")

    monkeypatch.setattr(exporter, "verify_graphs", fail_after_writing)
    with pytest.raises(RuntimeError, match="injected failure"):
        export_bundle(make_checkpoint(("rain", "snow")), tmp_path / "bundle", progress=False)
    assert len(written) == 3  # the graphs were on disk when the failure came
    assert not any(p.exists() for p in written)
    assert_nothing_written(tmp_path)


def test_numerical_mismatch_fails_the_export(tmp_path: Path, monkeypatch) -> None:
    """A graph whose weights are off (here: rain's head.weight nudged) is caught by verify."""
    bind = exporter.ParameterBinding.bind
    calls = []

    def nudge_second_graph(self, weights):
        graph = bind(self, weights)
        calls.append(graph)
        if len(calls) == 2:  # common, then rain
            tensor = next(t for t in graph.graph.initializer if t.name == "head.weight")
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) + 1e-2,
                                                    tensor.name))
        return graph

    monkeypatch.setattr(exporter.ParameterBinding, "bind", nudge_second_graph)
    with pytest.raises(GpmaskError, match=r"rain.onnx does not match PyTorch for 'rain': max "
                                          r"abs error \S+ > \S+ on input random"):
        export_bundle(make_checkpoint(("rain",)), tmp_path / "bundle", progress=False)
    assert_nothing_written(tmp_path)


def test_force_replaces_and_cli_prints_the_summary(tmp_path: Path, checkpoint_path, capsys) -> None:
    target = tmp_path / "bundle"
    target.mkdir()  # an earlier (here: damaged) bundle: its manifest says what it is
    (target / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "weathers": ["rain"], "graphs": {}}))
    (target / "rain.onnx").write_text("old")
    code = export_main([str(checkpoint_path), "-o", str(target), "--weathers", "snow",
                        "--force", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "weathers      snow (default snow)" in out
    assert "verification  passed" in out
    assert sorted(p.name for p in target.iterdir()) == [
        "common.onnx", "manifest.json", "reports", "snow.onnx", "weights.bin"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weathers", "rain,hail"], "unknown weather 'hail'; this checkpoint has: rain, "
                                      "raindrop, snow"),
        (["--weathers", ","], "no weathers selected"),
        (["--size", "720"], "gpmask export: argument --size: size '720' is not HxW"),
        (["--size", "30x32"], "bad shape 1x3x30x32: height and width must be multiples of 4"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, checkpoint_path, capsys, extra, message) -> None:
    code = main(["export", str(checkpoint_path), "-o", str(tmp_path / "bundle"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"gpmask: error: {message}") and err.count("\n") == 1
    assert_nothing_written(tmp_path)


def test_cli_missing_checkpoint(tmp_path: Path, capsys) -> None:
    code = main(["export", str(tmp_path / "none.gpmask.safetensors"), "-o", str(tmp_path / "b")])
    assert code == 2
    assert "none.gpmask.safetensors does not exist" in capsys.readouterr().err


def test_console_script_help() -> None:
    result = subprocess.run(["gpmask-export", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("-o BUNDLE", "--weathers LIST", "--size HxW", "--no-verify", "--force"):
        assert option in result.stdout
    assert "usage: gpmask export" in result.stdout
