"""The density-quality trade-off of GGPM: common model < GGPM at density D <= full fine-tune.

One stage-1 (common) model is trained once. From it, with the same stage-2 steps per
weather, the trainer's own stage 2 (``Trainer(common_weights=...)``) makes:

- GGPM checkpoints at each density D (default 0.05, 0.1, 0.2, 0.4): exactly D of
  every tensor specific to each weather (evidence selection, common values frozen so
  every configuration shares the same common network);
- the full fine-tune, D = 1: every element specific, one dense network per weather,
  the upper bound at N times the parameters.

Each is evaluated on held-out images per weather with
:func:`gpmask.masking.evaluate.evaluate_checkpoint`, in both synthetic styles (the
training family and the held-out family). Writes ``density.json``, ``density.md``
and ``density.png`` (PSNR against D per weather) into the output folder and prints
the tables.

    python benchmarks/bench_density.py -o density-study               # demo preset
    python benchmarks/bench_density.py -o study --base-steps 800 --steps 800
    python benchmarks/bench_density.py -o /tmp/tiny --tiny --keep-checkpoints   # CI size

Stage 2 of several densities can run in parallel processes from one stage 1: each
with ``--common-from RUN/common.gpmask.safetensors --densities ...`` into its own
folder, then ``--merge A/density.json B/density.json -o STUDY`` makes the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from gpmask.data.clean import sample_images
from gpmask.data.sources import SyntheticPairs, fit_to_size
from gpmask.data.synthetic import STYLES
from gpmask.fileio import atomic_path, write_text_atomic
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.masking.evaluate import evaluate_checkpoint
from gpmask.masking.mask_report import storage_bytes
from gpmask.masking.presets import PRESETS
from gpmask.masking.trainer import TrainConfig, Trainer
from gpmask.sizes import parse_size

#: The tiny setting: a 4-channel network, a few steps, two small training images.
TINY = {
    "arch": "msunet", "arch_kwargs": {"base_channels": 4, "num_res_blocks": 1},
    "base_steps": 4, "masked_steps": 3, "weather_steps": {}, "selection_steps": 2,
    "batch_size": 2, "crop": 16, "report_every": 1000,
}


def study_config(args: argparse.Namespace) -> TrainConfig:
    """The preset with the command line's changes; common values always frozen."""
    config = dataclasses.replace(PRESETS[args.preset], common_update="frozen",
                                 checkpoint_every=0)
    if args.tiny:
        config = dataclasses.replace(config, **TINY)
    changes = {"base_steps": args.base_steps, "selection_steps": args.selection_steps,
               "seed": args.seed}
    if args.steps is not None:
        changes |= {"masked_steps": args.steps, "weather_steps": {}}
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})


def training_source(config: TrainConfig, tiny: bool) -> SyntheticPairs:
    images = sample_images("train")
    if tiny:
        images = [fit_to_size(image, (64, 64)) for image in images[:2]]
    return SyntheticPairs(images, weathers=tuple(config.weathers), seed=config.seed,
                          pool_size=1 if tiny else 4)


def evaluation_pairs(weathers: list[str], evaluation: dict) -> dict[str, dict]:
    """Held-out images per style and weather, as ``evaluation`` (recorded in the JSON) says."""
    source = SyntheticPairs(sample_images("heldout"), weathers=tuple(weathers),
                            seed=evaluation["seed"], severity=evaluation["severity"])
    size = tuple(evaluation["size"])
    return {style: {w: source.eval_pairs(w, evaluation["count"], size=size, style=style)
                    for w in weathers} for style in evaluation["styles"]}


def label(density: float) -> str:
    return "full fine-tune (D = 1)" if density == 1.0 else f"GGPM D = {density:g}"


def run_configuration(config: TrainConfig, source: SyntheticPairs, common: dict,
                      pairs: dict[str, dict], progress: bool) -> tuple[MaskedCheckpoint, dict]:
    """Stage 2 from ``common`` at ``config.density``; its evaluation, storage and cost."""
    wall, cpu = time.perf_counter(), time.process_time()
    checkpoint = Trainer(config, source, progress=progress, common_weights=common).run().checkpoint
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    results = {style: evaluate_checkpoint(checkpoint, by_weather, progress=False)
               for style, by_weather in pairs.items()}
    return checkpoint, {
        "density": config.density,
        "label": label(config.density),
        "specific_fraction": {w: checkpoint.density(w).overall for w in checkpoint.weathers},
        "storage_bytes": storage_bytes(checkpoint),
        "train_seconds": round(wall, 1),
        "train_cpu_seconds": round(cpu, 1),
        "results": results,
    }


def _psnr(row: dict, style: str, weather: str, model: str) -> float:
    return row["results"][style][weather][model]["psnr"]


def markdown(study: dict) -> str:
    """One table per style: input, common and every configuration's PSNR per weather."""
    weathers, rows = study["weathers"], study["rows"]
    full = next(row for row in rows if row["density"] == 1.0)
    parts = []
    for style in study["evaluation"]["styles"]:
        header = " | ".join(weathers)
        gaps = " | ".join(f"{w} vs full" for w in weathers)
        lines = [
            f"**{style} style** (PSNR in dB on held-out images; gap: GGPM minus full fine-tune)",
            "",
            f"| model | specific per weather | stored, all weathers | {header} | mean | {gaps} |",
            "|---|---:|---:|" + "---:|" * (2 * len(weathers) + 1),
        ]
        first = rows[0]
        for name, model in (("degraded input", "input"), ("common model", "common")):
            values = [_psnr(first, style, w, model) for w in weathers]
            cells = " | ".join(f"{v:.2f}" for v in values)
            lines.append(f"| {name} | 0 | | {cells} | {np.mean(values):.2f} |"
                         + " |" * len(weathers))
        for row in rows:
            values = [_psnr(row, style, w, "baked") for w in weathers]
            fraction = np.mean(list(row["specific_fraction"].values()))
            stored = row["storage_bytes"]["compact_all_weathers"] / 2**20
            if row["density"] == 1.0:
                stored = row["storage_bytes"]["dense_all_weathers"] / 2**20
            gap_cells = " | ".join(
                f"{_psnr(row, style, w, 'baked') - _psnr(full, style, w, 'baked'):+.2f}"
                for w in weathers)
            lines.append(f"| {row['label']} | {fraction:.1%} | {stored:.2f} MiB | "
                         + " | ".join(f"{v:.2f}" for v in values)
                         + f" | {np.mean(values):.2f} | {gap_cells} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def plot(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = study["evaluation"]["styles"]
    figure, axes = plt.subplots(1, len(styles), figsize=(6.5 * len(styles), 4.5), squeeze=False)
    rows = study["rows"]
    densities = [row["density"] for row in rows]
    for axis, style in zip(axes[0], styles, strict=True):
        for index, weather in enumerate(study["weathers"]):
            colour = f"C{index}"
            axis.plot(densities, [_psnr(r, style, weather, "baked") for r in rows], marker="o",
                      color=colour, label=f"{weather}: GGPM (D = 1: full fine-tune)")
            axis.axhline(_psnr(rows[0], style, weather, "common"), color=colour, ls="--",
                         lw=1, label=f"{weather}: common model")
            axis.axhline(_psnr(rows[0], style, weather, "input"), color=colour, ls=":", lw=1,
                         label=f"{weather}: degraded input")
        axis.set(xscale="log", xlabel="density D (fraction of each tensor specific per weather)",
                 ylabel="PSNR (dB)", title=f"held-out images, {style} style")
        axis.set_xticks(densities, [f"{d:g}" for d in densities])  # the measured densities
        axis.minorticks_off()
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(study["weathers"]), fontsize=8,
                  bbox_to_anchor=(0.5, 0))  # below the panels, clear of the data
    figure.tight_layout(rect=(0, 0.16, 1, 1))
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)


def common_digest(common: dict) -> str:
    """SHA-256 of the common values (name order): rows of one study share one common model."""
    digest = hashlib.sha256()
    for name in sorted(common):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(common[name].detach().cpu().numpy()).tobytes())
    return digest.hexdigest()


def load_common(path: str) -> dict:
    """The common values of a checkpoint as a state dict (stage 1 of an earlier run)."""
    return {n: torch.from_numpy(v.copy()) for n, v in MaskedCheckpoint.load(path).common.items()}


def save_common(common: dict, config: TrainConfig, path: Path) -> None:
    """Stage 1's result as a checkpoint without specific values, for ``--common-from``."""
    values = {n: v.detach().cpu().numpy() for n, v in common.items()}
    MaskedCheckpoint(config.arch, config.arch_kwargs, values, {}, {}, weathers=[],
                     provenance={"made_by": "benchmarks/bench_density.py", "stage": 1,
                                 "settings": dataclasses.asdict(config)}).save(path)


def write_study(study: dict, output: Path) -> None:
    """The JSON always; the table and plot once the rows include the full fine-tune."""
    study["rows"].sort(key=lambda row: row["density"])
    write_text_atomic(output / "density.json", json.dumps(study, indent=2) + "\n")
    if not any(row["density"] == 1.0 for row in study["rows"]):
        print("no D = 1 row yet: table left out (merge with a study that has it: --merge)")
        return
    table = markdown(study)
    write_text_atomic(output / "density.md", table)
    plot(study, output / "density.png")
    print(table)
    print(f"wrote {output / 'density.json'}, density.md, density.png")


def merge(paths: list[str], output: Path) -> None:
    """One study from several runs over the same common model and settings."""
    studies = [json.loads(Path(path).read_text()) for path in paths]
    first = studies[0]
    for path, study in zip(paths, studies, strict=True):
        for key in ("evaluation", "weathers", "common_sha256"):
            if study[key] != first[key]:
                raise SystemExit(f"{path}: {key} differs from {paths[0]}'s; cannot merge")
        same = {k: v for k, v in study["settings"].items() if k != "density"}
        if same != {k: v for k, v in first["settings"].items() if k != "density"}:
            raise SystemExit(f"{path}: training settings differ from {paths[0]}'s; cannot merge")
    rows = {row["density"]: row for study in studies for row in study["rows"]}
    stage1 = next((s["stage1"] for s in studies if "train_seconds" in s["stage1"]),
                  first["stage1"])
    write_study(first | {"rows": list(rows.values()), "stage1": stage1, "merged_from": paths},
                output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, help="folder for the study's files")
    parser.add_argument("--preset", default="demo", help="training recipe (default demo)")
    parser.add_argument("--densities", default="1,0.05,0.1,0.2,0.4",
                        help="densities to train, in this order; 1 is the full fine-tune "
                             "(default 1,0.05,0.1,0.2,0.4)")
    parser.add_argument("--base-steps", type=int, help="stage-1 steps (default: the preset's)")
    parser.add_argument("--steps", type=int,
                        help="stage-2 training steps of every weather (default: the preset's)")
    parser.add_argument("--selection-steps", type=int,
                        help="evidence window (default: the preset's)")
    parser.add_argument("--seed", type=int, help="training seed (default: the preset's)")
    parser.add_argument("--count", type=int, default=6,
                        help="held-out images per weather and style (default 6)")
    parser.add_argument("--size", default="192x192", help="evaluation size HxW (default 192x192)")
    parser.add_argument("--common-from", metavar="CKPT",
                        help="skip stage 1: start from this checkpoint's common values (e.g. "
                             "common.gpmask.safetensors of an earlier run; default: train it)")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only combine density.json files of runs from one common model")
    parser.add_argument("--tiny", action="store_true",
                        help="a 4-channel network and a few steps: checks the script in CI")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="save every configuration's checkpoint in the output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args()

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge(args.merge, output)
        return
    config = study_config(args)
    height, width = parse_size(args.size)
    if args.tiny:
        args.count, height, width = 2, 64, 64
    evaluation = {"count": args.count, "size": [height, width], "seed": 1234, "severity": 1.0,
                  "styles": list(STYLES)}
    source = training_source(config, args.tiny)
    pairs = evaluation_pairs(config.weathers, evaluation)

    if args.common_from:
        common, stage1 = load_common(args.common_from), {"common_from": args.common_from}
    else:
        wall, cpu = time.perf_counter(), time.process_time()
        common = Trainer(config, source, progress=not args.no_progress).train_common()
        stage1 = {"train_seconds": round(time.perf_counter() - wall, 1),
                  "train_cpu_seconds": round(time.process_time() - cpu, 1)}
        save_common(common, config, output / "common.gpmask.safetensors")
        print(f"stage 1: {stage1['train_seconds']} s ({stage1['train_cpu_seconds']} s CPU)",
              flush=True)
    study = {
        "settings": dataclasses.asdict(config),
        "evaluation": evaluation,
        "weathers": config.weathers,
        "common_sha256": common_digest(common),
        "stage1": stage1,
        "rows": [],
    }
    for density in dict.fromkeys(float(v) for v in args.densities.split(",")):
        run = dataclasses.replace(config, density=density)
        checkpoint, row = run_configuration(run, source, common, pairs, not args.no_progress)
        gains = ", ".join(
            f"{w} {r['baked']['psnr'] - r['input']['psnr']:+.2f}"
            for w, r in row["results"]["train"].items())
        print(f"{row['label']}: {row['train_seconds']} s ({row['train_cpu_seconds']} s CPU); "
              f"gain over input, train style: {gains}", flush=True)
        if args.keep_checkpoints:
            checkpoint.save(output / f"density-{density:g}.gpmask.safetensors")
        study["rows"].append(row)
        write_study(study, output)


if __name__ == "__main__":
    main()
