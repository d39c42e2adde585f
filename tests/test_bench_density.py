"""benchmarks/bench_density.py at its tiny setting: its table is what evaluation computes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.data.clean import sample_images
from gpmask.data.sources import SyntheticPairs
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.masking.evaluate import evaluate_checkpoint

REPO = Path(__file__).resolve().parent.parent


def _bench(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_density.py"), *args],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny study run the way a long one is: stage 1 and most densities in one process,
    the last density in a second one from the first's common model, then merged."""
    folder = tmp_path_factory.mktemp("density")
    first, second = folder / "a", folder / "b"
    printed = _bench("-o", str(first), "--tiny", "--densities", "1,0.05,0.1,0.2",
                     "--keep-checkpoints", "--no-progress").stdout
    assert "| GGPM D = 0.1 |" in printed
    printed = _bench("-o", str(second), "--tiny", "--densities", "0.4", "--common-from",
                     str(first / "common.gpmask.safetensors"), "--keep-checkpoints",
                     "--no-progress").stdout
    assert "no D = 1 row yet" in printed and not (second / "density.md").exists()
    for path in second.glob("*.gpmask.safetensors"):
        path.rename(first / path.name)
    _bench("--merge", str(first / "density.json"), str(second / "density.json"), "-o",
           str(folder))
    return first, json.loads((folder / "density.json").read_text()) | {"folder": str(folder)}


def _checkpoint(folder: Path, density: float) -> MaskedCheckpoint:
    return MaskedCheckpoint.load(folder / f"density-{density:g}.gpmask.safetensors")


def _figures(results: dict) -> dict[str, float]:
    """Evaluation results flattened to ``weather/model/metric -> value`` (convolutions
    may sum in another order between two processes: equal to float rounding, not bits)."""
    return {f"{weather}/{model}/{metric}": value
            for weather, models in results.items()
            for model, figures in models.items() if isinstance(figures, dict)
            for metric, value in figures.items()}


def test_rows_are_what_evaluation_computes(study) -> None:
    folder, data = study
    assert [row["density"] for row in data["rows"]] == [0.05, 0.1, 0.2, 0.4, 1.0]
    evaluation = data["evaluation"]
    source = SyntheticPairs(sample_images("heldout"), weathers=tuple(data["weathers"]),
                            seed=evaluation["seed"], severity=evaluation["severity"])
    for row in data["rows"]:
        checkpoint = _checkpoint(folder, row["density"])
        for style in ("train", "heldout"):
            pairs = {w: source.eval_pairs(w, evaluation["count"], size=tuple(evaluation["size"]),
                                          style=style) for w in data["weathers"]}
            recomputed = evaluate_checkpoint(checkpoint, pairs, progress=False)
            assert _figures(recomputed) == pytest.approx(_figures(row["results"][style]),
                                                         abs=1e-6), (row["label"], style)


def test_every_configuration_shares_one_common_model(study) -> None:
    folder, data = study
    first = _checkpoint(folder, 0.05)
    for row in data["rows"]:
        checkpoint = _checkpoint(folder, row["density"])
        for name, value in first.common.items():
            np.testing.assert_array_equal(checkpoint.common[name], value)
        for style in ("train", "heldout"):
            for weather in data["weathers"]:
                for model in ("input", "common"):
                    assert row["results"][style][weather][model] == pytest.approx(
                        data["rows"][0]["results"][style][weather][model], abs=1e-6)
    assert data["settings"]["common_update"] == "frozen"


def test_densities_are_exact_and_d1_is_the_full_fine_tune(study) -> None:
    folder, data = study
    for row in data["rows"]:
        checkpoint = _checkpoint(folder, row["density"])
        params = [n for n in checkpoint.common if n.endswith(("weight", "bias"))]
        total = sum(checkpoint.common[n].size for n in checkpoint.common)
        expected = sum(round(row["density"] * checkpoint.common[n].size) for n in params)
        for weather in data["weathers"]:
            assert row["specific_fraction"][weather] == pytest.approx(expected / total)
    full = _checkpoint(folder, 1.0)
    assert data["rows"][-1]["label"] == "full fine-tune (D = 1)"
    for weather in data["weathers"]:
        baked = full.bake_numpy(weather)
        for name in (n for n in full.common if n.endswith(("weight", "bias"))):
            assert full.masks[weather][name].all()
            assert not np.array_equal(baked[name], full.common[name]), name


def test_markdown_table_and_plot_match_the_json(study) -> None:
    _, data = study
    folder = Path(data["folder"])
    text = (folder / "density.md").read_text()
    weathers = data["weathers"]
    for style in ("train", "heldout"):
        section = text.split(f"**{style} style**")[1].split("**")[0]
        rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                for line in section.splitlines() if line.startswith("| ") and "---" not in line}
        first = data["rows"][0]["results"][style]
        for name, model in (("degraded input", "input"), ("common model", "common")):
            assert rows[name][2:5] == [f"{first[w][model]['psnr']:.2f}" for w in weathers]
        full = data["rows"][-1]["results"][style]
        for row in data["rows"]:
            cells = rows[row["label"]]
            psnrs = [row["results"][style][w]["baked"]["psnr"] for w in weathers]
            assert cells[2:5] == [f"{v:.2f}" for v in psnrs]
            assert cells[5] == f"{np.mean(psnrs):.2f}"
            gaps = [f"{v - full[w]['baked']['psnr']:+.2f}"
                    for v, w in zip(psnrs, weathers, strict=True)]
            assert cells[6:9] == gaps
            assert re.fullmatch(r"\d+\.\d%", cells[0])
    image = cv2.imread(str(folder / "density.png"))
    assert image is not None and image.shape[1] > image.shape[0]
