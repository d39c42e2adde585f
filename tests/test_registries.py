"""The registries are the one place a backend or a precision is named.

Every backend spec and every precision must reach the command line's choices and the
benchmark's targets, and ``auto`` must be derived from the registries: a spec added to
the registry is what ``auto`` takes, with no list written out anywhere else. The import
graph between gpmask's packages must keep its layers (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

import gpmask
import gpmask.runtime.backends as backends
from gpmask.bench.targets import BENCH_BACKENDS, plan_targets
from gpmask.bundle import Bundle, GraphQuality
from gpmask.cli import build_parser
from gpmask.precision import CALIBRATED, NAMES, PRECISIONS, TENSORRT_PRECISIONS
from gpmask.runtime.backends.base import Backend, BackendSpec
from tests.conftest import make_checkpoint


def _option(verb: str, flag: str) -> argparse.Action:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return next(a for a in sub.choices[verb]._actions if flag in a.option_strings)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    from gpmask.export import export_bundle

    return export_bundle(make_checkpoint(), tmp_path_factory.mktemp("registry") / "bundle",
                         verify=False, progress=False)


def test_every_backend_spec_reaches_the_command_line_and_the_bench() -> None:
    names = [spec.name for spec in backends.REGISTRY]
    assert len(set(names)) == len(names)
    for verb in ("run", "demo"):
        assert list(_option(verb, "--backend").choices) == ["auto", "onnxruntime", *names]
    assert BENCH_BACKENDS[-len(names):] == tuple(names)
    for spec in backends.REGISTRY:
        assert spec.device in ("cpu", "gpu")
        assert set(spec.precisions) <= set(NAMES), spec.name


def test_every_precision_reaches_the_command_line_and_some_backend() -> None:
    for verb in ("run", "demo"):
        assert list(_option(verb, "--precision").choices) == ["auto", *NAMES]
    assert list(_option("calibrate", "--precision").choices) == [
        p.name for p in PRECISIONS if p.recipe in ("fp16", "int8")] == list(CALIBRATED)
    assert list(_option("build", "--precision").choices) == [
        p.name for p in PRECISIONS if p.tensorrt] == list(TENSORRT_PRECISIONS)
    assert ",".join(NAMES) in _option("bench", "--precisions").help
    runnable = {p for spec in backends.REGISTRY for p in spec.precisions}
    assert runnable == set(NAMES)
    for precision in PRECISIONS:
        assert precision.graph in NAMES and (precision.int8 is not None) == \
            (precision.recipe == "int8")


class _Probe(Backend):
    """A backend that restores by returning its input: enough to see who was loaded."""

    def __init__(self, name: str) -> None:
        self.name, self.weathers = name, []

    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        return batch

    def close(self) -> None:
        pass


def _probe_spec(name: str, precisions: tuple[str, ...], refused: set[str]) -> BackendSpec:
    return BackendSpec(name, "cpu", precisions, unavailable=lambda device: None,
                       refusal=lambda b, p, d: f"no {p} here" if p in refused else None,
                       load=lambda b, p, d: _Probe(name))


def test_auto_is_read_from_the_registry(bundle, monkeypatch) -> None:
    first = _probe_spec("first", ("int8-openvino", "fp32"), refused={"int8-openvino"})
    second = _probe_spec("second", ("fp32",), refused=set())
    monkeypatch.setattr(backends, "REGISTRY", (first, second))
    choice = backends.choose(bundle, "auto", "auto")
    assert (choice.spec, choice.precision) == (first, "fp32")
    assert "int8-openvino: no int8-openvino here" in choice.reason
    assert choice.load(bundle).name == "first"
    monkeypatch.setattr(backends, "REGISTRY", (second, first))
    assert backends.choose(bundle, "auto", "auto").spec is second
    with pytest.raises(Exception, match="unknown backend 'openvino'"):
        backends.choose(bundle, "openvino", "fp32")


def test_bench_targets_are_read_from_the_registry(bundle, monkeypatch) -> None:
    probe = _probe_spec("openvino", ("fp32", "fp16"), refused={"fp16"})
    monkeypatch.setattr("gpmask.bench.targets.REGISTRY", (probe,))
    targets, skipped = plan_targets(bundle, ["openvino"], ["fp32", "fp16"], {})
    assert [t.label for t in targets] == ["openvino/fp32"]
    assert [s.line() for s in skipped] == ["fp16: no fp16 here"]


def test_auto_precision_skips_graphs_outside_the_quality_budget(bundle, monkeypatch) -> None:
    spec = _probe_spec("probe", ("int8-cpu", "fp32"), refused=set())
    monkeypatch.setattr(backends, "REGISTRY", (spec,))
    manifest = bundle.manifest
    records = {w: {**manifest["graphs"][w]["fp32"]} for w in bundle.networks}
    for weather, record in records.items():
        missed = weather == "snow"
        record["quality"] = vars(GraphQuality(40.0, 0.5 if missed else 0.1, 0.3, not missed))
        manifest["graphs"][weather]["int8-cpu"] = record
    try:
        choice = backends.choose(bundle, "auto", "auto")
        assert choice.precision == "fp32"
        assert "int8-cpu: its snow graph misses the quality budget (drop 0.50 dB > 0.3 dB)" \
            in choice.reason
        assert backends.choose(bundle, "auto", "int8-cpu").precision == "int8-cpu"  # asked
    finally:
        for weather in bundle.networks:
            manifest["graphs"][weather].pop("int8-cpu")


# ----------------------------------------------------------------- layers
#: Each package (or bottom module) and the layer it stands on; a package may import only
#: from lower layers (and itself). Applications (bench, demo, router, serve) and the
#: command line stand on top.
LAYERS = {
    "errors": 0, "fileio": 1, "sizes": 1, "precision": 1, "metrics": 1, "model": 1, "data": 1,
    "bundle": 2, "host": 3, "graph": 3, "masking": 3,
    "export": 4, "calibration": 4, "build": 4,
    "runtime": 5,
    "router": 6, "demo": 6, "bench": 6, "serve": 6,
    "commands": 7, "cli": 8,
}


def _imports() -> dict[str, set[str]]:
    """gpmask package -> the gpmask packages its modules import (at any depth)."""
    root = Path(gpmask.__file__).parent
    edges: dict[str, set[str]] = defaultdict(set)
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts == ("__init__",):
            continue
        source = parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("gpmask.") and name.split(".")[1] != source:
                    edges[source].add(name.split(".")[1])
    return edges


def test_packages_import_only_from_layers_below() -> None:
    edges = _imports()
    assert set(edges) <= set(LAYERS), set(edges) - set(LAYERS)
    upward = sorted((source, target) for source, targets in edges.items()
                    for target in targets if LAYERS[target] >= LAYERS[source])
    assert upward == []
    assert "export" not in edges["calibration"]
    for stage in ("export", "calibration", "build", "runtime"):
        assert "bundle" in edges[stage]


def test_the_runtime_imports_no_torch() -> None:
    root = Path(gpmask.__file__).parent
    for package in ("runtime", "bundle", "graph"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module] if isinstance(node, ast.ImportFrom) else \
                    [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n and n.split(".")[0] == "torch" for n in names), path
