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
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "benchmarks.md")
MARKER = re.compile(r"(<!-- report:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /report:"
                    r"(?P=name) -->)", re.S)

#: The demo model's quality bar (issue 11; tests/test_demo_model.py): baked - input, dB.
QUALITY_GAIN_DB = 3.0
#: Issue 23's router goals: accuracy overall and per class on each set; cost vs restore.
ROUTER_GOALS = {"synthetic": (0.95, 0.90), "heldout_style": (0.90, None),
                "demo_clip": (0.90, None)}
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
    """bench_cpu's goal rows: one line per network, size and goal."""
    lines = ["| network | size | goal | measured | bar | |", "|---|---|---|---:|---:|---|"]
    for network, entry in record["networks"].items():
        for size, measured in entry["sizes"].items():
            for goal in measured["goals"]:
                if goal["ratio"] is not None:
                    value, bar = f"{goal['ratio']:.3f}×", f"≤ {goal['bar']:.1f}×"
                elif goal["bar"] is None and "over" in goal:
                    value, bar = ", ".join(goal["over"]) or "none above", "none above"
                else:
                    value, bar = "not measured", f"≤ {goal['bar']:.1f}×"
                lines.append(f"| {network} | {size} | {goal['goal']} | {value} | {bar} | "
                             f"{mark(goal['met'])} |")
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


def _accuracy(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "—"


def router(record: dict[str, Any]) -> list[str]:
    """The router benchmark's accuracy per set and its cost at 720p, against issue 23's
    goals. Whatever the record lacks is left out (or shown as —)."""
    lines = ["| set | overall | per class | goal | |", "|---|---:|---|---|---|"]
    for name, (overall_bar, class_bar) in ROUTER_GOALS.items():
        figures = record.get(name)
        if not isinstance(figures, dict):
            continue
        overall = next((figures[k] for k in ("overall", "all", "accuracy") if k in figures), None)
        classes = {k: v for k, v in figures.items() if k not in ("overall", "all", "accuracy")
                   and isinstance(v, (int, float))}
        checks = [] if overall is None else [overall >= overall_bar]
        goal = f"≥ {overall_bar:.0%} overall"
        if class_bar is not None:
            goal += f", ≥ {class_bar:.0%} each class"
            checks += [v >= class_bar for v in classes.values()]
        met = all(checks) if checks and (overall is not None) else None
        per_class = ", ".join(f"{k} {_accuracy(v)}" for k, v in classes.items()) or "—"
        lines.append(f"| {name.replace('_', ' ')} | {_accuracy(overall)} | {per_class} | {goal} "
                     f"| {mark(met)} |")
    if isinstance(record.get("router_ms"), (int, float)) and \
            isinstance(record.get("restore_ms"), (int, float)):
        ratio = record["router_ms"] / record["restore_ms"]
        lines.append(f"| cost at 720p | router {record['router_ms']:.1f} ms / restore "
                     f"{record['restore_ms']:.1f} ms = {ratio:.1%} | | ≤ {ROUTER_COST:.0%} of "
                     f"restore | {mark(ratio <= ROUTER_COST)} |")
    return lines


#: Table name -> the benchmark whose records it shows, and how one record renders.
TABLES: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "quality": ("quality", quality),
    "cpu-goals": ("bench_cpu", cpu_goals),
    "cpu-latency": ("bench_cpu", cpu_latency),
    "serve": ("bench_serve", serve),
    "router": ("router", router),
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
