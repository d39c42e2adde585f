"""Weather routing: fixed, schedule files, hysteresis, and the bundle's classifier."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.routing import (
    CLEAR,
    FixedRouter,
    Hysteresis,
    RoutingPolicy,
    ScheduleRouter,
    make_router,
)
from gpmask.runtime.video import Frame

WEATHERS = ["rain", "raindrop", "snow"]
KNOWN = [*WEATHERS, "common", CLEAR]
PIXELS = np.zeros((8, 8, 3), np.uint8)


def _frame(index: int, fps: float = 10.0) -> Frame:
    return Frame(index, index / fps, PIXELS)


def _bundle(tmp_path: Path) -> Bundle:
    """A manifest-only bundle: routers only read its weather list and router entry."""
    tensor = {"layout": "NCHW", "dtype": "float32"}
    manifest = {
        "format_version": 1, "weathers": WEATHERS, "input": {"name": "image", **tensor},
        "output": {"name": "restored", **tensor}, "graphs": {}, "weights": [],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return Bundle.open(tmp_path)


# ----------------------------------------------------------------- hysteresis
def _run(hysteresis: Hysteresis, decisions: str) -> str:
    """Feed one-letter decisions; return the one-letter choices in force."""
    return "".join(hysteresis.update(d) for d in decisions)


def test_hysteresis_ignores_changes_shorter_than_switch_after() -> None:
    assert _run(Hysteresis(3), "rrrsrrrssrr") == "rrrrrrrrrrr"


def test_hysteresis_switches_on_the_mth_consecutive_decision() -> None:
    assert _run(Hysteresis(3), "rrrssssddd") == "rrrrrssssd"
    assert _run(Hysteresis(1), "rsrd") == "rsrd"


def test_hysteresis_restarts_the_count_when_the_challenger_changes() -> None:
    # s, d, s, d: no challenger ever wins twice in a row, so r holds
    assert _run(Hysteresis(2), "rsdsdss") == "rrrrrrs"


def test_hysteresis_takes_the_first_decision_at_once() -> None:
    assert _run(Hysteresis(5), "s") == "s"


def test_hysteresis_refuses_zero() -> None:
    with pytest.raises(GpmaskError, match="switch-after must be at least 1"):
        Hysteresis(0)
    with pytest.raises(GpmaskError, match="clear-after must be at least 1"):
        Hysteresis(3, clear_after=0)
    with pytest.raises(GpmaskError, match="route-every must be at least 1"):
        RoutingPolicy(every=0)


def test_hysteresis_ends_a_weather_after_clear_after_decisions() -> None:
    hysteresis = Hysteresis(3, clear_after=1)
    decisions = ["rain", "rain", CLEAR, "rain", "snow", "snow", "snow", CLEAR, CLEAR]
    chosen = [hysteresis.update(decision) for decision in decisions]
    # clear takes over at once; a weather still needs three decisions in a row
    assert chosen == ["rain", "rain", CLEAR, CLEAR, CLEAR, CLEAR, "snow", CLEAR, CLEAR]
    symmetric = Hysteresis(3)
    assert [symmetric.update(d) for d in ["rain", CLEAR]] == ["rain", "rain"]


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


# ----------------------------------------------------------------- auto: the trained router
@pytest.fixture(scope="module")
def routed_bundle(tmp_path_factory) -> tuple[Path, str]:
    """A bundle whose router `gpmask train-router` trained (briefly), and what it printed."""
    import contextlib
    import io

    from gpmask.cli import main

    folder = tmp_path_factory.mktemp("router")
    _bundle(folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train-router", str(folder), "--steps", "60", "--input-size", "64x64",
                     "--no-progress"])
    assert code == 0
    return folder, printed.getvalue()


def test_train_router_writes_a_checked_onnx_graph_and_manifest_entry(routed_bundle) -> None:
    import onnx
    import onnxruntime as ort

    from gpmask.fileio import sha256_file
    from gpmask.runtime.routing import router_input

    folder, printed = routed_bundle
    entry = Bundle.open(folder).manifest["router"]
    assert entry["path"] == "router.onnx"
    assert entry["sha256"] == sha256_file(folder / "router.onnx")
    assert entry["classes"] == [CLEAR, *WEATHERS]
    assert entry["input_size"] == [64, 64]
    assert entry["heldout_frames"] == 4 * 4 * 8  # 4 held-out images x 4 classes x 8 variants
    assert f"{entry['accuracy']:.1%}" in printed
    assert f"on {entry['heldout_frames']} held-out synthetic frames" in printed
    onnx.checker.check_model(str(folder / "router.onnx"), full_check=True)
    session = ort.InferenceSession(str(folder / "router.onnx"))
    logits = session.run(None, {"image": router_input(PIXELS, (64, 64))})[0]
    assert logits.shape == (1, 4) and np.isfinite(logits).all()


def test_router_training_varies_scenes_but_not_the_heldout_frames() -> None:
    from gpmask.router.training import RouterSettings, _vary_scene, router_examples

    rng = np.random.default_rng(3)
    crop = rng.random((20, 30, 3), dtype=np.float32)
    plain = RouterSettings(exposure=(1.0, 1.0), gamma=(1.0, 1.0))
    turned = _vary_scene(crop, plain, np.random.default_rng(0))
    assert turned.shape in {(20, 30, 3), (30, 20, 3)}  # turned, colours shuffled, same values
    assert not np.array_equal(turned, crop)
    np.testing.assert_allclose(np.sort(turned, axis=None), np.sort(crop, axis=None), rtol=1e-6)
    exposed = _vary_scene(crop, RouterSettings(exposure=(0.5, 0.5), gamma=(2.0, 2.0)),
                          np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(exposed, axis=None),
                               np.sort((crop * 0.5) ** 2, axis=None), rtol=1e-5)

    image = rng.random((64, 64, 3), dtype=np.float32)
    settings = RouterSettings(input_size=(32, 32))
    held, labels = router_examples([image], [CLEAR], settings, 3, seed=1, augment=False)
    again, _ = router_examples([image], [CLEAR], settings, 3, seed=1, augment=False)
    varied, _ = router_examples([image], [CLEAR], settings, 3, seed=1, augment=True)
    assert held.shape == (3, 3, 32, 32) and labels.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(held, again)
    assert not np.array_equal(held, varied)


def _weather_clip(weathers: list[str], size: int = 96) -> list[Frame]:
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import degrade

    image = sample_images("heldout")[0][:size * 2, :size * 2]
    frames = []
    for index, weather in enumerate(weathers):
        clean = image[index % 8 : index % 8 + size, :size]
        rgb = clean if weather == CLEAR else degrade(clean, weather, seed=index)
        frames.append(Frame(index, index / 10, (rgb[:, :, ::-1] * 255).astype(np.uint8)))
    return frames


def test_auto_routing_switches_only_after_agreeing_decisions(routed_bundle) -> None:
    folder, _ = routed_bundle
    clip = _weather_clip(["snow"] * 6 + [CLEAR] + ["snow"] * 6 + ["rain"] * 8)
    router = make_router("auto", Bundle.open(folder),
                         RoutingPolicy(every=1, switch_after=3, clear_after=3))
    chosen, decisions = [], []
    for frame in clip:
        chosen.append(router.route(frame))
        decisions.append(router.last_decision)
    assert decisions == [router.classify(f.pixels) for f in clip]  # decisions are per frame
    for i in range(1, len(clip)):
        if chosen[i] != chosen[i - 1]:  # a switch needs the 3 latest decisions to agree
            assert decisions[i - 2 : i + 1] == [chosen[i]] * 3, (decisions, chosen)
    runs = [len(list(group)) for _, group in itertools.groupby(chosen)]
    assert all(length >= 3 for length in runs[1:-1]), chosen  # no flicker between switches


def test_auto_routing_decides_every_k_frames(routed_bundle) -> None:
    folder, _ = routed_bundle
    clip = _weather_clip(["rain"] * 4 + ["snow"] * 4 + ["raindrop"] * 4 + [CLEAR] * 4)
    router = make_router("auto", Bundle.open(folder),
                         RoutingPolicy(every=4, switch_after=1, clear_after=1))
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


# ----------------------------------------------------------------- the shipped router
def test_shipped_router_matches_its_record_and_the_demo_weathers() -> None:
    import onnxruntime as ort

    from gpmask.export.shipped_router import SHIPPED_ROUTERS, shipped_router
    from gpmask.fileio import sha256_file
    from gpmask.masking.checkpoint import MaskedCheckpoint
    from gpmask.router.training import RouterSettings
    from gpmask.runtime.routing import router_input

    weathers = MaskedCheckpoint.load("demo").weathers
    graph, record = shipped_router("demo", weathers)
    assert graph == SHIPPED_ROUTERS["demo"]
    assert record["sha256"] == sha256_file(graph)
    assert record["classes"] == [CLEAR, *weathers]
    defaults = RouterSettings()  # what `gpmask train-router` makes with no options
    assert record["input_size"] == list(defaults.input_size)
    assert record["training"]["steps"] == defaults.steps
    assert 0.25 < record["accuracy"] <= 1.0
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": router_input(PIXELS, tuple(record["input_size"]))})[0]
    assert logits.shape == (1, len(weathers) + 1)
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
    assert (tmp_path / "router.onnx").read_bytes() == graph.read_bytes()
    (tmp_path / "other").mkdir()
    other = _bundle(tmp_path / "other")
    with pytest.raises(GpmaskError, match="does not match the sha256 its record gives"):
        attach_router(other, graph, {**record, "sha256": "0" * 64})
    assert not (tmp_path / "other" / "router.onnx").exists()
