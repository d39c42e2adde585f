"""`gpmask demo`: the synthetic clip, the PSNR table, and every output read back."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import SHIPPED_CHECKPOINTS
from gpmask.runtime.demo import make_clip, psnr_table
from tests.conftest import make_checkpoint

WEATHERS = ["rain", "raindrop", "snow"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_clip_changes_weather_in_order() -> None:
    clip = make_clip(WEATHERS, frames=10, size=96, fps=5)
    assert clip.weathers == ["rain"] * 3 + ["snow"] * 3 + ["raindrop"] * 2 + ["clear"] * 2
    assert all(f.shape == (96, 96, 3) and f.dtype == np.uint8 for f in clip.degraded)
    for clean, degraded, weather in zip(clip.clean, clip.degraded, clip.weathers, strict=True):
        if weather == "clear":
            np.testing.assert_array_equal(clean, degraded)
        else:
            # The weather is visible; out-of-focus raindrops over the rocket's smooth sky
            # (the raindrop segment, 96 px frames) cost the least: about 38 dB.
            assert _psnr(clean, degraded) < (40 if weather == "raindrop" else 36)
    assert not np.array_equal(clip.clean[0], clip.clean[2])  # the camera pans


def test_clip_leaves_out_weathers_the_bundle_lacks_and_refuses_too_few_frames() -> None:
    assert make_clip(["snow"], frames=4, size=32).weathers == ["snow"] * 2 + ["clear"] * 2
    with pytest.raises(GpmaskError, match="at least one of rain, snow, raindrop"):
        make_clip(["fog"], frames=4, size=32)
    with pytest.raises(GpmaskError, match="--frames must be at least 4"):
        make_clip(WEATHERS, frames=3, size=32)


def test_psnr_table_against_an_independent_computation() -> None:
    clip = make_clip(WEATHERS, frames=8, size=32)
    restored = [cv2.GaussianBlur(f, (3, 3), 0) for f in clip.degraded]
    table = psnr_table(clip, clip.degraded, restored)
    assert list(table) == ["rain", "snow", "raindrop", "clear"]
    for weather, row in table.items():
        index = [i for i, w in enumerate(clip.weathers) if w == weather]
        assert row["frames"] == len(index)
        restored_psnr = np.mean([_psnr(restored[i], clip.clean[i]) for i in index])
        assert row["restored_psnr"] == pytest.approx(restored_psnr, abs=1e-6)
        if weather != "clear":  # clear input equals ground truth: infinite PSNR
            input_psnr = np.mean([_psnr(clip.degraded[i], clip.clean[i]) for i in index])
            assert row["input_psnr"] == pytest.approx(input_psnr, abs=1e-6)


def _check_outputs(folder: Path, frames: int, size: int) -> dict:
    for name, width in [("input.avi", size), ("restored.avi", size),
                        ("side_by_side.avi", 2 * size)]:
        capture = cv2.VideoCapture(str(folder / name))
        assert capture.isOpened(), name
        count = 0
        while (item := capture.read())[0]:
            assert item[1].shape == (size, width, 3), name
            count += 1
        assert count == frames, name
    summary = json.loads((folder / "psnr.json").read_text())
    assert summary["frames"] == frames
    assert list(summary["psnr"]) == ["rain", "snow", "raindrop", "clear"]
    assert sum(row["frames"] for row in summary["psnr"].values()) == frames
    markdown = (folder / "psnr.md").read_text()
    assert markdown.startswith("| weather | frames | input PSNR (dB) | restored PSNR (dB) |")
    for weather, row in summary["psnr"].items():
        assert f"| {weather} | {row['frames']} | {row['input_psnr']:.2f} |" in markdown
    plot = cv2.imread(str(folder / "timeline.png"))
    assert plot is not None and plot.shape[0] > 100
    rows = list(csv.DictReader((folder / "frames.csv").open()))
    assert [int(r["frame"]) for r in rows] == list(range(frames))
    chosen = [r["weather"] for r in rows]
    true = make_clip(WEATHERS, frames=frames, size=size).weathers
    accuracy = np.mean([c == t for c, t in zip(chosen, true, strict=True)])
    assert summary["routing_accuracy"] == pytest.approx(accuracy)
    return summary


@pytest.mark.slow
def test_demo_on_a_given_bundle_writes_every_output(tmp_path: Path, capsys) -> None:
    from gpmask.export import export_bundle
    from gpmask.export.router import RouterSettings, train_router

    bundle = tmp_path / "bundle"
    export_bundle(make_checkpoint(), bundle, progress=False)
    train_router(bundle, RouterSettings(steps=20, variants=2, heldout_variants=1,
                                        input_size=(48, 48)), progress=False)
    output = tmp_path / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "-o", str(output), "--bundle", str(bundle), "--frames", "12",
                     "--size", "64", "--no-progress"])
    assert code == 0
    summary = _check_outputs(output, 12, 64)
    assert summary["bundle"] == str(bundle)
    assert "| rain | 3 |" in printed.getvalue()
    assert main(["demo", "-o", str(output), "--bundle", str(bundle), "--no-progress"]) == 2
    assert "demo exists; pass --force to replace it" in capsys.readouterr().err
    with contextlib.redirect_stdout(io.StringIO()):  # an earlier demo's folder is replaced
        assert main(["demo", "-o", str(output), "--bundle", str(bundle), "--frames", "8",
                     "--size", "64", "--no-progress", "--force"]) == 0
    _check_outputs(output, 8, 64)


@pytest.fixture(scope="module")
def shipped_demo(tmp_path_factory) -> Path:
    """The output folder of `gpmask demo` run with no arguments (once for this module)."""
    if not SHIPPED_CHECKPOINTS["demo"].is_file():
        pytest.skip("the shipped demo checkpoint is not in gpmask/assets yet")
    folder = tmp_path_factory.mktemp("shipped-demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["demo", "--no-progress"]) == 0
    return folder / "gpmask-demo"


@pytest.mark.slow
def test_demo_with_no_arguments_exports_the_shipped_model(shipped_demo: Path) -> None:
    summary = _check_outputs(shipped_demo, 96, 192)
    assert summary["bundle"] == "bundle"
    assert "router" in json.loads((shipped_demo / "bundle/manifest.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("weather", WEATHERS)
def test_demo_restores_every_weather_of_its_clip(shipped_demo: Path, weather: str) -> None:
    """The trained demo model, routed by its router, gains over the input frames."""
    table = json.loads((shipped_demo / "psnr.json").read_text())["psnr"]
    assert table[weather]["restored_psnr"] > table[weather]["input_psnr"], table
