"""The weather router's training (`gpmask train-router`, synthetic and --data folders), its
calibration, and its evaluation (`gpmask eval`'s routing report)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.bundle import CLEAR, Bundle
from gpmask.cli import main
from gpmask.errors import GpmaskError
from tests.conftest import manifest_only_bundle

CLASSES = [CLEAR, "rain", "snow"]


# ----------------------------------------------------------------- training on synthetic weather
def test_a_small_router_learns_well_above_chance_on_heldout_frames(routed_bundle) -> None:
    """300 steps on 32x32 tiles: held-out frames of held-out images (3 classes, chance
    33 %) are routed right at least half the time, and every class is learnt."""
    folder, report = routed_bundle
    assert report.classes == CLASSES
    assert report.heldout_frames == 4 * 3 * 8  # held-out images x classes x renders
    assert report.accuracy >= 0.5, report.format()
    assert min(report.per_class.values()) > 0.2, report.format()


def test_training_records_the_router_and_draws_its_confusion_matrix(routed_bundle) -> None:
    import onnx

    from gpmask.fileio import sha256_file

    folder, report = routed_bundle
    entry = Bundle.open(folder).manifest["router"]
    assert entry["sha256"] == sha256_file(folder / "router.onnx")
    assert (entry["classes"], entry["input_size"], entry["grid"]) == (CLASSES, [32, 32], [2, 2])
    matrix = np.array(entry["confusion"])
    assert matrix.sum(axis=1).tolist() == [32, 32, 32]
    assert entry["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for index, name in enumerate(CLASSES):
        assert entry["accuracy_per_class"][name] == pytest.approx(matrix[index, index] / 32)
    assert entry["temperature"] == pytest.approx(report.temperature) and report.temperature > 0
    onnx.checker.check_model(str(folder / "router.onnx"), full_check=True)
    picture = cv2.imread(str(folder / entry["report"]))
    assert picture is not None and picture.shape[0] > 200


def test_the_exported_router_is_its_ensemble_pooled_over_tiles_and_scaled(
    routed_bundle
) -> None:
    """The graph's logits are the mean over the tiles of each tile's log-probabilities
    (averaged over the ensemble's members), divided by the temperature: checked against
    the graph's own single-tile outputs in numpy. A member's log-probabilities sum to one
    as probabilities; their mean over members sums to at most one (Jensen), strictly
    less when the members disagree, as members trained from different seeds do."""
    from scipy.special import logsumexp

    from gpmask.runtime.router_frames import router_input
    from gpmask.runtime.routing import router_session

    folder, report = routed_bundle
    assert report.settings["members"] == 2
    session = router_session(folder / "router.onnx")
    rng = np.random.default_rng(1)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (80, 120, 3), np.uint8), (3, 3), 1)
    tiles = router_input(frame, 32, (2, 2))
    pooled = session.run(None, {"tiles": tiles})[0][0]
    per_tile = np.stack([session.run(None, {"tiles": np.repeat(t[None], 4, axis=0)})[0][0]
                         for t in tiles]) * report.temperature
    mass = logsumexp(per_tile, axis=1)
    assert np.all(mass <= 1e-5) and np.all(mass < -1e-6), mass
    np.testing.assert_allclose(pooled, per_tile.mean(axis=0) / report.temperature, atol=1e-4)


def test_temperature_scaling_recovers_the_temperature_labels_were_drawn_at() -> None:
    from scipy.special import softmax

    from gpmask.router.training import fit_temperature

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits / 2.5, axis=1)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)


# ----------------------------------------------------------------- --data: the user's frames
def _write(path: Path, seed: int, size: tuple[int, int] = (48, 64)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def _class_folders(root: Path, per_class: int = 3) -> Path:
    for index, name in enumerate(CLASSES):
        for frame in range(per_class):
            _write(root / name / f"frame{frame:03d}.png", index * 100 + frame)
    (root / "rain" / "notes.txt").write_text("not an image: ignored")
    return root


def test_class_folders_hold_out_the_last_frames_of_each_class(tmp_path: Path) -> None:
    from gpmask.router.frames import read_class_folders

    root = _class_folders(tmp_path / "data", per_class=10)
    train, heldout = read_class_folders(root, CLASSES, 0.2)
    assert heldout.labels == [name for name in CLASSES for _ in range(2)]
    assert train.labels == [name for name in CLASSES for _ in range(8)]
    last = cv2.imread(str(root / "snow" / "frame009.png"))
    np.testing.assert_array_equal(heldout.frames[-1], last)  # as the loop decodes it
    first = cv2.imread(str(root / "clear" / "frame000.png"))
    np.testing.assert_array_equal(train.frames[0], first)


@pytest.mark.parametrize(("arrange", "message"), [
    (lambda root: (root / "fog").mkdir(), r"data/fog: not a class of this bundle; expected one "
                                          r"folder per class: clear, rain, snow"),
    (lambda root: [p.unlink() for p in (root / "snow").iterdir()],
     r"data/snow holds no images \(.png, .jpg"),
    (lambda root: [p.unlink() for p in sorted((root / "snow").iterdir())[1:]],
     r"data/snow holds one image; a class needs at least two"),
    (lambda root: [p.unlink() for p in (root / "clear").iterdir()] + [(root / "clear").rmdir()],
     r"data has no folder for class clear; expected one folder per class"),
    (lambda root: (root / "rain" / "frame001.png").write_bytes(b"not a png"),
     r"data/rain/frame001.png: cannot read image"),
])
def test_train_router_refuses_bad_class_folders_in_one_line(tmp_path: Path, capsys, arrange,
                                                            message: str) -> None:
    bundle = manifest_only_bundle(tmp_path / "bundle", ["rain", "snow"])
    root = _class_folders(tmp_path / "data")
    arrange(root)
    assert main(["train-router", str(bundle), "--data", str(root), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gpmask: error: ") and error.count("\n") == 1
    assert __import__("re").search(message, error), error
    assert "router" not in json.loads((bundle / "manifest.json").read_text())


def test_train_router_refuses_synthetic_without_data(tmp_path: Path, capsys) -> None:
    bundle = manifest_only_bundle(tmp_path / "bundle", ["rain", "snow"])
    assert main(["train-router", str(bundle), "--synthetic", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "gpmask: error: --synthetic mixes synthetic weather into --data frames; without "
        "--data the router learns from synthetic weather alone\n")


def test_train_router_on_class_folders_prints_and_records_the_heldout_confusion(
    tmp_path: Path
) -> None:
    bundle = manifest_only_bundle(tmp_path / "bundle", ["rain", "snow"])
    root = _class_folders(tmp_path / "data", per_class=4)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train-router", str(bundle), "--data", str(root), "--steps", "3",
                     "--no-progress"]) == 0
    entry = json.loads((bundle / "manifest.json").read_text())["router"]
    assert entry["heldout_frames"] == 3 and entry["training"]["train_frames"] == 9
    assert entry["training"]["data"] == str(root)
    matrix = np.array(entry["confusion"])
    assert matrix.sum(axis=1).tolist() == [1, 1, 1]
    text = printed.getvalue()
    assert f"router accuracy on 3 held-out frames (the last 20% of each class of {root}): " \
           f"{entry['accuracy']:.1%}" in text
    for name, row in zip(CLASSES, matrix, strict=True):  # the table, a row per true class
        assert " ".join(f"{v:>8d}" for v in row) in next(
            line for line in text.splitlines() if line.strip().startswith(name + " "))
    assert f"wrote {bundle}/router.onnx" in text and "reports/router-confusion.png" in text
    assert cv2.imread(str(bundle / "reports" / "router-confusion.png")) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "data"]


def test_read_class_folders_needs_a_folder(tmp_path: Path) -> None:
    from gpmask.router.frames import read_class_folders

    with pytest.raises(GpmaskError, match="no such folder"):
        read_class_folders(tmp_path / "missing", CLASSES, 0.2)


# ----------------------------------------------------------------- evaluation
def _independent_routing(path: Path, frames: list[np.ndarray], tile: int,
                         grid: tuple[int, int]) -> np.ndarray:
    """Class probabilities per frame: tiles cut by hand, the graph on ONNX Runtime, softmax."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = []
    for frame in frames:
        height, width = frame.shape[:2]
        tops = [round(v) for v in np.linspace(0, height - tile, grid[0])]
        lefts = [round(v) for v in np.linspace(0, width - tile, grid[1])]
        tiles = np.stack([frame[t:t + tile, left:left + tile, ::-1] for t in tops
                          for left in lefts]).transpose(0, 3, 1, 2).astype(np.float32) / 255
        logits = session.run(None, {"tiles": tiles})[0][0]
        out.append(np.exp(logits) / np.exp(logits).sum())
    return np.array(out)


def _pass_rule(decisions: list[str], switch_after: int, clear_after: int) -> list[str]:
    """The routing rule written out again: the weather in force gets its frames; anything
    else passes through until it wins its count of sure decisions in a row (unsure ones
    left out)."""
    current, run, last, chosen = None, 0, None, []
    for decision in decisions:
        if decision == "unsure":
            chosen.append(CLEAR)
            continue
        run = run + 1 if decision == last else 1
        last = decision
        if current is None or decision == current or \
                run >= (clear_after if decision == CLEAR else switch_after):
            current, run, last = decision, 0, None
            chosen.append(decision)
        else:
            chosen.append(CLEAR)
    return chosen


def test_eval_reports_routing_numbers_an_independent_computation_gives(
    routed_bundle, checkpoint_path: Path, tmp_path: Path, capsys
) -> None:
    from gpmask.data.clips import make_clip
    from gpmask.router.evaluation import heldout_frames
    from gpmask.runtime.routing import RoutingPolicy

    folder, _ = routed_bundle
    out = tmp_path / "eval.json"
    assert main(["eval", str(checkpoint_path), "--count", "1", "--size", "32x32", "--style",
                 "heldout", "--router", str(folder), "--routing-count", "2", "--no-progress",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    routing = json.loads(out.read_text())["routing"]
    assert list(routing["styles"]) == ["heldout"]
    frames, clip = routing["styles"]["heldout"]["frames"], routing["styles"]["heldout"]["clip"]

    held = heldout_frames(CLASSES, 2, "heldout", 1234)
    probabilities = _independent_routing(folder / "router.onnx", held.frames, 32, (2, 2))
    predicted = probabilities.argmax(axis=1)
    true = np.array([CLASSES.index(name) for name in held.labels])
    matrix = np.zeros((3, 3), int)
    np.add.at(matrix, (true, predicted), 1)
    assert frames["confusion"] == matrix.tolist()
    assert frames["accuracy"] == pytest.approx(np.mean(predicted == true))
    for index, name in enumerate(CLASSES):
        assert frames["per_class"][name] == pytest.approx(np.mean(predicted[true == index]
                                                                  == index))
    assert f"held-out frames, the router's decision: {frames['accuracy']:.1%} of 24 frames" \
        in printed
    policy = RoutingPolicy()
    sure = probabilities.max(axis=1) >= policy.min_confidence
    routed = np.where(sure, predicted, CLASSES.index(CLEAR))  # unsure: passed through
    matrix = np.zeros((3, 3), int)
    np.add.at(matrix, (true, routed), 1)
    assert routing["styles"]["heldout"]["routed"]["confusion"] == matrix.tolist()

    sequence = [CLEAR, "rain", "snow", CLEAR, "rain", "snow", CLEAR, "snow", "rain", CLEAR]
    video = make_clip(["rain", "snow"], frames=16 * len(sequence), seed=1234,
                      sequence=sequence, style="heldout")
    probabilities = _independent_routing(folder / "router.onnx", video.degraded, 32, (2, 2))
    decisions = [CLASSES[int(p.argmax())] if p.max() >= policy.min_confidence else "unsure"
                 for p in probabilities]
    chosen = _pass_rule(decisions, policy.switch_after, policy.clear_after)
    changes = [i for i in range(1, len(video.weathers))
               if video.weathers[i] != video.weathers[i - 1]]
    lags = []
    for start in changes:
        end = start
        while end < len(chosen) and video.weathers[end] == video.weathers[start] \
                and chosen[end] != video.weathers[start]:
            end += 1
        lags.append(end - start)
    assert [lag["frames"] for lag in clip["lags"]] == lags and len(lags) == 9
    assert clip["accuracy"] == pytest.approx(np.mean(np.array(chosen) ==
                                                     np.array(video.weathers)))
    assert clip["misrouted"] == sum(c not in (t, CLEAR) for c, t in zip(chosen, video.weathers,
                                                                       strict=True))
    assert "frames to follow each change" in printed
