"""The mask report written beside a trained checkpoint: JSON figures and a PNG plot.

It shows what the method found: how much of each layer is specific to each weather,
how much the weathers' masks overlap (overall and per layer), how the masks changed
during the selection window (so a user sees whether they had settled), and what
storing the weathers costs: one dense network per weather against the common values
once plus, per weather, its packed mask and specific values.
"""

from __future__ import annotations

import json
import os
from itertools import combinations
from typing import Any

from gpmask.fileio import atomic_path, write_text_atomic
from gpmask.masking.checkpoint import MaskedCheckpoint


def storage_bytes(checkpoint: MaskedCheckpoint) -> dict[str, Any]:
    """Bytes of the weathers' weights, stored dense or as common + masks + specific values.

    ``dense_per_weather``: one full network (what a dense graph per weather holds);
    ``common``: the common values once; ``masks`` and ``specific``: per weather, its
    bit-packed masks (one bit per element of every tensor it touches, as in the
    checkpoint) and its specific values at their own precision.
    """
    dense = int(sum(value.nbytes for value in checkpoint.common.values()))
    masks, specific = {}, {}
    for weather in checkpoint.weathers:
        masks[weather] = int(sum((m.size + 7) // 8 for m in checkpoint.masks[weather].values()))
        specific[weather] = int(sum(v.nbytes for v in checkpoint.specific[weather].values()))
    weathers = len(checkpoint.weathers)
    return {
        "dense_per_weather": dense,
        "dense_all_weathers": dense * weathers,
        "common": dense,
        "masks": masks,
        "specific": specific,
        "compact_all_weathers": dense + sum(masks.values()) + sum(specific.values()),
    }


def mask_report(checkpoint: MaskedCheckpoint, history: dict[str, Any] | None = None) -> dict:
    """Density and overlap per weather (overall and per layer), storage, growth over training."""
    weathers = checkpoint.weathers
    density = {w: checkpoint.density(w) for w in weathers}
    pairs = list(combinations(weathers, 2))
    return {
        "weathers": weathers,
        "parameters": checkpoint.num_parameters(),
        "selection": {key: checkpoint.provenance.get("settings", {}).get(key)
                      for key in ("selection", "density", "exclusive")},
        "density": {w: d.overall for w, d in density.items()},
        "density_per_layer": {w: d.per_parameter for w, d in density.items()},
        "overlap": {f"{a}/{b}": checkpoint.overlap(a, b) for a, b in pairs},
        "overlap_per_layer": {
            f"{a}/{b}": checkpoint.overlap_per_parameter(a, b) for a, b in pairs
        },
        "storage_bytes": storage_bytes(checkpoint),
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
    figure, (layers_axis, overlap_axis, growth_axis) = plt.subplots(1, 3, figsize=(18, 4.5))
    names = [n for n in next(iter(report["density_per_layer"].values())) if n.endswith("weight")]
    steps = [e["step"] for e in report["mask_growth"]]
    for weather in report["weathers"]:
        per_layer = report["density_per_layer"][weather]
        layers_axis.plot(
            range(len(names)), [per_layer[n] for n in names], marker=".", label=weather
        )
        growth_axis.plot(
            steps, [e[weather]["changed"] for e in report["mask_growth"]], label=weather
        )
    for pair, per_layer in report["overlap_per_layer"].items():
        overlap_axis.plot(range(len(names)), [per_layer[n] for n in names], marker=".",
                          label=pair)
    layers_axis.set(
        title="specific fraction per weight tensor",
        xlabel="layer (input to output)",
        ylabel="mask density",
    )
    overlap_axis.set(
        title="overlap of two weathers' masks per weight tensor",
        xlabel="layer (input to output)",
        ylabel="intersection over union",
    )
    growth_axis.set(
        title="mask elements changed since the previous record",
        xlabel="stage-2 step",
        ylabel="fraction of all elements",
    )
    for axis in (layers_axis, overlap_axis, growth_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_path(png_path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)
