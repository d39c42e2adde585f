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
from gpmask.runtime.video import VideoFileSink, open_source, read_video

#: The weather sequence of the demo clip, in order (weathers a bundle lacks are left out).
DEMO_SEQUENCE = ("rain", "snow", "raindrop", CLEAR)
#: Weathers whose synthetic pattern is fixed on the lens rather than redrawn each frame.
STATIC_WEATHERS = ("raindrop",)


@dataclass
class Clip:
    """Clean and degraded frames (uint8 BGR) and each frame's true weather."""

    clean: list[np.ndarray]
    degraded: list[np.ndarray]
    weathers: list[str]
    fps: float


def make_clip(
    weathers: list[str], frames: int = 96, size: int = 192, fps: float = 12.0, seed: int = 0
) -> Clip:
    """A clip of ``frames`` frames (``size`` x ``size``) in :data:`DEMO_SEQUENCE` order."""
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


def _pan(image: np.ndarray, position: float, size: int) -> np.ndarray:
    """A square window (70% of the shorter side) moved left to right, resized to ``size``."""
    height, width = image.shape[:2]
    side = int(min(height, width) * 0.7)
    left = int(round((width - side) * position))
    top = (height - side) // 2
    window = image[top : top + side, left : left + side]
    return cv2.resize(window, (size, size), interpolation=cv2.INTER_AREA)


def _to_bgr_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)[:, :, ::-1])


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


def psnr_table(clip: Clip, inputs: list[np.ndarray], restored: list[np.ndarray]) -> dict:
    """Mean PSNR against the clean frames, per true weather: the input and the restored."""
    table = {}
    for weather in dict.fromkeys(clip.weathers):
        index = [i for i, w in enumerate(clip.weathers) if w == weather and i < len(restored)]
        table[weather] = {
            "frames": len(index),
            "input_psnr": float(np.mean([psnr(inputs[i], clip.clean[i]) for i in index])),
            "restored_psnr": float(np.mean([psnr(restored[i], clip.clean[i]) for i in index])),
        }
    return table


def format_table(table: dict, routing_accuracy: float) -> str:
    """The PSNR table as markdown."""
    lines = [
        "| weather | frames | input PSNR (dB) | restored PSNR (dB) | gain (dB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for weather, row in table.items():
        gain = row["restored_psnr"] - row["input_psnr"]
        lines.append(
            f"| {weather} | {row['frames']} | {row['input_psnr']:.2f} | "
            f"{row['restored_psnr']:.2f} | {gain:+.2f} |"
        )
    lines.append("")
    lines.append(f"Routing: the chosen weather matched the true one on {routing_accuracy:.1%} "
                 f"of frames.")
    return "\n".join(lines) + "\n"


def plot_timeline(path: Path, clip: Clip, result: LoopResult, classes: list[str]) -> None:
    """PNG: true and chosen weather per frame (top), restore latency per frame (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    level = {name: i for i, name in enumerate(classes)}
    index = [r.frame for r in result.records]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    top.step(range(len(clip.weathers)), [level[w] for w in clip.weathers], where="post",
             label="true", linewidth=3, alpha=0.5)
    top.step(index, [level[r.weather] for r in result.records], where="post", label="chosen")
    top.set_yticks(range(len(classes)), classes)
    top.set_ylabel("weather")
    top.legend(loc="upper right")
    bottom.plot(index, [r.restore_ms for r in result.records], label="restore")
    bottom.plot(index, [r.route_ms for r in result.records], label="route")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("frame")
    bottom.legend(loc="upper right")
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)


def run_demo(
    bundle_path: str | Path,
    output: Path,
    frames: int = 96,
    size: int = 192,
    backend: str = "auto",
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
    restorer = Restorer(bundle.root, backend=backend)
    clip = make_clip(bundle.weathers, frames=frames, size=size)
    write_video(output / "input.avi", clip.degraded, clip.fps)
    source = open_source(str(output / "input.avi"))
    result = run_loop(
        source, restorer, router,
        VideoFileSink(output / "restored.avi", source.fps),
        side_by_side_sink=VideoFileSink(output / "side_by_side.avi", source.fps),
        log_path=output / "frames.csv", progress=progress,
    )
    inputs = read_video(output / "input.avi")
    restored = read_video(output / "restored.avi")
    table = psnr_table(clip, inputs, restored)
    chosen = [r.weather for r in result.records]
    accuracy = float(np.mean([c == t for c, t in zip(chosen, clip.weathers, strict=False)]))
    summary = {
        "bundle": "bundle" if bundle.root == output / "bundle" else str(bundle.root),
        "backend": restorer.backend_name,
        "frames": len(result.records),
        "size": [size, size],
        "loop_fps": result.fps,
        "mean_restore_ms": float(np.mean([r.restore_ms for r in result.records])),
        "routing_accuracy": accuracy,
        "psnr": table,
        "note": "PSNR against the clean frames, measured on the decoded MJPG videos",
    }
    write_text_atomic(output / "psnr.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(output / "psnr.md", format_table(table, accuracy))
    plot_timeline(output / "timeline.png", clip, result, [CLEAR, *bundle.weathers])
    return summary

