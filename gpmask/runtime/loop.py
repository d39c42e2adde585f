"""The video loop: decode, route and restore, encode — three stages on bounded queues.

Decoding and encoding run in their own threads (OpenCV releases the GIL while it
works), routing and restoring in the calling thread, so the loop runs about as fast
as its slowest stage, which is restoring. Queues are bounded so a fast decoder never
fills memory.

Whatever stops the loop (the end of the input, a failing input, a failing restore,
Ctrl-C or SIGTERM), the frames already restored are still encoded, the sinks are closed
(a video file is finalised and playable) and the per-frame log is written; then the
failure, if any, is raised again. Only a run that reached the input's end (or a live
camera's stop) replaces the output the user named; one stopped short leaves it as it
was and keeps its frames under a partial name (:mod:`gpmask.runtime.sinks`).

Frames reach the restorer as the source decoded them (an image keeps its layout and bit
depth); the router and the side-by-side view see them as 8-bit BGR.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gpmask.bundle import COMMON
from gpmask.errors import GpmaskError
from gpmask.fileio import write_text_atomic
from gpmask.runtime.routing import CLEAR, Router
from gpmask.runtime.sinks import FrameSink
from gpmask.runtime.video import Frame, FrameSource, side_by_side, to_bgr8

#: What a ``clear`` frame gets: passed through untouched, or restored by the common graph.
CLEAR_MODES = ("pass", COMMON)
_END = object()
_POLL_S = 0.1


class FrameRestorer(Protocol):
    """What the loop needs of :class:`gpmask.runtime.Restorer`."""

    def restore(self, frame: np.ndarray, weather: str, bgr: bool = False) -> np.ndarray: ...


@dataclass
class FrameRecord:
    """One frame's route and the time each stage took on it (milliseconds)."""

    frame: int
    time_s: float
    weather: str
    decision: str
    decode_ms: float
    route_ms: float
    restore_ms: float
    encode_ms: float = float("nan")


@dataclass
class LoopResult:
    """The frames written, in order, and the loop's wall-clock time."""

    records: list[FrameRecord]
    seconds: float

    @property
    def fps(self) -> float:
        return len(self.records) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Failure:
    error: BaseException


def run_loop(
    source: FrameSource,
    restorer: FrameRestorer,
    router: Router,
    sink: FrameSink | None = None,
    *,
    side_by_side_sink: FrameSink | None = None,
    clear: str = "pass",
    log_path: str | Path | None = None,
    progress: bool = True,
    queue_size: int = 8,
) -> LoopResult:
    """Restore every frame of ``source``; see the module docstring.

    Args:
        sink: receives the restored frames.
        side_by_side_sink: receives input and restored frame next to each other.
        clear: what a frame routed to ``clear`` gets (:data:`CLEAR_MODES`).
        log_path: CSV with one :class:`FrameRecord` per frame written.
        progress: show a tqdm bar with frames per second.
        queue_size: frames each queue holds at most.
    """
    if clear not in CLEAR_MODES:
        raise GpmaskError(f"--clear {clear!r}: expected one of {', '.join(CLEAR_MODES)}")
    sinks = [s for s in (sink, side_by_side_sink) if s is not None]
    if not sinks:
        raise GpmaskError("the loop needs an output (a restored or a side-by-side sink)")
    from tqdm import tqdm

    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(queue_size)
    restored: queue.Queue = queue.Queue(queue_size)
    records: list[FrameRecord] = []
    encode_failure: list[BaseException] = []
    bar = tqdm(total=source.expected_frames, unit="frame", disable=not progress, leave=True)

    decoder = threading.Thread(target=_decode, args=(source, decoded, stop), daemon=True)
    encoder = threading.Thread(
        target=_encode, args=(sinks, restored, records, encode_failure, stop, bar), daemon=True
    )
    start = time.perf_counter()
    decoder.start()
    encoder.start()
    failure: BaseException | None = None
    try:
        while True:
            item = decoded.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.error
            if encode_failure:
                break
            frame, decode_ms = item
            record, output = _route_and_restore(frame, decode_ms, restorer, router, clear)
            outputs = [output] if sink is not None else []
            if side_by_side_sink is not None:
                outputs.append(side_by_side(to_bgr8(frame.pixels), to_bgr8(output), "input",
                                            restored_caption(record, clear)))
            if not _put(restored, (record, outputs, frame.name), stop):
                break
            bar.set_postfix_str(record.weather, refresh=False)
    except BaseException as error:
        failure = error
        raise
    finally:
        _put(restored, _END, stop)
        encoder.join()
        stop.set()
        decoder.join()
        source.close()
        stopped_live = isinstance(failure, KeyboardInterrupt) and source.live
        complete = (failure is None or stopped_live) and not encode_failure
        closing: list[BaseException] = []
        for each in sinks:  # every sink, even when one fails to close
            try:
                each.close(complete)
            except BaseException as error:
                closing.append(error)
        bar.close()
        if log_path is not None:
            write_frame_log(log_path, records)
        if closing:
            raise closing[0]
    if encode_failure:
        raise encode_failure[0]
    return LoopResult(records, time.perf_counter() - start)


def _route_and_restore(
    frame: Frame, decode_ms: float, restorer: FrameRestorer, router: Router, clear: str
) -> tuple[FrameRecord, np.ndarray]:
    tick = time.perf_counter()
    weather = router.route(replace(frame, pixels=to_bgr8(frame.pixels)))
    routed = time.perf_counter()
    if weather == CLEAR and clear == "pass":
        output = frame.pixels
    else:
        try:
            output = restorer.restore(frame.pixels, COMMON if weather == CLEAR else weather,
                                      bgr=True)
        except GpmaskError as exc:
            raise GpmaskError(f"frame {frame.index}: {exc}") from exc
    done = time.perf_counter()
    decision = getattr(router, "last_decision", None) or weather
    record = FrameRecord(
        frame.index, frame.time_s, weather, decision,
        decode_ms, (routed - tick) * 1e3, (done - routed) * 1e3,
    )
    return record, output


def restored_caption(record: FrameRecord, clear: str) -> str:
    """What the right half of a side-by-side frame shows: the weather used and its latency."""
    if record.weather == CLEAR and clear == "pass":
        return "clear: passed through"
    network = f"{COMMON} (clear)" if record.weather == CLEAR else record.weather
    return f"restored: {network}, {record.restore_ms:.1f} ms"


def _put(target: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first; True when it was put."""
    while not stop.is_set():
        try:
            target.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _decode(source: FrameSource, decoded: queue.Queue, stop: threading.Event) -> None:
    """Decoder thread: frames (with their decode time) then ``_END`` or a ``_Failure``."""
    try:
        frames = source.frames()
        while not stop.is_set():
            tick = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            if not _put(decoded, (frame, (time.perf_counter() - tick) * 1e3), stop):
                return
    except BaseException as error:  # handed to the main thread, which raises it
        _put(decoded, _Failure(error), stop)
        return
    _put(decoded, _END, stop)


def _encode(
    sinks: list[FrameSink],
    restored: queue.Queue,
    records: list[FrameRecord],
    failure: list[BaseException],
    stop: threading.Event,
    bar: Any,
) -> None:
    """Encoder thread: writes frames until ``_END``; keeps the first error in ``failure``."""
    while True:
        item = restored.get()
        if item is _END:
            return
        record, outputs, name = item
        tick = time.perf_counter()
        try:
            for sink, output in zip(sinks, outputs, strict=True):
                sink.write(output, name)
        except BaseException as error:
            failure.append(error)
            stop.set()
            return
        record.encode_ms = (time.perf_counter() - tick) * 1e3
        records.append(record)
        bar.update(1)


def write_frame_log(path: str | Path, records: list[FrameRecord]) -> None:
    """The per-frame CSV: index, time, weather chosen, raw decision, latency per stage."""
    names = [f.name for f in fields(FrameRecord)]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for record in records:
        row = asdict(record)
        writer.writerow({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in row.items()})
    write_text_atomic(path, text.getvalue())
