"""The mask report written beside a trained checkpoint: JSON figures and a PNG plot.

It shows what the method found: how much of each layer is specific to each weather,
how much the weathers' masks overlap, and how the masks grew during the selection
window (so a user sees whether they had settled).
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from typing import Any

from gpmask.fileio import atomic_path, write_text_atomic
from gpmask.masking.checkpoint import MaskedCheckpoint


def mask_report(checkpoint: MaskedCheckpoint, history: dict[str, Any] | None = None) -> dict:
    """Density per weather (overall and per layer), pairwise overlap, growth over training."""
    weathers = checkpoint.weathers
    density = {w: checkpoint.density(w) for w in weathers}
    return {
        "weathers": weathers,
        "parameters": checkpoint.num_parameters(),
        "density": {w: d.overall for w, d in density.items()},
        "density_per_layer": {w: d.per_parameter for w, d in density.items()},
        "overlap": {f"{a}/{b}": checkpoint.overlap(a, b) for a, b in combinations(weathers, 2)},
        "mask_growth": (history or {}).get("mask_growth", []),
    }


def write_mask_report(
    report: dict, json_path: str | os.PathLike, png_path: str | os.PathLike
) -> None:
    """Write the report as JSON and as a two-panel plot (per-layer density, growth)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
    figure, (layers_axis, growth_axis) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [n for n in next(iter(report["density_per_layer"].values())) if n.endswith("weight")]
    for weather in report["weathers"]:
        per_layer = report["density_per_layer"][weather]
        layers_axis.plot(
            range(len(names)), [per_layer[n] for n in names], marker=".", label=weather
        )
        steps = [e["step"] for e in report["mask_growth"]]
        growth_axis.plot(
            steps, [e[weather]["density"] for e in report["mask_growth"]], label=weather
        )
    layers_axis.set(
        title="specific fraction per weight tensor",
        xlabel="layer (input to output)",
        ylabel="mask density",
    )
    growth_axis.set(
        title="mask density during masked training", xlabel="stage-2 step", ylabel="mask density"
    )
    for axis in (layers_axis, growth_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
