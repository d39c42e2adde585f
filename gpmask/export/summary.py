"""What ``gpmask inspect BUNDLE`` prints: graphs, precisions, sizes, sharing, verification.

The sharing figures are read from the graphs themselves (each initializer's
external-data record), not from the manifest, so they describe what is on disk:
bytes stored in the weight files versus bytes the graphs reference, and versus what
exporting each weather on its own (one graph with its own data file per weather)
would store. Imports onnx but not torch.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import onnx

from gpmask.bundle import COMMON, Bundle
from gpmask.errors import GpmaskError


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def referenced_bytes(graph_path: Path) -> dict[str, int]:
    """Weight file -> bytes the graph's initializers reference in it (in-graph data under '').

    A graph that cannot be parsed (a damaged file) is a :class:`GpmaskError`.
    """
    try:
        model = onnx.load(str(graph_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own, by version
        raise GpmaskError(f"{graph_path.name} is not a readable ONNX graph ({exc})") from exc
    totals: dict[str, int] = defaultdict(int)
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            record = {entry.key: entry.value for entry in tensor.external_data}
            totals[record["location"]] += int(record["length"])
        else:
            totals[""] += len(tensor.raw_data)
    return dict(totals)


def _integrity(bundle: Bundle) -> str:
    try:
        bundle.verify()
    except GpmaskError as exc:
        return f"DAMAGED: {exc}"
    return "every file matches its manifest sha256"


def describe_bundle(path: str | os.PathLike) -> str:
    """A human-readable summary of the bundle at ``path``, damaged files included."""
    bundle = Bundle.open(path, verify=False)  # damage is reported below, not raised
    manifest = bundle.manifest
    spec = manifest["input"]
    shape = "x".join("?" if d is None else str(d) for d in spec.get("shape", []))
    lines = [
        f"bundle        {bundle.root}",
        f"weathers      {', '.join(bundle.weathers)} (default {bundle.default_weather})",
        f"input         {spec['name']} {spec['layout']} {spec['dtype']} {shape} "
        f"range {spec.get('range')}, H and W multiples of {bundle.size_multiple}",
        f"output        {manifest['output']['name']}",
    ]
    names = [COMMON, *bundle.weathers]
    rows = [("weather", "precision", "file", "graph", "weights used")]
    weight_files = {w["path"]: w["bytes"] for w in manifest["weights"]}
    per_precision: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    graph_bytes: dict[str, int] = defaultdict(int)
    single_weather: dict[str, int] = defaultdict(int)
    for weather in names:
        for precision in bundle.precisions(weather):
            graph = bundle.graph_path(weather, precision)
            if not graph.is_file():
                rows.append((weather, precision, graph.name, "MISSING", "-"))
                continue
            try:
                refs = referenced_bytes(graph)
            except GpmaskError:
                rows.append((weather, precision, graph.name, "UNREADABLE", "-"))
                continue
            used = sum(refs.values())
            for location, count in refs.items():
                per_precision[precision][location] += count
            graph_bytes[precision] += graph.stat().st_size
            if weather != COMMON:
                single_weather[precision] += used + graph.stat().st_size
            rows.append((weather, precision, graph.name, format_bytes(graph.stat().st_size),
                         format_bytes(used)))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(4)]
    lines.append("graphs")
    lines += ["  " + "".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + row[4]
              for row in rows]
    lines.append("weights")
    name_width = max([widths[0], *(len(name) + 2 for name in weight_files)])
    lines += [f"  {name.ljust(name_width)}{format_bytes(size)}" for name, size in
              weight_files.items()]
    lines.append("sharing")
    for precision, refs in per_precision.items():
        files = [f for f in refs if f in weight_files]
        stored = sum(weight_files[f] for f in files)
        referenced = sum(refs.values())
        total = stored + graph_bytes[precision]
        alone = single_weather[precision]
        lines.append(
            f"  {precision}: {format_bytes(stored)} stored in {', '.join(files) or '-'} for "
            f"{format_bytes(referenced)} referenced by the graphs "
            f"({referenced / max(stored, 1):.2f}x)"
        )
        lines.append(
            f"  {' ' * len(precision)}  bundle {format_bytes(total)} (with common) vs "
            f"{len(bundle.weathers)} single-weather exports {format_bytes(alone)} "
            f"({total / max(alone, 1):.2f}x)"
        )
    for weather, per_precision_engines in manifest.get("engines", {}).items():
        for precision, record in per_precision_engines.items():
            lines.append(f"engine        {weather} {precision} {record['path']} "
                         f"(TensorRT {record.get('tensorrt_version', '?')}, "
                         f"{record.get('gpu', '?')})")
    verification = manifest.get("verification", {"status": "unknown"})
    report = f" ({verification['report']})" if "report" in verification else ""
    lines.append(f"verification  {verification['status']}{report}; {_integrity(bundle)}")
    return "\n".join(lines)
