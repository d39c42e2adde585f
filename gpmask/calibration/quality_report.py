"""``BUNDLE/reports/calibration.json`` and ``.md``: what each precision costs, per weather.

One entry per (precision, weather), replaced when that precision is calibrated again and
kept otherwise, so the report of a bundle calibrated to fp16 and then int8 lists both.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gpmask.bundle import Bundle
from gpmask.fileio import write_text_atomic

REPORT_JSON = "reports/calibration.json"
REPORT_MD = "reports/calibration.md"


def update_report(bundle: Bundle, precision: str, entries: dict[str, dict[str, Any]]) -> dict:
    """Replace ``precision``'s entries (weather -> entry) in the bundle's report and rewrite it."""
    path = bundle.root / REPORT_JSON
    report = _read(path)
    report["precisions"][precision] = entries
    path.parent.mkdir(exist_ok=True)
    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    write_text_atomic(bundle.root / REPORT_MD, render_markdown(report))
    return report


def _read(path) -> dict:
    """The report so far; one that cannot be read (a write cut short) is started anew,
    saying so: it only records what calibration measured, and measures again."""
    if not path.is_file():
        return {"precisions": {}}
    try:
        report = json.loads(path.read_text())
        if isinstance(report, dict) and isinstance(report.get("precisions"), dict):
            return report
    except (OSError, ValueError):
        pass
    logging.getLogger("gpmask").warning(
        "gpmask: warning: %s was unreadable; it now holds only this calibration", path.name)
    return {"precisions": {}}


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render_markdown(report: dict) -> str:
    """The report as a Markdown table per precision, with excluded layers listed below."""
    lines = ["# Calibration report", ""]
    for precision, entries in report["precisions"].items():
        lines += [
            f"## {precision}", "",
            "| weather | PSNR vs GT | fp32 PSNR vs GT | drop (dB) | budget | fits | "
            "SSIM vs GT | PSNR vs fp32 | SSIM vs fp32 | layers in fp32 | frames |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for weather, entry in entries.items():
            scores = entry["scores"]
            excluded = entry.get("excluded_layers", [])
            candidates = entry.get("quantizable_layers")
            layers = f"{len(excluded)}/{candidates}" if candidates is not None else "n/a"
            fits = entry.get("fits")
            lines.append(
                f"| {weather} | {_number(scores['psnr_vs_gt'])} | "
                f"{_number(scores['fp32_psnr_vs_gt'])} | {_number(scores['drop'], 3)} | "
                f"{_number(entry.get('max_psnr_drop'), 3)} | "
                f"{'n/a' if fits is None else ('yes' if fits else 'NO')} | "
                f"{_number(scores['ssim_vs_gt'], 4)} | {_number(scores['psnr_vs_fp32'])} | "
                f"{_number(scores['ssim_vs_fp32'], 4)} | {layers} | "
                f"{entry.get('calibration_frames', '-')} cal / {scores['frames']} held-out |"
            )
        lines.append("")
        for weather, entry in entries.items():
            if entry.get("excluded_layers"):
                lines.append(f"- {weather}: kept in fp32: {', '.join(entry['excluded_layers'])}")
        settings = next(iter(entries.values()), {}).get("settings")
        if settings:
            lines += ["", f"Settings: `{json.dumps(settings, sort_keys=True)}`"]
        lines.append("")
    return "\n".join(lines)
