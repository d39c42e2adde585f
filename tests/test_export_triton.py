"""``gpmask export-triton``: a model repository for NVIDIA's Triton container.

Every config.pbtxt is parsed with Triton's own ``model_config_pb2``; every weather model
is run (ONNX Runtime, OpenVINO) and compared with the Restorer on the same frames; the
routing model's frame handling is compared with the runtime's. The production server
(its ONNX Runtime, OpenVINO and TensorRT backends) is not installable here, so the
repository itself is not loaded by it in these tests.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.cli import main
from gpmask.runtime.routing import RoutingPolicy

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient is not installed")
NETWORKS = ["rain", "raindrop", "snow", "common"]


def _config(path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repositories(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("repos")
    made = {}
    for backend in ("onnxruntime", "openvino"):
        made[backend] = folder / backend
        assert main(["export-triton", str(demo_bundle), "-o", str(made[backend]), "--backend",
                     backend, "--instances", "2", "--max-batch", "4", "--queue-delay-us",
                     "500", "--no-progress"]) == 0
    return made


@pytest.mark.parametrize("backend, platform, files", [
    ("onnxruntime", "onnxruntime_onnx", ["model.onnx"]),
    ("openvino", "openvino", ["model.bin", "model.xml"]),
])
def test_every_config_parses_with_tritons_schema(repositories, backend, platform, files):
    repo = repositories[backend]
    assert sorted(p.name for p in repo.iterdir()) == sorted([*NETWORKS, "gpmask", "router"])
    for network in NETWORKS:
        config = _config(repo / network / "config.pbtxt")
        assert config.name == network
        assert (config.platform or config.backend) == platform
        assert config.max_batch_size == 4
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind))
                for g in config.instance_group] == [
            (2, "KIND_CPU" if backend == "openvino" else "KIND_AUTO")]
        assert [(t.name, list(t.dims)) for t in config.input] == [("image", [3, -1, -1])]
        assert [(t.name, list(t.dims)) for t in config.output] == [("restored", [3, -1, -1])]
        assert sorted(p.name for p in (repo / network / "1").iterdir()) == files
    routing = _config(repo / "gpmask" / "config.pbtxt")
    assert (routing.backend, routing.max_batch_size) == ("python", 4)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims),
             t.allow_ragged_batch) for t in routing.input] == [
        ("image", "TYPE_UINT8", [-1, -1, 3], True)]
    weather = routing.output[1]
    assert (weather.name, list(weather.dims), weather.label_filename) == (
        "weather", [5], "weathers.txt")
    assert (repo / "gpmask" / "weathers.txt").read_text().split() == [
        "rain", "raindrop", "snow", "common", "clear"]
    settings = json.loads(routing.parameters["gpmask"].string_value)
    assert settings["default_weather"] == "auto" and settings["graph_batch"] == 4
    assert settings["router"]["classes"] == ["clear", "rain", "raindrop", "snow"]
    router = _config(repo / "router" / "config.pbtxt")
    assert router.platform == "onnxruntime_onnx" and router.max_batch_size == 0
    tiles = settings["router"]["grid"][0] * settings["router"]["grid"][1]
    assert list(router.input[0].dims) == [tiles, 3, *[settings["router"]["tile"]] * 2]
    assert settings["router"]["min_confidence"] == RoutingPolicy().min_confidence


def test_weather_models_restore_as_the_restorer_does(repositories, demo_bundle):
    """Each model file alone (no weights.bin beside it), through the routing model's frame
    conversion, gives the Restorer's frames: ONNX Runtime exactly, OpenVINO within a level."""
    import onnxruntime as ort
    import openvino as ov

    from gpmask.runtime import Restorer
    from gpmask.serve import protocol

    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    batch = protocol.frames_to_nchw(frames, 4)
    core = ov.Core()
    with Restorer(demo_bundle, backend="onnxruntime-cpu") as restorer:
        for network in NETWORKS:
            expected = restorer.restore_batch(frames, network)
            session = ort.InferenceSession(
                str(repositories["onnxruntime"] / network / "1" / "model.onnx"),
                providers=["CPUExecutionProvider"])
            out = session.run(["restored"], {"image": batch})[0]
            assert np.array_equal(protocol.nchw_to_frames(out, 30, 50), expected), network
            compiled = core.compile_model(
                str(repositories["openvino"] / network / "1" / "model.xml"), "CPU",
                {"INFERENCE_PRECISION_HINT": "f32"})
            out = compiled(batch)[0]
            difference = np.abs(protocol.nchw_to_frames(out, 30, 50).astype(int) - expected)
            assert difference.max() <= 1, network


def test_the_routing_model_routes_as_gpmask_run(repositories, demo_bundle):
    """The container has no OpenCV and no gpmask: the routing model cuts the router's tiles
    and decides with the router_frames.py copied beside it, as ClassifierRouter does on
    the same frame (a frame the router is unsure of is clear)."""
    import onnxruntime as ort

    from gpmask.bundle import Bundle
    from gpmask.runtime.router_frames import UNSURE
    from gpmask.runtime.routing import ClassifierRouter

    module = _import_routing_model(repositories["onnxruntime"] / "gpmask" / "1")
    settings = json.loads(_config(repositories["onnxruntime"] / "gpmask" / "config.pbtxt")
                          .parameters["gpmask"].string_value)
    session = ort.InferenceSession(str(repositories["onnxruntime"] / "router" / "1" /
                                       "model.onnx"), providers=["CPUExecutionProvider"])
    model = module.TritonPythonModel()
    model.router = settings["router"]
    model._infer = lambda name, input_name, output_name, batch: session.run(
        [output_name], {input_name: batch})[0]  # Triton's BLS call, answered by the same graph
    router = ClassifierRouter.from_bundle(Bundle.open(demo_bundle))
    rng = np.random.default_rng(3)
    decisions = []
    for height, width in [(96, 96), (192, 256), (120, 200), (480, 640), (40, 300)]:
        frame = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), np.uint8), (5, 5), 2)
        expected = router.classify(np.ascontiguousarray(frame[:, :, ::-1]))
        decisions.append(expected)
        assert model.classify(frame) == ("clear" if expected == UNSURE else expected)
    from gpmask.data.clips import make_clip  # weather the router knows, not only noise

    clip = make_clip(["rain", "snow"], frames=4, size=(96, 128))
    for bgr in clip.degraded:
        expected = router.classify(bgr)
        decisions.append(expected)
        assert model.classify(np.ascontiguousarray(bgr[:, :, ::-1])) == (
            "clear" if expected == UNSURE else expected)
    assert len(set(decisions)) > 1


def _import_routing_model(folder: Path):
    """The repository's routing ``model.py``, imported as Triton's Python backend does: its
    folder first on the path, so it finds the ``protocol`` and ``router_frames`` beside it
    (forgotten again afterwards, so no other test sees those copies)."""
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("exported_model", folder / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))
        for name in ("protocol", "router_frames"):
            sys.modules.pop(name, None)


def test_the_routing_model_file_imports_the_protocol_beside_it(repositories):
    folder = repositories["onnxruntime"] / "gpmask" / "1"
    module = _import_routing_model(folder)
    assert Path(module.protocol.__file__).resolve() == (folder / "protocol.py").resolve()
    assert Path(module.router_frames.__file__).resolve() == (
        folder / "router_frames.py").resolve()
    assert issubclass(module.TritonPythonModel, module.protocol.FrameModel)


@pytest.mark.parametrize("argv, message", [
    (["-o", "{tmp}/repo"], "exists; pass --force to replace it"),
    (["-o", "{tmp}/mine", "--force"], "is not a gpmask Triton repository"),
    (["-o", "{tmp}/none/repo"], "folder {tmp}/none does not exist"),
    (["-o", "{tmp}/new", "--backend", "tensorrt"], "has no fp32 TensorRT engines"),
    (["-o", "{tmp}/new", "--precision", "fp16"], "has no fp16 graph for 'rain'"),
    (["-o", "{tmp}/new", "--weather", "fog"], "--weather 'fog': not one of"),
    (["-o", "{tmp}/new", "--instances", "0"], "--instances must be at least 1"),
    (["-o", "{bundle}/weights.bin"], "is a file of the input folder"),
])
def test_bad_export_options_end_in_one_line_and_change_nothing(
        demo_bundle, tmp_path, capsys, argv, message):
    (tmp_path / "repo" / "gpmask" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "gpmask" / "1" / "protocol.py").write_text("# an earlier export")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's notes")
    before = sorted(p for p in tmp_path.rglob("*"))
    bundle_before = {p: p.read_bytes() for p in demo_bundle.iterdir()}
    argv = [a.format(tmp=tmp_path, bundle=demo_bundle) for a in argv]
    assert main(["export-triton", str(demo_bundle), *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpmask: error: "), err
    assert message.format(tmp=tmp_path) in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert {p: p.read_bytes() for p in demo_bundle.iterdir()} == bundle_before


def test_force_replaces_an_earlier_repository(demo_bundle, tmp_path, capsys):
    target = tmp_path / "repo"
    for extra in ([], ["--force", "--weather", "snow", "--no-dynamic-batching"]):
        assert main(["export-triton", str(demo_bundle), "-o", str(target), *extra,
                     "--no-progress"]) == 0
    config = _config(target / "gpmask" / "config.pbtxt")
    assert json.loads(config.parameters["gpmask"].string_value)["default_weather"] == "snow"
    assert not config.HasField("dynamic_batching")
    assert "wrote" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temporary folder left
