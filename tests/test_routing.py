"""Weather routing: fixed, schedule files, hysteresis, and the bundle's classifier."""

from __future__ import annotations

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
    manifest = {
        "format_version": 1, "weathers": WEATHERS, "input": {}, "output": {},
        "graphs": {}, "weights": [],
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
    with pytest.raises(GpmaskError, match="at least 1"):
        Hysteresis(0)


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
