"""What ``gpmask inspect BUNDLE`` prints: graphs, precisions, sizes, sharing, verification.

The sharing figures are read from the graphs themselves (each initializer's
external-data record), not from the manifest, so they describe what is on disk:
bytes stored in the weight files versus bytes the graphs reference, versus what
exporting each weather on its own (one graph with its own data file per weather)
would store, and versus the dense layout (every graph holding its full weights).
Per graph: the bytes stored for it alone (what it references that the common graph of
its precision does not) and its weights as plain tensors (a compact graph's rebuilt
weights, sized by ONNX shape inference). Imports onnx but not torch.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from gpmask.bundle import COMMON, Bundle
from gpmask.bundle.compact import rebuild_inputs, rebuild_nodes
from gpmask.errors import GpmaskError


def format_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _records(model: onnx.ModelProto) -> dict[str, tuple[str, int, int]]:
    """Initializer name -> (weight file, offset, length); in-graph data under file ''."""
    records = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            record = {entry.key: entry.value for entry in tensor.external_data}
            records[tensor.name] = (record["location"], int(record.get("offset", 0)),
                                    int(record["length"]))
        else:
            records[tensor.name] = ("", -1, len(tensor.raw_data))
    return records


def _load_graph(graph_path: Path) -> onnx.ModelProto:
    """A graph file without its external data; a damaged file is a :class:`GpmaskError`."""
    try:
        return onnx.load(str(graph_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own, by version
        raise GpmaskError(f"{graph_path.name} is not a readable ONNX graph ({exc})") from exc


def referenced_bytes(graph_path: Path) -> dict[str, int]:
    """Weight file -> bytes the graph's initializers reference in it (in-graph data under '')."""
    totals: dict[str, int] = defaultdict(int)
    for location, _, length in _records(_load_graph(graph_path)).values():
        totals[location] += length
    return dict(totals)


@dataclass(frozen=True)
class GraphBytes:
    """What one graph file costs and holds.

    Attributes:
        graph: size of the graph file.
        referenced: bytes its initializers reference, per weight file ('' = in the graph).
        dense: its weights as plain tensors (what a dense graph of it references).
        compact: whether it rebuilds weights from initializers.
        records: initializer -> (weight file, offset, length).
    """

    graph: int
    referenced: dict[str, int]
    dense: int
    compact: bool
    records: dict[str, tuple[str, int, int]]


def graph_bytes(graph_path: Path) -> GraphBytes:
    """Read a graph file's byte figures (without its external data)."""
    model = _load_graph(graph_path)
    records = _records(model)
    referenced: dict[str, int] = defaultdict(int)
    for location, _, length in records.values():
        referenced[location] += length
    folded_away = rebuild_inputs(model)
    dense = sum(length for name, (_, _, length) in records.items() if name not in folded_away)
    rebuild = rebuild_nodes(model)
    rebuilt = {name for node in rebuild for name in node.output}
    if rebuilt:
        inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
        read = {name for node in model.graph.node if not rebuilt.intersection(node.output)
                for name in node.input}
        for info in inferred:
            if info.name in rebuilt & read:
                tensor = info.type.tensor_type
                itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).itemsize
                dense += itemsize * int(np.prod([d.dim_value for d in tensor.shape.dim]))
    return GraphBytes(graph_path.stat().st_size, dict(referenced), dense, bool(rebuilt),
                      records)


def _integrity(bundle: Bundle) -> str | None:
    """``None`` when every file matches its manifest sha256, else what does not."""
    try:
        bundle.verify()
    except GpmaskError as exc:
        return str(exc)
    return None


def _graph_rows(bundle: Bundle) -> tuple[list[dict], dict[str, dict[str, GraphBytes]]]:
    """One row per (weather, precision) graph the manifest lists, and the byte figures of
    the graphs that could be read, per precision then weather."""
    rows: list[dict] = []
    figures: dict[str, dict[str, GraphBytes]] = defaultdict(dict)
    names = [COMMON, *bundle.weathers]
    for precision in dict.fromkeys(p for w in names for p in bundle.precisions(w)):
        for weather in names:
            if precision not in bundle.precisions(weather):
                continue
            graph = bundle.graph_path(weather, precision)
            row = {"weather": weather, "precision": precision, "file": graph.name}
            if not graph.is_file():
                rows.append(row | {"status": "missing"})
                continue
            try:
                figures[precision][weather] = graph_bytes(graph)
            except GpmaskError:
                rows.append(row | {"status": "unreadable"})
        common = figures[precision].get(COMMON)
        common_records = set(common.records.values()) if common else set()
        for weather, figure in figures[precision].items():
            own = set(figure.records.values()) - (common_records if weather != COMMON else set())
            rows.append({
                "weather": weather, "precision": precision,
                "file": bundle.graph_path(weather, precision).name, "status": "ok",
                "layout": "compact" if figure.compact else "dense",
                "graph_bytes": figure.graph,
                "referenced_bytes": sum(figure.referenced.values()),
                "stored_for_it_bytes": sum(length for _, _, length in own),
                "dense_bytes": figure.dense,
            })
    return rows, figures


def _sharing(per_graph: dict[str, GraphBytes], weight_files: dict[str, int]) -> dict:
    """One precision's bytes: stored, referenced, the bundle against single-weather exports
    and against the dense layout."""
    refs: dict[str, int] = defaultdict(int)
    for figure in per_graph.values():
        for location, count in figure.referenced.items():
            refs[location] += count
    files = [f for f in refs if f in weight_files]
    stored = sum(weight_files[f] for f in files)
    return {
        "weight_files": files,
        "stored_bytes": stored,
        "referenced_bytes": sum(refs.values()),
        "bundle_bytes": stored + sum(figure.graph for figure in per_graph.values()),
        "single_weather_exports_bytes": sum(figure.dense + figure.graph for weather, figure
                                            in per_graph.items() if weather != COMMON),
        "dense_layout_bytes": sum(figure.dense + figure.graph for figure in per_graph.values()),
    }


def bundle_summary(path: str | os.PathLike) -> dict:
    """What ``gpmask inspect BUNDLE`` reports, as data (``--json`` prints it): damaged or
    missing files are described (``damage``), not raised."""
    bundle = Bundle.open(path, verify=False)
    manifest = bundle.manifest
    rows, figures = _graph_rows(bundle)
    weight_files = {w["path"]: w["bytes"] for w in manifest["weights"]}
    return {
        "bundle": str(bundle.root),
        "weathers": list(bundle.weathers),
        "default_weather": bundle.default_weather,
        "input": manifest["input"],
        "size_multiple": bundle.size_multiple,
        "output": manifest["output"]["name"],
        "graphs": rows,
        "weight_files": weight_files,
        "sharing": {precision: _sharing(per_graph, weight_files)
                    for precision, per_graph in figures.items()},
        "engines": [{"weather": weather, "precision": precision, **record}
                    for weather, per_precision in manifest.get("engines", {}).items()
                    for precision, record in per_precision.items()],
        "verification": manifest.get("verification", {"status": "unknown"}),
        "damage": _integrity(bundle),
    }


def format_bundle_summary(summary: dict) -> str:
    """:func:`bundle_summary` as the text ``gpmask inspect BUNDLE`` prints."""
    spec = summary["input"]
    shape = "x".join("?" if d is None else str(d) for d in spec.get("shape", []))
    lines = [
        f"bundle        {summary['bundle']}",
        f"weathers      {', '.join(summary['weathers'])} (default {summary['default_weather']})",
        f"input         {spec['name']} {spec['layout']} {spec['dtype']} {shape} "
        f"range {spec.get('range')}, H and W multiples of {summary['size_multiple']}",
        f"output        {summary['output']}",
    ]
    table = [("weather", "precision", "layout", "file", "graph", "weights used",
              "stored for it", "as dense")]
    for row in summary["graphs"]:
        if row["status"] == "ok":
            table.append((row["weather"], row["precision"], row["layout"], row["file"],
                          *(format_bytes(row[key]) for key in (
                              "graph_bytes", "referenced_bytes", "stored_for_it_bytes",
                              "dense_bytes"))))
        else:
            table.append((row["weather"], row["precision"], "-", row["file"],
                          row["status"].upper(), "-", "-", "-"))
    widths = [max(len(row[i]) for row in table) + 2 for i in range(len(table[0]) - 1)]
    lines.append("graphs")
    lines += ["  " + "".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + row[-1]
              for row in table]
    lines.append("weights")
    weight_files = summary["weight_files"]
    name_width = max([widths[0], *(len(name) + 2 for name in weight_files)])
    lines += [f"  {name.ljust(name_width)}{format_bytes(size)}" for name, size in
              weight_files.items()]
    lines.append("sharing")
    for precision, sharing in summary["sharing"].items():
        stored, referenced = sharing["stored_bytes"], sharing["referenced_bytes"]
        total, alone = sharing["bundle_bytes"], sharing["single_weather_exports_bytes"]
        as_dense = sharing["dense_layout_bytes"]
        indent = " " * len(precision)
        lines.append(
            f"  {precision}: {format_bytes(stored)} stored in "
            f"{', '.join(sharing['weight_files']) or '-'} for "
            f"{format_bytes(referenced)} referenced by the graphs "
            f"({referenced / max(stored, 1):.2f}x)"
        )
        lines.append(
            f"  {indent}  bundle {format_bytes(total)} (with common) vs "
            f"{len(summary['weathers'])} single-weather exports {format_bytes(alone)} "
            f"({total / max(alone, 1):.2f}x)"
        )
        lines.append(
            f"  {indent}  vs every graph holding its full weights (dense layout, no tensor "
            f"shared) {format_bytes(as_dense)} ({total / max(as_dense, 1):.2f}x)"
        )
    for engine in summary["engines"]:
        lines.append(f"engine        {engine['weather']} {engine['precision']} {engine['path']} "
                     f"(TensorRT {engine.get('tensorrt_version', '?')}, "
                     f"{engine.get('gpu', '?')})")
    verification = summary["verification"]
    report = f" ({verification['report']})" if "report" in verification else ""
    integrity = (f"DAMAGED: {summary['damage']}" if summary["damage"]
                 else "every file matches its manifest sha256")
    lines.append(f"verification  {verification['status']}{report}; {integrity}")
    return "\n".join(lines)


def describe_bundle(path: str | os.PathLike) -> str:
    """A human-readable summary of the bundle at ``path``, damaged files included."""
    return format_bundle_summary(bundle_summary(path))
