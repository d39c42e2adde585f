"""Choosing each frame's weather: a fixed name, a schedule file, or the bundle's classifier.

A router's :meth:`~Router.route` returns a weather of the bundle, ``common``, or
:data:`CLEAR` (no weather: the loop passes the frame through or uses the common
graph). The classifier router decides on a grid of full-resolution tiles of every K-th
frame (:mod:`gpmask.runtime.router_frames`) and follows its decisions through a
:class:`Hysteresis`: a frame goes to a weather's network only when the router is sure of
that weather and that weather is the one in force or has just won M decisions in a row;
every other frame is passed through, because the wrong network makes a frame worse than
no network at all.
"""

from __future__ import annotations

import csv
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bundle import CLEAR, COMMON, Bundle
from gpmask.bundle.manifest import RouterRecord
from gpmask.errors import GpmaskError
from gpmask.runtime.router_frames import UNSURE, class_probabilities, decide, router_input
from gpmask.runtime.video import Frame


class Router(ABC):
    """Chooses the weather of each frame, in stream order."""

    @abstractmethod
    def route(self, frame: Frame) -> str:
        """The weather for ``frame``: a bundle weather, ``common`` or :data:`CLEAR`."""


class FixedRouter(Router):
    """The same weather for every frame."""

    def __init__(self, weather: str) -> None:
        self.weather = weather

    def route(self, frame: Frame) -> str:
        return self.weather


@dataclass(frozen=True)
class ScheduleEntry:
    """Frames (or seconds) ``start`` up to ``end`` (exclusive; None: to the end) -> weather.

    ``name`` says where the entry is in its file (``entry 2``), for messages.
    """

    start: float
    end: float | None
    in_seconds: bool
    weather: str
    name: str = "entry"

    def covers(self, frame: Frame) -> bool:
        position = frame.time_s if self.in_seconds else frame.index
        return self.start <= position and (self.end is None or position < self.end)

    def overlaps(self, other: ScheduleEntry) -> bool:
        """Whether both entries cover some position (same unit only; see ScheduleRouter)."""
        if self.in_seconds != other.in_seconds:
            return False
        return ((other.end is None or self.start < other.end)
                and (self.end is None or other.start < self.end))

    def __str__(self) -> str:
        unit = "s" if self.in_seconds else ""
        end = "" if self.end is None else f"{self.end:g}{unit}"
        return f"{self.name} ({self.start:g}{unit}-{end} {self.weather})"


def _conflict(name: str, first: ScheduleEntry, second: ScheduleEntry) -> GpmaskError:
    return GpmaskError(f"{name}: {first} and {second} overlap; every frame must be covered "
                       f"by exactly one entry")


class ScheduleRouter(Router):
    """Weather by frame ranges or time ranges, read from a CSV or JSON file.

    CSV: a header ``start,end,weather``; JSON: a list of objects with those keys.
    A bound is a frame index (``120``) or a time in seconds with an ``s`` suffix
    (``4.5s``); ``end`` is exclusive and may be empty (CSV) or absent (JSON) for "to the
    end". Each frame must be covered by exactly one entry: overlapping entries are
    refused when the schedule is read (entries of one unit) or at the first frame both
    cover (a frame range and a time range, which meet only at the video's frame rate);
    a frame no entry covers is an error too.
    """

    def __init__(self, entries: list[ScheduleEntry], name: str) -> None:
        if not entries:
            raise GpmaskError(f"{name}: the schedule has no entries")
        for index, first in enumerate(entries):
            for second in entries[index + 1:]:
                if first.overlaps(second):
                    raise _conflict(name, first, second)
        self.entries = entries
        self.name = name

    @classmethod
    def load(cls, path: Path, known: list[str]) -> ScheduleRouter:
        """Read a schedule; every weather must be in ``known``."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise GpmaskError(f"{path}: cannot read the schedule ({exc.strerror})") from exc
        if path.suffix.lower() == ".json":
            try:
                rows = json.loads(text)
            except ValueError as exc:
                raise GpmaskError(f"{path}: not valid JSON ({exc})") from exc
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise GpmaskError(f"{path}: expected a list of {{start, end, weather}} objects")
        else:
            rows = _csv_rows(text, path)
        entries = [_schedule_entry(row, f"{path}", f"entry {n + 1}", known) for n, row in
                   enumerate(rows)]
        return cls(entries, str(path))

    def route(self, frame: Frame) -> str:
        covering = [entry for entry in self.entries if entry.covers(frame)]
        if len(covering) > 1:
            raise _conflict(self.name, *covering[:2])
        if covering:
            return covering[0].weather
        raise GpmaskError(
            f"{self.name}: no entry covers frame {frame.index} (t={frame.time_s:.2f}s)"
        )


def _csv_rows(text: str, path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV schedule; a row with fewer or more fields than the header is
    refused by its line number (csv fills missing fields with None)."""
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or not {"start", "weather"} <= set(reader.fieldnames):
        raise GpmaskError(f"{path}: expected a CSV header start,end,weather")
    header = ",".join(reader.fieldnames)
    rows = []
    for row in reader:
        if None in row.values():
            raise GpmaskError(f"{path} line {reader.line_num}: the row has too few fields; "
                              f"expected {header}")
        if None in row:
            raise GpmaskError(f"{path} line {reader.line_num}: the row has too many fields; "
                              f"expected {header}")
        rows.append(row)
    return rows


def _schedule_entry(
    row: dict[str, Any], path: str, name: str, known: list[str]
) -> ScheduleEntry:
    where = f"{path} {name}"
    weather = str(row.get("weather") or "").strip()
    if not weather:
        raise GpmaskError(f"{where}: no weather given; expected one of {', '.join(known)}")
    if weather not in known:
        raise GpmaskError(f"{where}: weather {weather!r} is not one of {', '.join(known)}")
    start, start_s = _schedule_bound(row.get("start"), where)
    if start is None:
        raise GpmaskError(f"{where}: 'start' is required")
    end, end_s = _schedule_bound(row.get("end"), where)
    if end is not None and (end_s != start_s or end <= start):
        raise GpmaskError(f"{where}: 'end' must be after 'start', in the same unit")
    return ScheduleEntry(start, end, start_s, weather, name)


def _schedule_bound(value: Any, where: str) -> tuple[float | None, bool]:
    """(number, is_seconds) of one bound; None for an absent or empty bound."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, False
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return float(value), False
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return float(text), False
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*s", text)
    if match:
        return float(match.group(1)), True
    raise GpmaskError(
        f"{where}: bound {value!r} is neither a frame index (120) nor seconds (4.5s)"
    )


class Hysteresis:
    """Turns the router's decisions, frame by frame, into the weather each frame gets.

    A weather is *in force* once it wins ``switch_after`` decisions in a row
    (:data:`CLEAR` ends one after ``clear_after``); the very first sure decision is taken
    at once, as nothing is held yet. A frame goes to the weather in force only when its
    own decision agrees; a frame whose decision is another class, or :data:`UNSURE`, is
    passed through (:data:`CLEAR`) until that class wins. So one odd decision on a steady
    scene costs one frame its restoration, never a run through the wrong network, and
    right after a change of weather the new weather's frames are passed through, not
    restored by the old weather's network, until the new weather takes over. An unsure
    decision says nothing for or against any class: it neither counts for a challenger
    nor breaks its run.
    """

    def __init__(self, switch_after: int, clear_after: int) -> None:
        self.switch_after = switch_after
        self.clear_after = clear_after
        self.current: str | None = None
        self.candidate: str | None = None
        self.votes = 0

    def update(self, decision: str) -> str:
        """Feed one decision (a class or :data:`UNSURE`); return the weather for its frame."""
        if decision == UNSURE:
            return CLEAR
        if self.current is None or decision == self.current:
            self.current = decision
            self.candidate, self.votes = None, 0
            return decision
        if decision == self.candidate:
            self.votes += 1
        else:
            self.candidate, self.votes = decision, 1
        if self.votes >= (self.clear_after if decision == CLEAR else self.switch_after):
            self.current = decision
            self.candidate, self.votes = None, 0
            return decision
        return CLEAR


@dataclass(frozen=True)
class RoutingPolicy:
    """How often the classifier decides, how sure it must be, and when it switches.

    Attributes:
        every: decide on every ``every``-th frame; frames between keep the weather.
        switch_after: decisions a new weather must win in a row (see :class:`Hysteresis`).
        clear_after: decisions :data:`CLEAR` must win in a row to end a weather.
        min_confidence: the calibrated probability under which a decision is
            :data:`UNSURE` and the frame is passed through (0 never passes a frame for
            doubt).
    """

    every: int = 1
    switch_after: int = 2
    clear_after: int = 1
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        for name in ("every", "switch_after", "clear_after"):
            value = getattr(self, name)
            if value < 1:
                option = "route-every" if name == "every" else name.replace("_", "-")
                raise GpmaskError(f"--{option} must be at least 1, got {value}")
        if not 0 <= self.min_confidence < 1:
            raise GpmaskError(f"--min-confidence must be at least 0 and below 1, got "
                              f"{self.min_confidence}")


def router_session(path: str | Path):
    """An ONNX Runtime session of a router graph, on one thread: the network is tiny, and
    threads would cost more than they save beside the restorer."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ClassifierRouter(Router):
    """The bundle's weather classifier (``router.onnx``) run with ONNX Runtime.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the classifier.
        classes: class names in output order (``clear`` and weathers).
        tile: side of the square tiles the classifier sees.
        grid: (rows, cols) of tiles per frame.
        policy: when to decide, how sure to be, when to switch.
    """

    def __init__(
        self,
        session: Any,
        classes: list[str],
        tile: int,
        grid: tuple[int, int],
        policy: RoutingPolicy = RoutingPolicy(),
    ) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.classes = classes
        self.tile = tile
        self.grid = grid
        self.policy = policy
        self.hysteresis = Hysteresis(policy.switch_after, policy.clear_after)
        self.weather = CLEAR
        #: the classifier's latest decision (a class or UNSURE, before hysteresis), for logs.
        self.last_decision: str | None = None

    @classmethod
    def load(cls, path: str | Path, record: RouterRecord,
             policy: RoutingPolicy = RoutingPolicy()) -> ClassifierRouter:
        """The router graph at ``path`` described by ``record``."""
        return cls(router_session(path), list(record.classes), record.input_size[0],
                   record.grid, policy)

    @classmethod
    def from_bundle(cls, bundle: Bundle, policy: RoutingPolicy = RoutingPolicy()
                    ) -> ClassifierRouter:
        """Load the bundle's router after checking its hash; refuse a bundle without one."""
        entry = bundle.router
        if entry is None:
            raise GpmaskError(
                f"bundle {bundle.root} has no weather router; train one with "
                f"`gpmask train-router {bundle.root}` or pass --weather NAME"
            )
        bundle.verify([entry.path])
        unknown = [c for c in entry.classes if c not in (CLEAR, *bundle.weathers)]
        if unknown:
            raise GpmaskError(f"bundle router classes {unknown} are not weathers of the bundle")
        return cls.load(bundle.root / entry.path, entry, policy)

    def probabilities(self, bgr: np.ndarray) -> np.ndarray:
        """The calibrated probability of each class for one frame."""
        tiles = router_input(bgr, self.tile, self.grid)
        return class_probabilities(self.session.run(None, {self.input_name: tiles})[0][0])

    def classify(self, bgr: np.ndarray) -> str:
        """The classifier's decision for one frame (a class, or :data:`UNSURE` when its
        top probability is under the policy's ``min_confidence``), without hysteresis."""
        return decide(self.probabilities(bgr), self.classes, self.policy.min_confidence)

    def step(self, probabilities: np.ndarray) -> str:
        """The weather for the next decided frame, given its class probabilities."""
        self.last_decision = decide(probabilities, self.classes, self.policy.min_confidence)
        self.weather = self.hysteresis.update(self.last_decision)
        return self.weather

    def route(self, frame: Frame) -> str:
        if frame.index % self.policy.every == 0 or self.last_decision is None:
            return self.step(self.probabilities(frame.pixels))
        return self.weather


def make_router(spec: str, bundle: Bundle, policy: RoutingPolicy = RoutingPolicy()) -> Router:
    """The router ``--weather`` names: a weather, ``common``, ``clear``, ``auto`` or a
    schedule file (``.csv`` or ``.json``)."""
    known = [*bundle.weathers, COMMON, CLEAR]
    if spec == "auto":
        return ClassifierRouter.from_bundle(bundle, policy)
    if spec in known:
        return FixedRouter(spec)
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".json"):
        if not path.is_file():
            raise GpmaskError(f"{spec}: no such schedule file")
        return ScheduleRouter.load(path, known)
    raise GpmaskError(
        f"--weather {spec!r}: not a weather of this bundle ({', '.join(known)}), "
        f"'auto', or a schedule file (.csv or .json)"
    )
