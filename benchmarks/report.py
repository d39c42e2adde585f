"""The README's and docs/benchmarks.md's figure tables, generated from benchmark records.

Every figure a table shows comes from a JSON record in ``benchmarks/results/``, written
by the benchmark that measured it (its ``-o``, through :mod:`gpmask.bench.records`), with
the date, the command and the machine (CPU model and flags) it ran on. Nothing in a
table is typed by hand: this script renders each table between its markers::

    <!-- report:NAME -->
    ...generated...
    <!-- /report:NAME -->

One table per machine: of several records of one benchmark on one machine (same CPU
model and flags), the newest is shown. Each row carries its goal and a mark (✅ met,
❌ missed, — no goal set); each table starts with the date, the machine and the exact
command that reproduces it. ``tests/test_docs.py`` fails when a table differs from what
the records give.

    python benchmarks/report.py            # rewrite the tables in README.md and docs/
    python benchmarks/report.py --check    # exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "jetson.md")
MARKER = re.compile(r"(<!-- report:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /report:"
                    r"(?P=name) -->)", re.S)

#: The demo model's quality bar (issue 11; tests/test_demo_model.py): baked - input, dB.
QUALITY_GAIN_DB = 3.0
#: Issue 23's router goals: (record key, row name, overall bar, per-class bar) on held-out
#: frames; the share of the demo clip routed to its own weather; the most frames a change
#: of weather may take to be followed; the router step's share of the restore step.
ROUTER_SETS = (
    ("heldout_frames_training_style", "held-out frames, training style", 0.95, 0.90),
    ("heldout_frames_heldout_style", "held-out frames, held-out style", 0.90, None),
)
ROUTER_DEMO = 0.90
ROUTER_LAG = 3
ROUTER_COST = 0.10


def machine_key(record: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    machine = record["machine"]
    return machine["cpu"], tuple(machine.get("cpu_flags", []))


def records(kind: str) -> list[dict[str, Any]]:
    """The newest record of benchmark ``kind`` for each machine, ordered by machine."""
    newest: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("benchmark") != kind:
            continue
        record["_file"] = path.relative_to(ROOT).as_posix()
        key = machine_key(record)
        if key not in newest or (record["date"], record["_file"]) > (
                newest[key]["date"], newest[key]["_file"]):
            newest[key] = record
    return [newest[key] for key in sorted(newest)]


def machine_line(record: dict[str, Any]) -> str:
    machine = record["machine"]
    flags = " ".join(machine.get("cpu_flags", [])) or "no AVX2/AVX-512/AMX"
    gpu = machine.get("gpu") or "no GPU"
    return (f"{record['date']}, {machine['cpu']} ({machine['physical_cores']} cores; "
            f"{flags}; {gpu}): `{record['command']}` → `{record['_file']}`")


def mark(met: bool | None) -> str:
    return "—" if met is None else ("✅" if met else "❌")


def quality(record: dict[str, Any]) -> list[str]:
    """``gpmask eval``'s PSNR per style and weather, against the demo model's bars."""
    lines = ["| style | weather | images | input dB | common dB | baked dB | baked − input | "
             "baked − common | goal | |", "|---|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for style, by_weather in record["results"].items():
        for weather, r in by_weather.items():
            baked, gain = r["baked"]["psnr"], r["baked"]["psnr"] - r["input"]["psnr"]
            over_common = baked - r["common"]["psnr"]
            if style == "train":
                goal = f"≥ +{QUALITY_GAIN_DB:.0f} dB over input, > common"
                met = gain >= QUALITY_GAIN_DB and over_common > 0
            else:
                goal, met = "> input", gain > 0
            lines.append(f"| {style} | {weather} | {r['count']} | {r['input']['psnr']:.2f} | "
                         f"{r['common']['psnr']:.2f} | {baked:.2f} | {gain:+.2f} | "
                         f"{over_common:+.2f} | {goal} | {mark(met)} |")
    return lines


def cpu_goals(record: dict[str, Any]) -> list[str]:
    """bench_cpu's goals: one row per network and size, one column per goal (its ratio of
    medians and its mark; the bar in the header)."""
    first = next(iter(next(iter(record["networks"].values()))["sizes"].values()))["goals"]
    header = [f"{g['goal']} (≤ {g['bar']:.1f}×)" if g["bar"] is not None else g["goal"]
              for g in first]
    lines = ["| network | size | " + " | ".join(header) + " |",
             "|---|---|" + "---:|" * len(header)]
    for network, entry in record["networks"].items():
        for size, measured in entry["sizes"].items():
            cells = []
            for goal in measured["goals"]:
                if goal["ratio"] is not None:
                    cells.append(f"{goal['ratio']:.2f}× {mark(goal['met'])}")
                elif "over" in goal:
                    over = ", ".join(goal["over"]) or "none above"
                    cells.append(f"{over} {mark(goal['met'])}")
                else:
                    cells.append("not measured —")
            lines.append(f"| {network} | {size} | " + " | ".join(cells) + " |")
    return lines


def cpu_latency(record: dict[str, Any]) -> list[str]:
    """bench_cpu's rows: median latency of every path, with its quality and limit."""
    lines = ["| network | size | path | layout | ms | PSNR vs fp32 (dB) | of its limit | "
             "goal ≤ 100 % | |", "|---|---|---|---|---:|---:|---:|---|---|"]
    for network, entry in record["networks"].items():
        for size, measured in entry["sizes"].items():
            for row in measured["rows"]:
                quality_db = "exact" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
                fraction = row["limit_fraction"]
                limit = f"{fraction:.0%} {row['limit']}" if fraction is not None else "—"
                met = None if fraction is None else fraction <= 1.0
                lines.append(f"| {network} | {size} | {row['path']} | {row['layout']} | "
                             f"{row['median_ms']:.1f} | {quality_db} | {limit} | | {mark(met)} |")
    return lines


def serve(record: dict[str, Any]) -> list[str]:
    """bench_serve's rows; issue 24 set no bar, so no row is marked."""
    lines = [f"{record['size']} frames, weather {record['weather']}, {record['requests']} "
             f"requests per client, {record['instances']} instance(s).", "",
             "| mode | clients | frames/s | p50 ms | p99 ms | vs Restorer | goal |",
             "|---|---:|---:|---:|---:|---:|---|"]
    base = record["rows"][0]["frames_per_s"]
    for row in record["rows"]:
        lines.append(f"| {row['mode']} | {row['clients']} | {row['frames_per_s']:.1f} | "
                     f"{row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                     f"{row['frames_per_s'] / base:.2f}× | — none set |")
    return lines


def router(record: dict[str, Any]) -> list[str]:
    """``benchmarks/bench_router.py``'s record: the router's own decisions on held-out frames
    of both styles, the weather the default policy chose on their change clips and on the
    demo clip, and the router step's cost at 720p, each against issue 23's goal."""
    lines = ["| measured on | routed right | per class | goal | |", "|---|---:|---|---|---|"]
    accuracy = record["accuracy"]
    for key, name, overall_bar, class_bar in ROUTER_SETS:
        frames = accuracy[key]["frames"]
        per_class = {k: v for k, v in frames["per_class"].items() if v is not None}
        met = frames["accuracy"] >= overall_bar and (
            class_bar is None or min(per_class.values()) >= class_bar)
        goal = f"≥ {overall_bar:.0%}" + (f", each class ≥ {class_bar:.0%}" if class_bar else "")
        lines.append(f"| {name} ({frames['frames']} frames) | {frames['accuracy']:.1%} | "
                     + ", ".join(f"{k} {v:.1%}" for k, v in per_class.items())
                     + f" | {goal} | {mark(met)} |")
    for key, name, _, _ in ROUTER_SETS:
        clip = accuracy[key]["clip"]
        met = clip["max_lag"] <= ROUTER_LAG and clip["flicker"] == 0
        lines.append(f"| change clip, {name.split(', ')[1]} ({clip['frames']} frames, "
                     f"{len(clip['lags'])} changes) | {clip['accuracy']:.1%} | slowest change "
                     f"{clip['max_lag']} frames, flicker {clip['flicker']}, "
                     f"{clip['misrouted']} frames to another weather | every change ≤ "
                     f"{ROUTER_LAG} frames, no flicker | {mark(met)} |")
    demo = accuracy["demo_clip"]
    routed, raw = demo["routed"], demo["raw"]
    lines.append(f"| demo clip, weather chosen ({routed['frames']} frames) | "
                 f"{routed['accuracy']:.1%} | router's own decisions {raw['accuracy']:.1%}: "
                 + ", ".join(f"{k} {v:.1%}" for k, v in raw["per_class"].items()
                             if v is not None)
                 + f"; {routed['misrouted']} frames to another weather | ≥ {ROUTER_DEMO:.0%} | "
                 f"{mark(routed['accuracy'] >= ROUTER_DEMO)} |")
    cost = record["cost"]
    lines.append(f"| cost at {cost['size'][0]}x{cost['size'][1]} | "
                 f"{cost['router_over_restore']:.1%} | router step {cost['router_ms']:.1f} ms, "
                 f"restore step {cost['restore_ms']:.0f} ms ({cost['backend']} "
                 f"{cost['precision']}) | ≤ {ROUTER_COST:.0%} of the restore step | "
                 f"{mark(cost['router_over_restore'] <= ROUTER_COST)} |")
    return lines


def engine_memory(record: dict[str, Any]) -> list[str]:
    """bench_engine_memory's estimate: weights of all engines per precision, and the one
    activation buffer per frame size (fp32 / fp16)."""
    first = next(iter(record["networks"].values()))
    sizes = list(first["activations_mib"])
    lines = ["| network | engines | weights fp32 / fp16 / int8, all engines | "
             + " | ".join(f"activations fp32 / fp16, {size}" for size in sizes) + " |",
             "|---|---:|---|" + "---|" * len(sizes)]
    for name, entry in record["networks"].items():
        weights = " / ".join(_mib(entry["weights_mib"][p]) for p in ("fp32", "fp16", "int8"))
        activations = [" / ".join(_mib(entry["activations_mib"][size][p])
                                  for p in ("fp32", "fp16")) for size in sizes]
        lines.append(f"| {name} ({entry['parameters']:,} parameters) | {entry['engines']} | "
                     f"{weights} | " + " | ".join(activations) + " |")
    return lines


def _mib(value: float) -> str:
    return f"{value:.1f} MiB" if value < 10 else f"{value:.0f} MiB"


#: Table name -> the benchmark whose records it shows, and how one record renders.
TABLES: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "quality": ("quality", quality),
    "cpu-goals": ("bench_cpu", cpu_goals),
    "cpu-latency": ("bench_cpu", cpu_latency),
    "serve": ("bench_serve", serve),
    "router": ("router", router),
    "engine-memory": ("engine_memory", engine_memory),
}


def render(name: str) -> str:
    """Table ``name``: for each machine, its source line and rows."""
    kind, rows_of = TABLES[name]
    found = records(kind)
    if not found:
        return f"_No `{kind}` record in benchmarks/results/ yet._\n"
    blocks = [
        "\n".join([f"Measured {machine_line(record)}", "", *rows_of(record)])
        for record in found
    ]
    return "\n\n".join(blocks) + "\n"


def regenerate(text: str) -> str:
    """``text`` with every marked table rendered anew."""
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"unknown report table {name!r}; known: {', '.join(TABLES)}")
        return match.group(1) + render(name) + match.group(4)
    return MARKER.sub(replace, text)


def stale_documents(write: bool) -> list[str]:
    """The documents whose tables differ from the records (rewritten when ``write``)."""
    stale = []
    for document in DOCUMENTS:
        if not document.is_file():
            continue
        text = document.read_text()
        fresh = regenerate(text)
        if fresh != text:
            stale.append(document.relative_to(ROOT).as_posix())
            if write:
                document.write_text(fresh)
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a table differs from its records")
    args = parser.parse_args()
    stale = stale_documents(write=not args.check)
    if args.check and stale:
        print(f"stale tables in {', '.join(stale)}; run python benchmarks/report.py",
              file=sys.stderr)
        return 1
    print(("stale: " if args.check else "rewrote: ") + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
