"""The compact layout: bytes stored, bit-identical weights and outputs, stock readers,
the folded graph TensorRT is given, the runtime, fp16 and int8 graphs, damage.

Independent computations: the dense weights come from ``MaskedCheckpoint.bake_numpy``
(or from the dense-layout bundle exported from the same checkpoint); the elements a
weather changes are counted here from those arrays, bit by bit.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpmask.bundle import Bundle
from gpmask.bundle.compact import compact_graphs, rebuild_inputs
from gpmask.bundle.summary import describe_bundle, format_bytes
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.pipeline import calibrate_bundle
from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.export import export_bundle
from gpmask.graph.fold import dense_graph_file, fold_rebuild
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend
from tests.conftest import make_checkpoint

WEATHERS = ("rain", "raindrop", "snow")
GRAPHS = ("common", *WEATHERS)
DENSITY = 0.1
FAST_INT8 = dict(max_psnr_drop=100, synthetic=4, calibration_size=(32, 32), eval_size=(32, 32))


@pytest.fixture(scope="module")
def checkpoint() -> MaskedCheckpoint:
    return make_checkpoint(WEATHERS, density=DENSITY)


@pytest.fixture(scope="module")
def bundles(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The same checkpoint exported in both layouts."""
    folder = tmp_path_factory.mktemp("layouts")
    export_bundle(checkpoint, folder / "compact", progress=False)  # the default layout
    export_bundle(checkpoint, folder / "dense", progress=False, layout="dense")
    return {"compact": folder / "compact", "dense": folder / "dense"}


def changed_fraction(checkpoint: MaskedCheckpoint, weather: str) -> float:
    """Fraction of the network's elements whose baked bits differ from the common ones."""
    baked, common = checkpoint.bake_numpy(weather), checkpoint.bake_numpy("common")
    changed = sum(int((baked[n].view(np.uint32) != common[n].view(np.uint32)).sum())
                  for n in common)
    return changed / checkpoint.num_parameters()


def run(graph: Path | bytes, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


def records(graph: Path) -> dict[str, tuple[str, int, int]]:
    model = onnx.load(str(graph), load_external_data=False)
    found = {}
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            found[tensor.name] = (entry["location"], int(entry["offset"]), int(entry["length"]))
    return found


def network_bytes(bundles: dict[str, Path]) -> int:
    """One network's weights: what the dense common graph references."""
    return sum(length for _, _, length in records(bundles["dense"] / "common.onnx").values())


def test_weight_file_meets_the_size_goal(checkpoint, bundles) -> None:
    """Common once, and per weather about d of the values plus 1/32 for where they are:
    weights.bin <= (1 + N (d + 1/32) + 5 %) x one network; the dense one is about N + 1."""
    network = network_bytes(bundles)
    density = np.mean([changed_fraction(checkpoint, w) for w in WEATHERS])
    assert 0.08 < density < 0.12
    compact = (bundles["compact"] / "weights.bin").stat().st_size
    dense = (bundles["dense"] / "weights.bin").stat().st_size
    assert compact <= (1 + len(WEATHERS) * (density + 1 / 32) + 0.05) * network
    assert compact >= network  # the common weights are all there
    assert dense >= 0.95 * (len(WEATHERS) + 1) * network
    manifest = Bundle.open(bundles["compact"]).manifest
    assert manifest["layout"] == "compact"
    assert {manifest["graphs"][g]["fp32"]["layout"] for g in GRAPHS} == {"compact"}
    assert Bundle.open(bundles["dense"]).manifest["layout"] == "dense"
    # The rebuild adds nodes, not much: each compact graph file within 1.5x the dense one.
    for graph in GRAPHS:
        size = (bundles["compact"] / f"{graph}.onnx").stat().st_size
        assert size < 1.5 * (bundles["dense"] / f"{graph}.onnx").stat().st_size


@pytest.mark.parametrize("graph", GRAPHS)
def test_compact_graph_is_valid_and_equals_the_dense_graph(bundles, graph: str) -> None:
    compact, dense = bundles["compact"] / f"{graph}.onnx", bundles["dense"] / f"{graph}.onnx"
    onnx.checker.check_model(str(compact), full_check=True)
    for shape in [(1, 3, 40, 56), (2, 3, 24, 12)]:
        image = np.random.default_rng(shape[0]).random(shape, dtype=np.float32)
        out_compact, out_dense = run(compact, image), run(dense, image)
        assert np.max(np.abs(out_compact - out_dense)) == 0.0


@pytest.mark.parametrize("graph", GRAPHS)
def test_folded_weights_are_the_baked_weights_bit_for_bit(checkpoint, bundles,
                                                          graph: str) -> None:
    model = onnx.load(str(bundles["compact"] / f"{graph}.onnx"))
    assert {n.op_type for n in model.graph.node} >= {"Split", "Reshape"}
    folded = fold_rebuild(model)
    dense = onnx.load(str(bundles["dense"] / f"{graph}.onnx"))
    assert [(n.op_type, list(n.input), list(n.output)) for n in folded.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in dense.graph.node]
    values = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}
    assert set(values) == {t.name for t in dense.graph.initializer}
    for name, baked in checkpoint.bake_numpy(graph).items():
        if name not in values:
            continue  # a parameter the traced graph does not use
        assert values[name].dtype == baked.dtype and values[name].shape == baked.shape
        assert np.array_equal(values[name].view(np.uint8), baked.view(np.uint8)), name


@pytest.mark.parametrize("graph", ["common", "snow"])
def test_tensorrt_is_given_a_folded_graph_equal_to_the_compact_one(bundles, graph: str) -> None:
    """What ``gpmask build`` hands TensorRT's parser: no rebuild left, same outputs."""
    path = bundles["compact"] / f"{graph}.onnx"
    with dense_graph_file(path, check_shape=(1, 3, 32, 32)) as folded_path:
        assert folded_path != path
        folded = onnx.load(str(folded_path))
    onnx.checker.check_model(folded, full_check=True)
    dense = onnx.load(str(bundles["dense"] / f"{graph}.onnx"))
    kinds = collections.Counter(n.op_type for n in folded.graph.node)
    assert kinds == collections.Counter(n.op_type for n in dense.graph.node)
    assert not rebuild_inputs(folded) and not {"Split", "ScatterElements"} & set(kinds)
    image = np.random.default_rng(5).random((1, 3, 48, 40), dtype=np.float32)
    assert np.array_equal(run(folded.SerializeToString(), image), run(path, image))


def test_onnxruntime_folds_the_rebuild_when_it_creates_a_session(bundles, tmp_path) -> None:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundles["compact"] / "rain.onnx"), options)
    optimized = onnx.load(str(tmp_path / "optimized.onnx"), load_external_data=False)
    dense = onnx.load(str(bundles["dense"] / "rain.onnx"), load_external_data=False)
    assert collections.Counter(n.op_type for n in optimized.graph.node) == \
        collections.Counter(n.op_type for n in dense.graph.node)


def test_polygraphy_inspects_and_runs_a_compact_graph(bundles) -> None:
    import subprocess

    result = subprocess.run(
        ["polygraphy", "inspect", "model", str(bundles["compact"] / "snow.onnx"),
         "--show", "layers"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Conv" in result.stdout and "ScatterElements" in result.stdout
    result = subprocess.run(
        ["polygraphy", "run", str(bundles["compact"] / "raindrop.onnx"), "--onnxrt",
         "--input-shapes", "image:[1,3,32,24]"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored [dtype=float32, shape=(1, 3, 32, 24)]" in result.stdout


def weight_graph(weight: np.ndarray, name: str = "w") -> onnx.ModelProto:
    """y = x @ weight, the weight an initializer."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", name], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, name)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("pattern, encoding", [
    ("dense-random", "mask"),     # 40 %: the bit mask is smaller than steps
    ("random", "steps8"),         # 5 %: one byte per step beats a bit per element
    ("far-apart", "steps16"),     # a handful of elements: two-byte steps, no fillers
    ("clustered", "steps8"),      # long gaps: filler steps rewrite common values
])
def test_each_encoding_rebuilds_the_exact_weights(pattern: str, encoding: str) -> None:
    rng = np.random.default_rng(3)
    common = rng.normal(size=(512, 96)).astype(np.float32)
    flat = common.size
    where = {
        "dense-random": rng.random(flat) < 0.4,
        "random": rng.random(flat) < 0.05,
        "far-apart": np.isin(np.arange(flat), [0, 20_000, 40_000, flat - 1]),
        "clustered": (np.arange(flat) % 4096 < 300),
    }[pattern]
    weather = common.copy().reshape(-1)
    weather[where] += 1.0
    weather = weather.reshape(common.shape)
    models, groups = compact_graphs({"common": weight_graph(common),
                                     "w": weight_graph(weather)}, "common")
    (group,) = groups["w"]
    assert group.encoding == encoding and group.differing == int(where.sum())
    for name, expected in (("common", common), ("w", weather)):
        onnx.checker.check_model(models[name], full_check=True)
        folded = fold_rebuild(models[name])
        (tensor,) = folded.graph.initializer
        assert np.array_equal(numpy_helper.to_array(tensor).view(np.uint32),
                              expected.view(np.uint32))
        x = rng.random((1, 512), dtype=np.float32)
        assert np.array_equal(run(models[name].SerializeToString(), x),
                              run(folded.SerializeToString(), x))


def resize_graph(weight: np.ndarray) -> onnx.ModelProto:
    """A 1x1 convolution, then nearest resizing by 2 (a Resize reading float scales)."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="nearest",
                          coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        "resize",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"),
         numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_resizes_scales_stay_a_plain_initializer_that_shape_inference_reads() -> None:
    common = np.random.default_rng(4).normal(size=(2, 2, 1, 1)).astype(np.float32)
    weather = common + np.array([1, 0, 0, 0], np.float32).reshape(common.shape)
    models, _ = compact_graphs({"common": resize_graph(common), "w": resize_graph(weather)},
                               "common")
    for name, model in models.items():
        initializers = {t.name: t for t in model.graph.initializer}
        assert "w" not in initializers  # the weight is rebuilt...
        assert numpy_helper.to_array(initializers["scales"]).tolist() == [1, 1, 2, 2], name
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        dims = inferred.graph.output[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims] == [1, 2, 8, 12], name  # ...the scales are read


def test_compacting_a_compact_graph_is_refused(bundles) -> None:
    model = onnx.load(str(bundles["compact"] / "rain.onnx"))
    with pytest.raises(GpmaskError, match="graph 'common' already rebuilds weights.*fold it"):
        compact_graphs({"common": model, "rain": model}, "common")


@pytest.mark.parametrize("tensor", ["steps8", "values"])
def test_a_damaged_mask_or_values_tensor_is_refused_by_its_hash(bundles, tmp_path,
                                                                tensor: str) -> None:
    root = Path(shutil.copytree(bundles["compact"], tmp_path / "bundle"))
    found = records(root / "rain.onnx")
    name = next(n for n in found if n.endswith("/steps" if tensor == "steps8" else "/values"))
    location, offset, length = found[name]
    assert location == "weights.bin" and length > 0
    data = bytearray((root / location).read_bytes())
    data[offset + length // 2] ^= 0x01
    (root / location).write_bytes(bytes(data))
    message = "bundle file weights.bin does not match its manifest sha256"
    with pytest.raises(GpmaskError, match=message):
        Bundle.open(root).verify()
    with pytest.raises(GpmaskError, match=message):
        OnnxRuntimeBackend(Bundle.open(root))


def test_runtime_loads_both_layouts_with_equal_frames(bundles) -> None:
    image = np.random.default_rng(2).random((1, 3, 32, 48), dtype=np.float32)
    backends = {layout: OnnxRuntimeBackend(Bundle.open(root)) for layout, root in bundles.items()}
    try:
        for weather in GRAPHS:
            outputs = [np.array(b.run(weather, image)) for b in backends.values()]
            assert np.array_equal(outputs[0], outputs[1]), weather
        # Rebuild inputs are left to each session (folded away); only plain tensors shared.
        values = backends["compact"].initializers.values
        shared = {(path.name, offset) for path, offset, *_ in values}
        rebuild = {(loc, off) for g in GRAPHS for n, (loc, off, _) in
                   records(bundles["compact"] / f"{g}.onnx").items() if n.startswith("compact/")}
        assert rebuild and not shared & rebuild
    finally:
        for backend in backends.values():
            backend.close()


def test_inspect_reports_bytes_per_weather_against_dense_and_separate_exports(
        checkpoint, bundles, capsys) -> None:
    root = bundles["compact"]
    text = describe_bundle(root)
    rain = records(root / "rain.onnx")
    common = set(records(root / "common.onnx").values())
    own = sum(length for record in rain.values() if record not in common
              for length in [record[2]])
    network = network_bytes(bundles)
    row = next(line for line in text.splitlines() if line.split()[:2] == ["rain", "fp32"])
    assert row.split()[2] == "compact"
    assert format_bytes(own) in row and format_bytes(network) in row
    stored = (root / "weights.bin").stat().st_size
    graphs = sum((root / f"{g}.onnx").stat().st_size for g in GRAPHS)
    alone = sum(network + (root / f"{w}.onnx").stat().st_size for w in WEATHERS)
    full = sum(network + (root / f"{g}.onnx").stat().st_size for g in GRAPHS)
    total = stored + graphs
    assert (f"bundle {format_bytes(total)} (with common) vs 3 single-weather exports "
            f"{format_bytes(alone)} ({total / alone:.2f}x)") in text
    assert (f"vs every graph holding its full weights (dense layout, no tensor shared) "
            f"{format_bytes(full)} ({total / full:.2f}x)") in text
    assert main(["inspect", str(root)]) == 0
    assert capsys.readouterr().out.strip() == text


def test_unknown_layout_is_refused(checkpoint, tmp_path, capsys) -> None:
    with pytest.raises(GpmaskError, match="unknown layout 'sparse'; use one of compact, dense"):
        export_bundle(checkpoint, tmp_path / "b", layout="sparse", progress=False)
    assert not (tmp_path / "b").exists()
    path = tmp_path / "model.gpmask.safetensors"
    checkpoint.save(path)
    assert main(["export", str(path), "-o", str(tmp_path / "d"), "--layout", "dense",
                 "--no-progress", "--no-verify"]) == 0
    assert Bundle.open(tmp_path / "d").manifest["layout"] == "dense"


@pytest.mark.parametrize("precision", ["fp16", "int8", "int8-cpu"])
def test_precision_graphs_of_both_layouts_give_identical_outputs(bundles, tmp_path,
                                                                 precision: str) -> None:
    """fp16 graphs are compact in a compact bundle, int8 ones dense; either way each
    weather's output equals the dense bundle's, bit for bit."""
    options = CalibrationOptions(**(FAST_INT8 if "int8" in precision else {"eval_size": (32, 32)}))
    roots = {}
    for layout, source in bundles.items():
        roots[layout] = Path(shutil.copytree(source, tmp_path / layout))
        calibrate_bundle(roots[layout], precision, options)
    compact, dense = Bundle.open(roots["compact"]), Bundle.open(roots["dense"])
    expected = "compact" if precision == "fp16" else "dense"
    image = np.random.default_rng(4).random((1, 3, 32, 32), dtype=np.float32)
    for graph in GRAPHS:
        assert compact.manifest["graphs"][graph][precision]["layout"] == expected
        path = compact.graph_path(graph, precision)
        onnx.checker.check_model(str(path), full_check=True)
        out = run(path, image)
        assert np.max(np.abs(out - run(dense.graph_path(graph, precision), image))) == 0.0
        if expected == "compact":
            with dense_graph_file(path, check_shape=(1, 3, 32, 32)) as folded_path:
                folded = onnx.load(str(folded_path), load_external_data=False)
            plain = onnx.load(str(dense.graph_path(graph, precision)), load_external_data=False)
            assert collections.Counter(n.op_type for n in folded.graph.node) == \
                collections.Counter(n.op_type for n in plain.graph.node)
    sizes = {w["path"]: w["bytes"] for w in compact.manifest["weights"]}
    name = f"weights.{precision}.bin"
    dense_sizes = {w["path"]: w["bytes"] for w in dense.manifest["weights"]}
    if precision == "fp16":  # values in half the bytes, positions as they were
        assert sizes["weights.bin"] / 2 < sizes[name] < 0.6 * sizes["weights.bin"]
        assert sizes[name] < 0.5 * dense_sizes[name]
    else:
        assert sizes[name] == dense_sizes[name]
