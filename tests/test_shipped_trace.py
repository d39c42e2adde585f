"""The shipped graph structure of the demo's architecture: equal to a fresh trace, used
by export in place of tracing, never for a network it does not fit."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from gpmask.bundle import COMMON
from gpmask.export import exporter
from gpmask.export.shipped_trace import load_trace, trace_path
from gpmask.export.trace import trace_graph
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.model import size_multiple
from tests.conftest import make_checkpoint


def _run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def test_shipped_trace_is_what_the_exporter_traces_today() -> None:
    demo = MaskedCheckpoint.load("demo")
    network = demo.build_model(COMMON)
    fresh = trace_graph(network, None, size_multiple(network))
    shipped = load_trace(demo, demo.bake_numpy(COMMON))
    assert shipped is not None
    assert [n.op_type for n in shipped.model.graph.node] == [
        n.op_type for n in fresh.model.graph.node]
    assert shipped.unused == fresh.unused
    image = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    np.testing.assert_array_equal(_run(shipped.model, image), _run(fresh.model, image))


def test_shipped_trace_stores_the_structure_not_the_parameters() -> None:
    demo = MaskedCheckpoint.load("demo")
    parameters = set(demo.bake_numpy(COMMON))
    stored = onnx.load(str(trace_path(demo.arch)))
    kept = [t.name for t in stored.graph.initializer if t.name in parameters]
    assert kept, "the parameters' initializers keep their names and shapes"
    assert all(not t.raw_data and not t.float_data
               for t in stored.graph.initializer if t.name in parameters)
    assert trace_path(demo.arch).stat().st_size < 0.05 * 4 * demo.num_parameters()


def test_a_network_of_other_shapes_gets_no_shipped_trace() -> None:
    other = make_checkpoint(arch=("tiny", {"num_res_blocks": 1}))
    assert load_trace(other, other.bake_numpy(COMMON), trace_path("tiny")) is None
    small = make_checkpoint()  # another architecture, pointed at the tiny trace
    assert load_trace(small, small.bake_numpy(COMMON), trace_path("tiny")) is None


def test_export_of_the_architecture_skips_tracing_and_matches_pytorch(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tracing(*args, **kwargs):
        raise AssertionError("export traced a network the package ships the trace of")

    monkeypatch.setattr(exporter, "trace_graph", no_tracing)
    checkpoint = make_checkpoint(arch=("tiny", {}))  # random values: not the demo's
    bundle = exporter.export_bundle(checkpoint, tmp_path / "bundle", progress=False)
    report = json.loads((bundle.root / "reports" / "export.json").read_text())
    assert set(report["graphs"]) == {COMMON, "rain", "raindrop", "snow"}
    for graph in report["graphs"].values():  # ONNX Runtime against PyTorch, per weather
        assert graph["inputs"] and all(result["passed"] for result in graph["inputs"])
