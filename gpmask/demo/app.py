"""The demo's clip, run and report: synthetic changing weather in, restored video and figures out.

The clip (:func:`gpmask.data.clips.make_clip`) pans across held-out clean images while
the weather changes: rain, then snow, then raindrops, then clear. The loop restores it
with ``auto`` routing and the report compares input and restored frames with the clean
ground truth, per weather segment, and plots the true and chosen weather and the latency
per frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from gpmask.bundle import Bundle
from gpmask.data.clips import Clip, make_clip
from gpmask.fileio import atomic_path, write_text_atomic
from gpmask.metrics import switch_lags
from gpmask.runtime.loop import LoopResult, run_loop
from gpmask.runtime.routing import CLEAR, make_router
from gpmask.runtime.sinks import FrameSink, VideoFileSink
from gpmask.runtime.video import open_source, read_video
from gpmask.sizes import Size

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
        "Rows where the route differs from the true weather are frames the router did not "
        f"send to their own weather's network, nearly all just after the weather changed: a "
        f"new weather takes over only after agreeing decisions (`--switch-after`), and until "
        f"then its frames are passed through (routed to `{CLEAR}`), as is every frame the "
        f"router is unsure of (`--min-confidence`), rather than restored by another "
        f"weather's network.",
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

