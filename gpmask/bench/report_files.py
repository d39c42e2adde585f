"""Writing a benchmark report: ``bench.json`` for machines, ``bench.md`` for people.

``bench.json`` is the dict :func:`gpmask.bench.run_benchmark` returns (schema 1):
``bundle``, ``settings`` (backends, precisions, sizes, iters, warmup, threads, the
ONNX Runtime session options, the OpenVINO compile options), ``machine`` (CPU, cores,
GPU, measured float32 matmul peak per device, measured instruction-throughput limit
per precision), ``versions``, ``reference``, ``macs`` per size, ``results`` (one
record per backend/precision: device, load and cold-start seconds, memory, and per
size latency percentiles, FPS, switching, work rate and its fractions of the matmul
peak and of the precision's instruction limit, PSNR, ``vs_torch``) and
``skipped`` (one line of reason each). The report is written into a new folder beside
the output, after all measurements, and replaces it only when that is empty or an
earlier report holding nothing else: a failed run leaves the previous report, and a
folder of the user's (a ``bench.md`` of their own, say) is refused, never written into.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpmask.fileio import atomic_directory, check_replaceable, write_text_atomic

#: What a report folder is called in messages.
REPORT_FOLDER = "an earlier bench report"
#: The files a report folder holds.
REPORT_FILES = ("bench.json", "bench.md")

COLUMNS = ("backend", "precision", "size", "p50 ms", "p90 ms", "p99 ms", "mean ms", "FPS",
           "x torch", "switch x", "GFLOP/s", "of peak", "of limit", "PSNR dB")


def _number(value: float | str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per backend/precision/size, in the order of :data:`COLUMNS`."""
    rows = []
    for record in report["results"]:
        for entry in record["sizes"]:
            latency, work = entry["latency"], entry["work"]
            rows.append([
                record["backend"], record["precision"], entry["size"],
                *(_number(latency[k], 1) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")),
                _number(latency["fps"], 1), _number(entry["vs_torch"]),
                _number(entry["switching"]["ratio"]), _number(work["gflops"], 1),
                f"{work['roofline_fraction']:.0%}", _limit_fraction(work.get("limit")),
                _number(entry["psnr_db"], 1),
            ])
    return rows


def _limit_fraction(limit: dict[str, Any] | None) -> str:
    """``31% int8``: the fraction of the precision's instruction limit, or ``-``."""
    if not limit or limit["fraction"] is None:
        return "-"
    return f"{limit['fraction']:.0%} {limit['precision']}"


def _limits_line(limits: dict[str, Any]) -> str:
    """The measured instruction limits (or why each was skipped), for the header."""
    parts = [f"{p} {v['gops']:.0f} GOP/s ({v['instruction']})" if v["gops"] else
             f"{p} not measured: {v['reason']}" for p, v in limits.items()]
    return "; ".join(parts) or "-"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, latency table, load and memory, skipped lines."""
    machine, settings = report["machine"], report["settings"]
    peaks = ", ".join(f"{device} {value:.0f} GFLOP/s"
                      for device, value in machine["matmul_peak_gflops"].items())
    lines = [
        f"# gpmask bench: {report['bundle']['path']}", "",
        f"- machine: {machine['cpu']}, {machine['physical_cores']} cores, "
        f"{machine['threads']} threads, GPU {machine['gpu'] or 'none'}",
        f"- float32 matmul peak (measured): {peaks or '-'}",
        "- instruction-throughput limits (measured by gpmask/bench/instruction_limit.py): "
        + _limits_line(machine.get("instruction_limits", {})),
        f"- batch 1, {settings['iters']} timed iterations after {settings['warmup']} warm-up; "
        f"latency reference {report['reference']['latency'] or 'none'}, quality reference "
        f"{report['reference']['quality'] or 'none'}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v),
        "", "x torch: p50 latency / torch eager's p50 (below 1 is faster); switch x: p50 "
        "changing weather every frame / p50 keeping one; GFLOP/s = 2 x MACs / p50; "
        "of peak: of the float32 matmul peak; of limit: of the instruction-throughput limit "
        "of the precision the target computes in; PSNR: against the quality reference.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(row) + " |" for row in table_rows(report)),
        "", "| backend | precision | device | load s | cold start s | peak RSS MiB "
        "| RSS added MiB | device MiB |", "|---|---|---|---|---|---|---|---|",
    ]
    for record in report["results"]:
        memory = record["memory"]
        lines.append(
            f"| {record['backend']} | {record['precision']} | {record['device']} "
            f"| {record['load_s']:.2f} | {record['cold_start_s']:.2f} "
            f"| {memory['peak_rss_mib']:.0f} | {memory['peak_rss_above_before_mib']:.0f} "
            f"| {_number(memory['device_memory_mib'], 0)} |")
    if report["skipped"]:
        lines += ["", "Skipped:", *(f"- {skip['line']}" for skip in report["skipped"])]
    return "\n".join(lines) + "\n"


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` is an earlier report: a ``bench.json`` of a report beside only the
    files a report holds."""
    from gpmask.bench.plots import LATENCY_PLOT, QUALITY_PLOT

    try:
        earlier = json.loads((folder / "bench.json").read_text())
    except (OSError, ValueError):
        return False
    names = {*REPORT_FILES, LATENCY_PLOT, QUALITY_PLOT}
    return isinstance(earlier, dict) and "results" in earlier and \
        all(p.name in names and p.is_file() for p in folder.iterdir())


def check_report_folder(folder: str | os.PathLike) -> None:
    """Refuse, before any measurement, an output folder the report may not replace."""
    check_replaceable(folder, True, is_report_folder, REPORT_FOLDER)


def write_report(report: dict[str, Any], folder: str | os.PathLike) -> list[Path]:
    """Write ``bench.json``, ``bench.md`` and the plots as the folder ``folder``; return
    the paths."""
    from gpmask.bench.plots import write_plots

    folder = Path(folder)
    with atomic_directory(folder, True, is_report_folder, REPORT_FOLDER) as new:
        write_text_atomic(new / "bench.json", json.dumps(report, indent=2) + "\n")
        write_text_atomic(new / "bench.md", markdown(report))
        plots = write_plots(report, new)
    return [folder / "bench.json", folder / "bench.md", *(folder / p.name for p in plots)]
