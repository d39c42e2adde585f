"""PNG plots of a benchmark report: latency by size and backend, quality against speed.

Drawn with matplotlib's Agg backend (no display needed) and saved atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpmask.fileio import atomic_path

LATENCY_PLOT = "latency_by_size.png"
QUALITY_PLOT = "quality_vs_speed.png"


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write both plots into ``folder``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    return [_latency_by_size(report, folder / LATENCY_PLOT),
            _quality_vs_speed(report, folder / QUALITY_PLOT)]


def _save(figure: Any, target: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return target


def _latency_by_size(report: dict[str, Any], target: Path) -> Path:
    """Grouped bars: p50 latency (log scale) per size, one bar per backend/precision."""
    import matplotlib.pyplot as plt

    sizes = report["settings"]["sizes"]
    records = report["results"]
    figure, axes = plt.subplots(figsize=(1.8 + 1.6 * len(sizes), 4))
    width = 0.8 / max(1, len(records))
    for index, record in enumerate(records):
        by_size = {entry["size"]: entry["latency"]["p50_ms"] for entry in record["sizes"]}
        xs = [s + (index - (len(records) - 1) / 2) * width for s in range(len(sizes))]
        axes.bar(xs, [by_size.get(size, 0) for size in sizes], width, label=record["label"])
    axes.set_xticks(range(len(sizes)), sizes)
    axes.set_yscale("log")
    _plain_log_ticks(axes.yaxis)
    axes.set_ylabel("p50 latency per frame (ms, log scale)")
    axes.set_xlabel("frame size (height x width)")
    axes.set_title("Latency by frame size and backend (batch 1)")
    axes.grid(axis="y", which="both", alpha=0.3)
    if records:
        _legend_outside(axes)
    return _save(figure, target)


def _plain_log_ticks(axis: Any) -> None:
    """Label a log axis with plain numbers (2, 5, 10, 20 ...) instead of 6x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _legend_outside(axes: Any) -> None:
    """The legend to the right of the plot, where it hides no bar or point."""
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _quality_vs_speed(report: dict[str, Any], target: Path) -> Path:
    """Scatter: frames per second against PSNR to the quality reference, per precision."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for record in report["results"]:
        points = [(entry["latency"]["fps"], entry["psnr_db"], entry["size"])
                  for entry in record["sizes"] if isinstance(entry["psnr_db"], float)]
        if points:
            fps, quality, sizes = zip(*points, strict=True)
            axes.scatter(fps, quality, label=record["label"])
            for x, y, size in points:
                axes.annotate(size, (x, y), fontsize=7)
    axes.set_xscale("log")
    _plain_log_ticks(axes.xaxis)
    axes.set_xlabel("frames per second (log scale)")
    axes.set_ylabel(f"PSNR vs {report['reference']['quality'] or 'reference'} (dB)")
    axes.set_title("Quality against speed per precision")
    axes.grid(which="both", alpha=0.3)
    if axes.collections:
        _legend_outside(axes)
    return _save(figure, target)
