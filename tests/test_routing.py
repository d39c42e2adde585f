"""Weather routing: fixed, schedule files, hysteresis, and the bundle's classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.router_frames import UNSURE
from gpmask.runtime.routing import (
    CLEAR,
    FixedRouter,
    Hysteresis,
    RoutingPolicy,
    ScheduleRouter,
    make_router,
)
from gpmask.runtime.video import Frame
from tests.conftest import manifest_only_bundle

WEATHERS = ["rain", "raindrop", "snow"]
KNOWN = [*WEATHERS, "common", CLEAR]
PIXELS = np.zeros((8, 8, 3), np.uint8)


def _frame(index: int, fps: float = 10.0) -> Frame:
    return Frame(index, index / fps, PIXELS)


def _bundle(tmp_path: Path) -> Bundle:
    """A manifest-only bundle: routers only read its weather list and router entry."""
    return Bundle.open(manifest_only_bundle(tmp_path, WEATHERS))


# ----------------------------------------------------------------- hysteresis
LETTERS = {"r": "rain", "d": "raindrop", "s": "snow", "c": CLEAR, "?": UNSURE}


def _run(hysteresis: Hysteresis, decisions: str) -> str:
    """Feed one-letter decisions (``?``: unsure); return the one-letter weathers the frames
    get (``c``: passed through)."""
    names = {name: letter for letter, name in LETTERS.items()}
    return "".join(names[hysteresis.update(LETTERS[d])] for d in decisions)


def test_an_odd_decision_passes_its_frame_through_and_keeps_the_weather() -> None:
    assert _run(Hysteresis(2, 1), "rrrsrrr") == "rrrcrrr"
    assert _run(Hysteresis(2, 1), "rrr?rrr") == "rrrcrrr"
    assert _run(Hysteresis(3, 1), "rrrssrr") == "rrrccrr"


def test_a_new_weather_takes_over_on_its_mth_decision_in_a_row() -> None:
    # the frames before are passed through, never restored by the old weather's network
    assert _run(Hysteresis(2, 1), "rrsssddd") == "rrcsscdd"
    assert _run(Hysteresis(3, 3), "rrssssddd") == "rrccsscc" + "d"
    assert _run(Hysteresis(1, 1), "rsrd") == "rsrd"


def test_another_challenger_restarts_the_count_and_unsure_does_not() -> None:
    assert _run(Hysteresis(2, 1), "rsdsdsd") == "rcccccc"  # no challenger wins twice in a row
    assert _run(Hysteresis(2, 1), "rs?s") == "rccs"  # unsure says nothing either way
    assert _run(Hysteresis(3, 1), "rs??sds") == "rcccccc"


def test_the_first_sure_decision_is_taken_at_once() -> None:
    assert _run(Hysteresis(5, 5), "??s") == "ccs"


def test_clear_ends_a_weather_after_clear_after_decisions() -> None:
    # clear frames are passed through at once; the weather stops being in force after
    # clear_after clear decisions, so a later odd decision for it is not taken at once
    assert _run(Hysteresis(2, 1), "rrcrcc") == "rrcccc"
    assert _run(Hysteresis(2, 3), "rrcrcc") == "rrcrcc"


def _scripted(true: list[str], wrong: dict[int, str]) -> list[str]:
    return [wrong.get(i, weather) for i, weather in enumerate(true)]


@pytest.mark.parametrize("policy", [RoutingPolicy(), RoutingPolicy(switch_after=4, clear_after=3)])
def test_default_and_slowest_allowed_hysteresis_follow_every_change_within_3_frames(
    policy: RoutingPolicy
) -> None:
    """Scripted decisions, right on every frame: every change of weather (to clear too)
    is followed within 3 frames, and no frame goes to another weather's network."""
    from gpmask.metrics import switch_lags, weather_flicker

    order = [CLEAR, "rain", "raindrop", "snow", CLEAR, "raindrop", "rain", "snow", "raindrop",
             CLEAR, "snow", "rain", CLEAR]
    true = [weather for weather in order for _ in range(8)]
    hysteresis = Hysteresis(policy.switch_after, policy.clear_after)
    chosen = [hysteresis.update(d) for d in true]
    lags = switch_lags(true, chosen)
    assert len(lags) == 12 and max(lag["frames"] for lag in lags) <= 3
    assert all(lag["frames"] == 0 for lag in lags if lag["to"] == CLEAR)
    assert all(c in (t, CLEAR) for t, c in zip(true, chosen, strict=True))
    assert weather_flicker(true, chosen, CLEAR) == 0


def test_odd_decisions_on_a_steady_clip_never_flicker_between_weathers() -> None:
    """A steady rain clip whose decisions are wrong on isolated frames (another weather,
    clear or unsure): those frames pass through, the rest stay rain, never another
    weather's network. A clear decision ends the rain (clear after 1), so the next rain
    frame waits for a second rain decision."""
    from gpmask.metrics import weather_flicker

    true = ["rain"] * 40
    decisions = _scripted(true, {3: "snow", 9: CLEAR, 10: "snow", 17: UNSURE, 25: "raindrop",
                                 27: "raindrop", 33: CLEAR})
    hysteresis = Hysteresis(2, 1)
    chosen = [hysteresis.update(d) for d in decisions]
    assert set(chosen) == {"rain", CLEAR}
    assert [i for i, c in enumerate(chosen) if c == CLEAR] == [3, 9, 10, 11, 17, 25, 27, 33, 34]
    assert weather_flicker(true, chosen, CLEAR) == 0


@pytest.mark.parametrize(("field", "option"), [("every", "route-every"),
                                               ("switch_after", "switch-after"),
                                               ("clear_after", "clear-after")])
@pytest.mark.parametrize("value", [0, -2])
def test_routing_policy_refuses_zero_or_less(field: str, option: str, value: int) -> None:
    with pytest.raises(GpmaskError, match=f"^--{option} must be at least 1, got {value}$"):
        RoutingPolicy(**{field: value})


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_routing_policy_refuses_a_confidence_outside_0_to_1(value: float) -> None:
    with pytest.raises(GpmaskError, match="--min-confidence must be at least 0 and below 1"):
        RoutingPolicy(min_confidence=value)


def test_run_refuses_a_zero_switch_after_in_one_line(tmp_path: Path, capsys) -> None:
    from gpmask.cli import main

    _bundle(tmp_path)
    code = main(["run", str(tmp_path), "-i", str(tmp_path / "in.avi"), "-o",
                 str(tmp_path / "out.avi"), "--weather", "rain", "--switch-after", "0"])
    assert code == 2
    assert capsys.readouterr().err == "gpmask: error: --switch-after must be at least 1, got 0\n"


# ----------------------------------------------------------------- schedules
def test_csv_schedule_by_frames_and_seconds(tmp_path: Path) -> None:
    path = tmp_path / "schedule.csv"
    path.write_text("start,end,weather\n0,5,rain\n5,1s,snow\n1s,2.5s,raindrop\n2.5s,,clear\n")
    with pytest.raises(GpmaskError, match="same unit"):
        ScheduleRouter.load(path, KNOWN)
    path.write_text("start,end,weather\n0,5,rain\n5,10,snow\n1s,2.5s,raindrop\n2.5s,,clear\n")
    router = ScheduleRouter.load(path, KNOWN)
    chosen = [router.route(_frame(i)) for i in range(40)]
    assert chosen == ["rain"] * 5 + ["snow"] * 5 + ["raindrop"] * 15 + [CLEAR] * 15


def test_json_schedule_and_uncovered_frame(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps([
        {"start": 0, "end": 3, "weather": "snow"},
        {"start": "0.5s", "end": "0.8s", "weather": "common"},
    ]))
    router = ScheduleRouter.load(path, KNOWN)
    assert [router.route(_frame(i)) for i in (0, 1, 2, 5, 6, 7)] == ["snow"] * 3 + ["common"] * 3
    with pytest.raises(GpmaskError, match=r"no entry covers frame 3 \(t=0.30s\)"):
        router.route(_frame(3))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("start,end,weather\n0,5,fog\n", "weather 'fog' is not one of rain, raindrop, snow"),
        ("start,end,weather\nsoon,5,rain\n", "bound 'soon' is neither a frame index"),
        ("start,end,weather\n5,2,rain\n", "'end' must be after 'start'"),
        ("from,to,weather\n0,5,rain\n", "expected a CSV header start,end,weather"),
        ("start,end,weather\n", "the schedule has no entries"),
    ],
)
def test_bad_csv_schedules_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "schedule.csv"
    path.write_text(text)
    with pytest.raises(GpmaskError, match=message):
        ScheduleRouter.load(path, KNOWN)


def test_overlap_of_a_frame_range_and_a_time_range_is_refused_where_they_meet(
    tmp_path: Path
) -> None:
    """Frames and seconds meet only at the video's frame rate: the first frame both cover
    is refused, naming both entries (ranges of one unit are refused when read)."""
    path = tmp_path / "schedule.csv"
    path.write_text("start,end,weather\n0,12,rain\n1s,,snow\n")
    router = ScheduleRouter.load(path, KNOWN)
    assert [router.route(_frame(i)) for i in range(10)] == ["rain"] * 10
    with pytest.raises(GpmaskError, match=r"entry 1 \(0-12 rain\) and entry 2 \(1s- snow\) "
                                          r"overlap; every frame must be covered by exactly one"):
        router.route(_frame(10))


def test_bad_json_schedule_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    path.write_text("{not json")
    with pytest.raises(GpmaskError, match="not valid JSON"):
        ScheduleRouter.load(path, KNOWN)
    path.write_text(json.dumps({"start": 0}))
    with pytest.raises(GpmaskError, match="expected a list"):
        ScheduleRouter.load(path, KNOWN)


# ----------------------------------------------------------------- make_router
def test_make_router_chooses_by_spec(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    assert isinstance(make_router("snow", bundle), FixedRouter)
    assert make_router("clear", bundle).route(_frame(0)) == CLEAR
    schedule = tmp_path / "s.csv"
    schedule.write_text("start,end,weather\n0,,raindrop\n")
    assert make_router(str(schedule), bundle).route(_frame(7)) == "raindrop"
    with pytest.raises(GpmaskError, match="'fog': not a weather of this bundle"):
        make_router("fog", bundle)
    with pytest.raises(GpmaskError, match="no such schedule file"):
        make_router(str(tmp_path / "missing.csv"), bundle)
    with pytest.raises(GpmaskError, match="has no weather router; train one with"):
        make_router("auto", bundle)


# ----------------------------------------------------------------- the router's input
def test_router_input_is_a_grid_of_full_resolution_tiles() -> None:
    from gpmask.runtime.router_frames import router_input

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    tiles = router_input(frame, 64, (3, 4))
    assert tiles.shape == (12, 3, 64, 64) and tiles.dtype == np.float32
    tops, lefts = [0, 18, 36], [0, 45, 91, 136]  # evenly from edge to edge, rounded
    for index, (top, left) in enumerate((t, c) for t in tops for c in lefts):
        expected = frame[top:top + 64, left:left + 64, ::-1].transpose(2, 0, 1) / 255.0
        np.testing.assert_allclose(tiles[index], expected, rtol=1e-6)
    # RGB frames (a Triton request) give the same tiles as their BGR twin
    np.testing.assert_array_equal(router_input(frame[:, :, ::-1], 64, (3, 4), bgr=False), tiles)
    # 16-bit frames are scaled by their range; a single tile is centred
    deep = frame.astype(np.uint16) * 257
    np.testing.assert_allclose(router_input(deep, 64, (3, 4)), tiles, rtol=1e-6)
    centre = router_input(frame, 64, (1, 1))[0]
    np.testing.assert_allclose(centre, frame[18:82, 68:132, ::-1].transpose(2, 0, 1) / 255.0,
                               rtol=1e-6)


def test_a_frame_smaller_than_a_tile_is_mirrored_not_enlarged() -> None:
    from gpmask.runtime.router_frames import router_input

    frame = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    tile = router_input(frame, 8, (2, 2))
    assert tile.shape == (4, 3, 8, 8)
    rows = [0, 1, 2, 3, 4, 4, 3, 2]  # symmetric: each edge pixel repeated, then back
    cols = [0, 1, 2, 2, 1, 0, 0, 1]
    expected = frame[np.ix_(rows, cols)][:, :, ::-1].transpose(2, 0, 1) / 255.0
    for index in range(4):  # all four tiles cover the one mirrored 8x8 frame
        np.testing.assert_allclose(tile[index], expected, rtol=1e-6)


# ----------------------------------------------------------------- the confidence rule
def _fixed_router(folder: Path, logits: list[float], classes: list[str]) -> Path:
    """A real ONNX router graph whose output is ``logits`` whatever the tiles."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["tiles"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
         helper.make_node("Add", ["fixed", "nothing"], ["logits"])],
        "fixed",
        [helper.make_tensor_value_info("tiles", TensorProto.FLOAT, [4, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(classes)])],
        [numpy_helper.from_array(np.array(0, np.float32), "zero"),
         numpy_helper.from_array(np.array([logits], np.float32), "fixed")])
    path = folder / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize(("logits", "expected"), [
    ([0.0, 0.9, 0.2, 0.1], UNSURE),         # rain at 43 %: unsure, the frame passes through
    ([0.0, 2.0, 0.2, 0.1], "rain"),         # rain at 69 %: sure
    ([3.0, 0.0, 0.0, 0.0], CLEAR),          # sure it is clear
])
def test_low_confidence_passes_the_frame_through(tmp_path: Path, logits, expected) -> None:
    from gpmask.bundle.manifest import RouterRecord
    from gpmask.runtime.routing import ClassifierRouter

    classes = [CLEAR, *WEATHERS]
    path = _fixed_router(tmp_path, logits, classes)
    record = RouterRecord(str(path), "0" * 64, tuple(classes), (16, 16), (2, 2))
    probabilities = np.exp(logits) / np.sum(np.exp(logits))
    assert (probabilities.max() >= 0.5) == (expected != UNSURE)
    router = ClassifierRouter.load(path, record, RoutingPolicy(min_confidence=0.5))
    np.testing.assert_allclose(router.probabilities(PIXELS), probabilities, rtol=1e-5)
    chosen = [router.route(_frame(i)) for i in range(4)]
    assert router.last_decision == expected
    assert chosen == [CLEAR if expected == UNSURE else expected] * 4
    # with no confidence required, the top class is always taken
    sure = ClassifierRouter.load(path, record, RoutingPolicy(min_confidence=0.0))
    assert sure.route(_frame(0)) == classes[int(np.argmax(logits))]


# ----------------------------------------------------------------- auto: the trained router
def _weather_clip(weathers: list[str], size: int = 96) -> list[Frame]:
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import degrade

    image = sample_images("heldout")[0][:size * 2, :size * 2]
    frames = []
    for index, weather in enumerate(weathers):
        clean = image[index % 8 : index % 8 + size, :size]
        rgb = clean if weather == CLEAR else degrade(clean, weather, seed=index, severity=1.4)
        frames.append(Frame(index, index / 10, (rgb[:, :, ::-1] * 255).astype(np.uint8)))
    return frames


def test_auto_routing_is_the_decisions_through_the_hysteresis(routed_bundle) -> None:
    folder, _ = routed_bundle
    clip = _weather_clip(["snow"] * 6 + [CLEAR] + ["snow"] * 6 + ["rain"] * 8)
    policy = RoutingPolicy(every=1, switch_after=2, clear_after=1, min_confidence=0.6)
    router = make_router("auto", Bundle.open(folder), policy)
    chosen, decisions = [], []
    for frame in clip:
        chosen.append(router.route(frame))
        decisions.append(router.last_decision)
    assert decisions == [router.classify(f.pixels) for f in clip]  # decisions are per frame
    hysteresis = Hysteresis(2, 1)
    assert chosen == [hysteresis.update(d) for d in decisions]


def test_auto_routing_decides_every_k_frames(routed_bundle) -> None:
    folder, _ = routed_bundle
    clip = _weather_clip(["rain"] * 4 + ["snow"] * 4 + [CLEAR] * 4)
    router = make_router("auto", Bundle.open(folder),
                         RoutingPolicy(every=4, switch_after=1, clear_after=1,
                                       min_confidence=0.0))
    chosen = [router.route(frame) for frame in clip]
    expected = [router.classify(clip[i - i % 4].pixels) for i in range(len(clip))]
    assert chosen == expected


def test_tampered_router_is_refused(routed_bundle, tmp_path: Path) -> None:
    import shutil

    folder, _ = routed_bundle
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    with (copy / "router.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(GpmaskError, match="router.onnx does not match its manifest sha256"):
        make_router("auto", Bundle.open(copy))


def test_a_router_of_an_earlier_gpmask_is_refused_with_what_to_do(routed_bundle,
                                                                  tmp_path: Path) -> None:
    import shutil

    folder, _ = routed_bundle
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["router"]["grid"]  # what gpmask wrote when the router saw a downscaled frame
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GpmaskError, match=r"its router comes from an earlier gpmask .* train a "
                                          r"new one with `gpmask train-router"):
        make_router("auto", Bundle.open(copy))


# ----------------------------------------------------------------- the shipped router
def test_shipped_router_matches_its_record_and_the_demo_weathers() -> None:
    from gpmask.bundle.manifest import RouterRecord
    from gpmask.export.shipped_router import SHIPPED_ROUTERS, shipped_router
    from gpmask.fileio import sha256_file
    from gpmask.masking.checkpoint import MaskedCheckpoint
    from gpmask.router.training import RouterSettings
    from gpmask.runtime.routing import ClassifierRouter

    weathers = MaskedCheckpoint.load("demo").weathers
    graph, record = shipped_router("demo", weathers)
    assert graph == SHIPPED_ROUTERS["demo"]
    assert record["sha256"] == sha256_file(graph)
    assert record["classes"] == [CLEAR, *weathers]
    defaults = RouterSettings()  # what `gpmask train-router` makes with no options
    assert record["input_size"] == [defaults.tile] * 2
    assert record["grid"] == list(defaults.grid)
    assert record["training"]["steps"] == defaults.steps
    matrix = np.array(record["confusion"])
    assert matrix.sum() == record["heldout_frames"]
    assert record["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    # issue 23's goals, on the held-out frames training measured it on
    assert record["accuracy"] >= 0.95 and min(record["accuracy_per_class"].values()) >= 0.9
    router = ClassifierRouter.load(graph, RouterRecord.of({**record, "path": graph.name}))
    assert router.probabilities(PIXELS).shape == (len(weathers) + 1,)
    # only for the exact weathers it was trained on, and only for the shipped checkpoint
    assert shipped_router("demo", ["rain", "snow"]) is None
    assert shipped_router("my-model", weathers) is None


def test_attached_router_is_refused_when_its_record_does_not_match(tmp_path: Path) -> None:
    from gpmask.export.shipped_router import SHIPPED_ROUTERS, attach_router

    bundle = _bundle(tmp_path)
    graph = SHIPPED_ROUTERS["demo"]
    record = json.loads(graph.with_suffix(".json").read_text())
    attach_router(bundle, graph, record)
    assert bundle.manifest["router"]["sha256"] == record["sha256"]
    assert bundle.router.grid == tuple(record["grid"])
    assert "report" not in bundle.manifest["router"]  # the picture is not shipped
    assert (tmp_path / "router.onnx").read_bytes() == graph.read_bytes()
    (tmp_path / "other").mkdir()
    other = _bundle(tmp_path / "other")
    with pytest.raises(GpmaskError, match="does not match the sha256 its record gives"):
        attach_router(other, graph, {**record, "sha256": "0" * 64})
    assert not (tmp_path / "other" / "router.onnx").exists()
