"""`gpmask eval`: in-distribution and held-out-style tables, checked against an independent PSNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpmask.cli import main
from gpmask.data.clean import sample_images
from gpmask.data.sources import SyntheticPairs


def psnr_db(image: np.ndarray, reference: np.ndarray) -> float:
    mse = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(1.0 / mse))


def test_eval_reports_both_styles(checkpoint_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint_path), "--count", "2", "--size", "64x64",
                 "--no-progress", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training style (in distribution)" in printed and "held-out style" in printed
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"train", "heldout"}
    source = SyntheticPairs(sample_images("heldout"), seed=1234)
    for style, by_weather in results.items():
        for weather, scores in by_weather.items():
            pairs = source.eval_pairs(weather, 2, size=(64, 64), style=style)
            expected = np.mean([psnr_db(d, c) for d, c in pairs])
            assert scores["input"]["psnr"] == pytest.approx(expected, abs=1e-4)
            assert scores["count"] == 2
    assert results["train"]["rain"]["input"] != results["heldout"]["rain"]["input"]


def test_eval_one_style_and_refusals(checkpoint_path: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint_path), "--count", "1", "--size", "32x32", "--style",
                 "heldout", "--no-progress", "-o", str(out)]) == 0
    assert list(json.loads(out.read_text())["results"]) == ["heldout"]
    capsys.readouterr()
    (tmp_path / "pairs").mkdir()
    assert main(["eval", str(checkpoint_path), "--style", "train", "--data",
                 f"rain={tmp_path / 'pairs'}", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        "gpmask: error: --style chooses synthetic weather; --data folders have their own"
    )


def test_eval_without_output_writes_no_file(checkpoint_path: Path, tmp_path: Path,
                                            monkeypatch, capsys) -> None:
    """Without -o the tables are the whole result: nothing appears in the working folder."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert main(["eval", str(checkpoint_path), "--count", "1", "--size", "32x32", "--style",
                 "train", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "training style (in distribution)" in printed and "wrote" not in printed
    assert list(folder.iterdir()) == []
