"""The demo's clip, run and report: synthetic changing weather in, restored video and figures out.

The clip pans across held-out clean images (never used to train the demo model or
its router) while the weather changes: rain, then snow, then raindrops, then clear.
Rain streaks and snow flakes are drawn anew on every frame; drops on the lens stay
put, as they would on a camera. The loop restores the clip with ``auto`` routing and
the report compares input and restored frames with the clean ground truth, per
weather segment, and plots the true and chosen weather and the latency per frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path, write_text_atomic
from gpmask.runtime.loop import LoopResult, run_loop
from gpmask.runtime.routing import CLEAR, make_router
from gpmask.runtime.sinks import FrameSink, VideoFileSink
from gpmask.runtime.video import open_source, read_video
from gpmask.sizes import Size

#: The weather sequence of the demo clip, in order (weathers a bundle lacks are left out).
DEMO_SEQUENCE = ("rain", "snow", "raindrop", CLEAR)
#: Weathers whose synthetic pattern is fixed on the lens rather than redrawn each frame.
STATIC_WEATHERS = ("raindrop",)
#: The demo's summary file; its presence marks a folder the demo wrote.
SUMMARY_FILE = "psnr.json"
#: What an output folder that ``gpmask demo --force`` may replace is (see gpmask.fileio).
DEMO_FOLDER = "a gpmask demo folder"


def is_demo_output(folder: Path) -> bool:
    """Whether ``folder`` is an earlier demo's output (its summary says so)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"routing_accuracy", "psnr"} <= set(summary)


@dataclass
class Clip:
    """Clean and degraded frames (uint8 BGR) and each frame's true weather."""

    clean: list[np.ndarray]
    degraded: list[np.ndarray]
    weathers: list[str]
    fps: float


def make_clip(
    weathers: list[str], frames: int = 96, size: Size = (192, 192), fps: float = 12.0,
    seed: int = 0,
) -> Clip:
    """A clip of ``frames`` frames of ``size`` (height, width) in :data:`DEMO_SEQUENCE` order."""
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import degrade

    sequence = [w for w in DEMO_SEQUENCE if w == CLEAR or w in weathers]
    if len(sequence) < 2:
        raise GpmaskError(
            f"the demo needs a bundle with at least one of {', '.join(DEMO_SEQUENCE[:-1])}; "
            f"this one has {', '.join(weathers)}"
        )
    if frames < len(sequence):
        raise GpmaskError(f"--frames must be at least {len(sequence)}, got {frames}")
    images = sample_images("heldout")
    clip = Clip([], [], [], fps)
    for segment, weather in enumerate(sequence):
        count = frames // len(sequence) + (segment < frames % len(sequence))
        image = images[segment % len(images)]
        for step in range(count):
            clean = _pan(image, step / max(count - 1, 1), size)
            if weather == CLEAR:
                degraded = clean
            else:
                segment_seed = seed * 100_003 + segment * 1009
                frame_seed = segment_seed + (0 if weather in STATIC_WEATHERS else step)
                # One look (haze, wind, flake sizes) per segment; streaks and flakes move.
                degraded = degrade(clean, weather, seed=frame_seed, look_seed=segment_seed)
            clip.clean.append(_to_bgr_uint8(clean))
            clip.degraded.append(_to_bgr_uint8(degraded))
            clip.weathers.append(weather)
    return clip


def _pan(image: np.ndarray, position: float, size: Size) -> np.ndarray:
    """A window of ``size``'s aspect, 70% of the largest such window the image holds,
    moved left to right and resized to ``size``."""
    height, width = image.shape[:2]
    aspect = size[1] / size[0]
    window_h = int(min(height, width / aspect) * 0.7)
    window_w = int(window_h * aspect)
    left = int(round((width - window_w) * position))
    top = (height - window_h) // 2
    window = image[top : top + window_h, left : left + window_w]
    return cv2.resize(window, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _to_bgr_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, ::-1])


class KeepingSink(FrameSink):
    """Forwards frames to another sink and keeps a copy of each.

    The demo scores the restored frames as the network returned them: re-encoded, a
    clear frame passed through unchanged would lose a JPEG generation and look worse
    than its input.
    """

    def __init__(self, inner: FrameSink) -> None:
        self.inner = inner
        self.path = inner.path
        self.frames: list[np.ndarray] = []

    def write(self, pixels: np.ndarray, name: str | None = None) -> None:
        self.inner.write(pixels, name)
        self.frames.append(pixels.copy())
        self.frames_written = self.inner.frames_written

    def close(self, complete: bool = True) -> None:
        self.inner.close(complete)
        self.kept = self.inner.kept


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Frames to a video file with the same sink the loop uses."""
    sink = VideoFileSink(path, fps)
    try:
        for frame in frames:
            sink.write(frame)
    finally:
        sink.close()


def psnr(first: np.ndarray, second: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (OpenCV's definition, peak 255)."""
    return float(cv2.PSNR(first, second))


def _mean_psnr(frames: list[np.ndarray], clean: list[np.ndarray], index: list[int]) -> float:
    return float(np.mean([psnr(frames[i], clean[i]) for i in index]))


def psnr_table(
    clip: Clip, inputs: list[np.ndarray], restored: list[np.ndarray], chosen: list[str]
) -> dict:
    """Mean PSNR against the clean frames per true weather, split by the weather routed to.

    ``chosen`` is the router's weather per frame. A frame routed to another weather than
    its own is restored by the wrong network (or passed through): it measures the
    router, not the restoration, so those frames are reported apart, under ``routed``.
    Each true weather's ``input_psnr``/``restored_psnr`` cover the frames routed to it.
    """
    table = {}
    done = min(len(restored), len(chosen))
    for weather in dict.fromkeys(clip.weathers):
        index = [i for i, w in enumerate(clip.weathers) if w == weather and i < done]
        routed: dict[str, list[int]] = {}
        for i in index:
            routed.setdefault(chosen[i], []).append(i)
        right = routed.get(weather, [])
        table[weather] = {
            "frames": len(index),
            "frames_routed_right": len(right),
            "input_psnr": _mean_psnr(inputs, clip.clean, right) if right else None,
            "restored_psnr": _mean_psnr(restored, clip.clean, right) if right else None,
            "routed": {
                other: {"frames": len(frames), "input_psnr": _mean_psnr(inputs, clip.clean, frames),
                        "restored_psnr": _mean_psnr(restored, clip.clean, frames)}
                for other, frames in routed.items() if other != weather
            },
        }
    return table


def switch_lags(true: list[str], chosen: list[str]) -> list[dict]:
    """For every change of the true weather, the frames until the router followed it."""
    lags = []
    for start in range(1, min(len(true), len(chosen))):
        if true[start] == true[start - 1]:
            continue
        end = start
        while end < len(chosen) and true[end] == true[start] and chosen[end] != true[start]:
            end += 1
        lags.append({"frame": start, "from": true[start - 1], "to": true[start],
                     "frames": end - start})
    return lags


def format_table(table: dict, routing_accuracy: float, lags: list[dict]) -> str:
    """The PSNR table as markdown, with a sentence on each kind of row."""
    lines = [
        "| true weather | routed to | frames | input PSNR (dB) | restored PSNR (dB) | gain (dB) |",
        "|---|---|---:|---:|---:|---:|",
    ]

    def row(weather: str, routed: str, entry: dict) -> str:
        gain = entry["restored_psnr"] - entry["input_psnr"]
        return (f"| {weather} | {routed} | {entry['frames']} | {entry['input_psnr']:.2f} | "
                f"{entry['restored_psnr']:.2f} | {gain:+.2f} |")

    for weather, entry in table.items():
        if entry["frames_routed_right"]:
            lines.append(row(weather, weather, {**entry, "frames": entry["frames_routed_right"]}))
        for routed, other in entry["routed"].items():
            lines.append(row(weather, routed, other))
    lines += [
        "",
        "PSNR against the clean frames: the input as the network got it (decoded from "
        "input.avi), the output as the network returned it (before restored.avi encodes "
        "it). A row whose weather and route agree is what the restoration network does for "
        f"its own weather; a `{CLEAR}` frame routed to `{CLEAR}` is passed through, so its "
        "gain is 0.",
        "Rows where the route differs from the true weather are frames the router sent "
        "elsewhere, nearly all just after the weather changed: the router switches to a new "
        "weather only after several agreeing decisions (`--switch-after`; to clear sooner, "
        "`--clear-after`), so the first frames of a new weather still go to the old one.",
        f"Routing: the chosen weather matched the true one on {routing_accuracy:.1%} of frames.",
    ]
    if lags:
        lag_text = ", ".join(f"{lag['from']} to {lag['to']} {lag['frames']}" for lag in lags)
        lines.append(f"Frames before the router followed each change: {lag_text}.")
    return "\n".join(lines) + "\n"


def plot_timeline(path: Path, clip: Clip, result: LoopResult, classes: list[str]) -> None:
    """PNG: true and chosen weather per frame (top), restore latency per frame (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    level = {name: i for i, name in enumerate(classes)}
    index = [r.frame for r in result.records]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    figure.suptitle("gpmask demo: weather per frame (true and chosen by the router) "
                    "and latency")
    top.step(range(len(clip.weathers)), [level[w] for w in clip.weathers], where="post",
             label="true", linewidth=3, alpha=0.5)
    top.step(index, [level[r.weather] for r in result.records], where="post", label="chosen")
    top.set_yticks(range(len(classes)), classes)
    top.set_ylabel("weather")
    top.set_title("weather per frame", fontsize=10)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    bottom.plot(index, [r.restore_ms for r in result.records], label="restore")
    bottom.plot(index, [r.route_ms for r in result.records], label="route")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("frame")
    bottom.set_title("time per frame to route and to restore", fontsize=10)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)


def run_demo(
    bundle_path: str | Path,
    output: Path,
    frames: int = 96,
    size: Size = (192, 192),
    backend: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> dict:
    """Make the clip, restore it with ``auto`` routing, write videos, table and plot.

    Writes into the existing folder ``output``: ``input.avi``, ``restored.avi``,
    ``side_by_side.avi``, ``frames.csv``, ``psnr.json``, ``psnr.md``, ``timeline.png``.
    Returns the JSON summary.
    """
    from gpmask.runtime import Restorer

    bundle = Bundle.open(bundle_path)
    router = make_router("auto", bundle)
    clip = make_clip(bundle.weathers, frames=frames, size=size)
    write_video(output / "input.avi", clip.degraded, clip.fps)
    source = open_source(str(output / "input.avi"))
    restored = KeepingSink(VideoFileSink(output / "restored.avi", source.fps))
    with Restorer(bundle, backend=backend, precision=precision) as restorer:
        backend_name, precision = restorer.backend_name, restorer.precision
        result = run_loop(
            source, restorer, router, restored,
            side_by_side_sink=VideoFileSink(output / "side_by_side.avi", source.fps),
            log_path=output / "frames.csv", progress=progress,
        )
    inputs = read_video(output / "input.avi")
    chosen = [r.weather for r in result.records]
    table = psnr_table(clip, inputs, restored.frames, chosen)
    lags = switch_lags(clip.weathers, chosen)
    accuracy = float(np.mean([c == t for c, t in zip(chosen, clip.weathers, strict=False)]))
    summary = {
        "bundle": "bundle" if bundle.root == output / "bundle" else str(bundle.root),
        "backend": backend_name,
        "precision": precision,
        "frames": len(result.records),
        "size": list(size),
        "loop_fps": result.fps,
        "mean_restore_ms": float(np.mean([r.restore_ms for r in result.records])),
        "routing_accuracy": accuracy,
        "switch_lags": lags,
        "psnr": table,
        "note": "PSNR against the clean frames: the network's input as decoded from "
                "input.avi, its output before restored.avi encodes it",
    }
    write_text_atomic(output / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    write_text_atomic(output / "psnr.md", format_table(table, accuracy, lags))
    plot_timeline(output / "timeline.png", clip, result, [CLEAR, *bundle.weathers])
    return summary

