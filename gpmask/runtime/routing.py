"""Choosing each frame's weather: a fixed name, a schedule file, or the bundle's classifier.

A router's :meth:`~Router.route` returns a weather of the bundle, ``common``, or
:data:`CLEAR` (no weather: the loop passes the frame through or uses the common
graph). The classifier router decides on a downscaled frame every K frames and
switches only after a :class:`Hysteresis` of M agreeing decisions, so one odd frame
never makes the restorer flicker between weathers.
"""

from __future__ import annotations

import csv
import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gpmask.bundle import CLEAR, COMMON, Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.video import Frame


def router_input(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The classifier's input for one BGR frame: 1x3xHxW float32 RGB in [0, 1].

    Shared by training (:mod:`gpmask.router.training`) and run time so both see the
    same downscaling (area averaging, which keeps thin rain streaks as a texture).
    """
    height, width = size
    small = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


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
    """Holds a choice until a different one wins ``switch_after`` consecutive decisions.

    The first decision is taken at once (there is nothing to hold yet). Switching to
    :data:`CLEAR` takes ``clear_after`` decisions instead: a weather network run on a
    clear frame can only make it worse, while a rainy frame passed through loses no
    more than a clear one would gain, so the router should leave a weather sooner than
    it enters one.
    """

    def __init__(self, switch_after: int, clear_after: int | None = None) -> None:
        clear_after = switch_after if clear_after is None else clear_after
        for name, value in (("switch-after", switch_after), ("clear-after", clear_after)):
            if value < 1:
                raise GpmaskError(f"{name} must be at least 1, got {value}")
        self.switch_after = switch_after
        self.clear_after = clear_after
        self.current: str | None = None
        self.candidate: str | None = None
        self.votes = 0

    def update(self, decision: str) -> str:
        """Feed one decision; return the choice in force after it."""
        if self.current is None or decision == self.current:
            self.current = decision
            self.candidate, self.votes = None, 0
            return self.current
        if decision == self.candidate:
            self.votes += 1
        else:
            self.candidate, self.votes = decision, 1
        if self.votes >= (self.clear_after if decision == CLEAR else self.switch_after):
            self.current = decision
            self.candidate, self.votes = None, 0
        return self.current


@dataclass(frozen=True)
class RoutingPolicy:
    """How often the classifier decides and how many agreeing decisions make it switch.

    Attributes:
        every: decide on every ``every``-th frame; frames between keep the choice.
        switch_after: decisions a new weather must win in a row (see :class:`Hysteresis`).
        clear_after: decisions :data:`CLEAR` must win in a row to end a weather.
    """

    every: int = 1
    switch_after: int = 3
    clear_after: int = 3

    def __post_init__(self) -> None:
        if self.every < 1:
            raise GpmaskError(f"route-every must be at least 1, got {self.every}")


class ClassifierRouter(Router):
    """The bundle's weather classifier (``router.onnx``) run with ONNX Runtime.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the classifier.
        classes: class names in output order (``clear`` and weathers).
        input_size: (height, width) the frame is downscaled to.
        policy: when to decide and when to switch.
    """

    def __init__(
        self,
        session: Any,
        classes: list[str],
        input_size: tuple[int, int],
        policy: RoutingPolicy = RoutingPolicy(),
    ) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.classes = classes
        self.input_size = input_size
        self.every = policy.every
        self.hysteresis = Hysteresis(policy.switch_after, policy.clear_after)
        #: the classifier's latest raw decision (before hysteresis), for logs.
        self.last_decision: str | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle, policy: RoutingPolicy = RoutingPolicy()
                    ) -> ClassifierRouter:
        """Load the bundle's router after checking its hash; refuse a bundle without one."""
        import onnxruntime as ort

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
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a tiny network: threads would cost more than they save
        session = ort.InferenceSession(
            str(bundle.root / entry.path), options, providers=["CPUExecutionProvider"]
        )
        return cls(session, list(entry.classes), entry.input_size, policy)

    def classify(self, bgr: np.ndarray) -> str:
        """The classifier's decision for one frame, without hysteresis."""
        logits = self.session.run(None, {self.input_name: router_input(bgr, self.input_size)})[0]
        return self.classes[int(np.argmax(logits[0]))]

    def route(self, frame: Frame) -> str:
        if frame.index % self.every == 0 or self.hysteresis.current is None:
            self.last_decision = self.classify(frame.pixels)
            return self.hysteresis.update(self.last_decision)
        return self.hysteresis.current


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
