"""A Triton model repository for NVIDIA's Triton container, from a bundle.

Layout (``gpmask export-triton BUNDLE -o REPO``)::

    REPO/
      gpmask/        config.pbtxt, weathers.txt, 1/model.py, 1/protocol.py  (Python, routing)
      router/        config.pbtxt, 1/model.onnx             (only when the bundle has a router)
      rain/ snow/ ... common/   config.pbtxt, 1/model.onnx | 1/model.xml+bin | 1/model.plan

Clients talk to ``gpmask`` (:mod:`gpmask.serve.protocol`); it routes each frame to the
weather's model (:mod:`gpmask.serve.routing_model`). Each weather model is on the
backend that fits: ``tensorrt_plan`` when the bundle has engines at the precision for
every weather, otherwise ``onnxruntime_onnx`` (GPU or CPU) or ``openvino`` (CPU).

Every weather model holds its own dense weights. A bundle's graphs share one weight
file (and, in the compact layout, rebuild their weights from the common ones), but a
Triton model is loaded, unloaded and copied on its own, its ONNX file must find its
external data beside it in its version folder, and Triton's backends never share
weights between models in memory anyway. So each graph is folded into plain weights
(:func:`gpmask.graph.fold.load_dense`; OpenVINO and TensorRT need that too) and
written self-contained: the repository can be moved, mounted or uploaded as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_directory, check_outputs
from gpmask.precision import GRAPH_PRECISIONS
from gpmask.serve import protocol
from gpmask.serve.config import Batching, Tensor, model_config
from gpmask.serve.triton import MAX_SIZE, frame_tensor, weather_tensor

#: Backends a repository's weather models can use (``auto``: TensorRT engines when the
#: bundle has them at the precision, else ONNX Runtime).
REPOSITORY_BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino")
#: Above this an ONNX file keeps its weights in ``model.onnx.data`` (protobuf's 2 GiB limit).
EMBED_LIMIT = 1 << 30


def is_repository(folder: Path) -> bool:
    """Whether ``folder`` is a repository this command wrote."""
    return (folder / protocol.MODEL / "1" / "protocol.py").is_file()


def export_repository(
    bundle: Bundle | str | os.PathLike,
    output: str | os.PathLike,
    backend: str = "auto",
    precision: str = "fp32",
    batching: Batching | None = None,
    instances: int = 1,
    weather: str | None = None,
    clear: str = "pass",
    max_size: tuple[int, int] = MAX_SIZE,
    force: bool = False,
    progress: bool = True,
) -> str:
    """Write the repository for ``bundle`` to ``output``; returns the weather models' backend.

    ``weather`` is the weather of a request that names none (default: ``auto`` when the
    bundle has a router, else its default weather); ``clear`` what ``clear`` frames get.
    The repository is built beside ``output`` and renamed into place when complete.
    """
    from gpmask.serve.triton import ServeSettings

    batching = batching or Batching()
    if not isinstance(bundle, Bundle):
        check_outputs([output], [bundle])
        bundle = Bundle.open(bundle)
    else:
        check_outputs([output], [bundle.root])
    if precision not in GRAPH_PRECISIONS:
        raise GpmaskError(f"precision {precision!r}: a repository holds graphs or engines; "
                          f"choose one of {', '.join(GRAPH_PRECISIONS)}")
    networks = bundle.networks
    chosen = _backend(bundle, backend, precision, networks)
    default = ServeSettings(weather=weather).default_weather(bundle)
    graph_batch = _graph_batch(bundle, chosen, precision)
    with atomic_directory(output, force, is_repository, "a gpmask Triton repository") as folder, \
            tqdm(total=len(networks) + 2, desc="export-triton", unit="model",
                 disable=not progress) as bar:
        for network in networks:
            bar.set_postfix_str(network)
            _weather_model(folder, bundle, network, chosen, precision, batching, graph_batch,
                           instances)
            bar.update()
        router = _router_model(folder, bundle, instances)
        bar.update()
        settings = {
            "weathers": bundle.weathers, "default_weather": default, "clear": clear,
            "max_size": list(max_size), "size_multiple": bundle.size_multiple,
            "graph_batch": graph_batch or batching.max_batch,
            "graph_input": bundle.input_spec.name,
            "graph_output": bundle.output_spec.name, "router": router,
        }
        _routing_model(folder, bundle, settings, batching, instances)
        bar.update()
    return chosen


def _backend(bundle: Bundle, backend: str, precision: str, networks: list[str]) -> str:
    if backend not in REPOSITORY_BACKENDS:
        raise GpmaskError(f"unknown backend {backend!r}; choose one of "
                          f"{', '.join(REPOSITORY_BACKENDS)}")
    built = set(bundle.engines(precision)) == set(networks)
    if backend == "tensorrt" and not built:
        raise GpmaskError(f"bundle {bundle.root} has no {precision} TensorRT engines for every "
                          f"weather; build them on the target GPU with `gpmask build "
                          f"{bundle.root} --precision {precision}`")
    if backend == "auto":
        return "tensorrt" if built else "onnxruntime"
    if backend != "tensorrt":
        for network in networks:
            bundle.graph_path(network, precision)  # refuses a missing graph by name
    return backend


def _graph_batch(bundle: Bundle, backend: str, precision: str) -> int:
    """0 for weather models with a batch dimension, else their fixed batch (1)."""
    if backend == "tensorrt":
        batch = max((record.shapes or {}).get("batch", 1)
                    for record in bundle.engines(precision).values())
    else:
        batch = bundle.input_spec.shape[0]
        if batch is None:
            return 0
    if batch != 1:
        raise GpmaskError(f"bundle {bundle.root} has a fixed batch of {batch}; a Triton "
                          f"repository needs graphs with a free batch or batch 1 (export "
                          f"without --batch)")
    return 1


def _weather_model(folder: Path, bundle: Bundle, network: str, backend: str, precision: str,
                   batching: Batching, graph_batch: int, instances: int) -> None:
    version = folder / network / "1"
    version.mkdir(parents=True)
    spec_in, spec_out = bundle.input_spec, bundle.output_spec
    dims = [-1 if d is None else d for d in spec_in.shape[1:]]
    if graph_batch:  # a fixed batch: no batch dimension of Triton's
        dims, batch = [graph_batch, *dims], None
    else:
        batch = batching
    if backend == "tensorrt":
        engine = bundle.engine(network, precision).path
        bundle.verify([engine])
        shutil.copyfile(bundle.root / engine, version / "model.plan")
        platform, kind = "tensorrt_plan", "KIND_GPU"
    else:
        graph = _folded_graph(bundle, network, precision)
        if backend == "openvino":
            _save_openvino(graph, version / "model.xml")
            platform, kind = "openvino", "KIND_CPU"
        else:
            _save_onnx(graph, version / "model.onnx")
            platform, kind = "onnxruntime_onnx", "KIND_AUTO"
    text = model_config(
        network, platform, [Tensor(spec_in.name, "TYPE_FP32", dims)],
        [Tensor(spec_out.name, "TYPE_FP32", dims)], batch, instances, kind)
    (folder / network / "config.pbtxt").write_text(text)


def _folded_graph(bundle: Bundle, network: str, precision: str) -> Any:
    from gpmask.graph.fold import load_dense

    bundle.verify([bundle.graph(network, precision).path, *bundle.weight_files()])
    return load_dense(bundle.graph_path(network, precision))


def _save_onnx(graph: Any, path: Path) -> None:
    import onnx

    external = graph.ByteSize() > EMBED_LIMIT
    onnx.save(graph, str(path), save_as_external_data=external,
              all_tensors_to_one_file=True, location=f"{path.name}.data")


def _save_openvino(graph: Any, path: Path) -> None:
    import openvino as ov

    onnx_path = path.with_suffix(".onnx")
    _save_onnx(graph, onnx_path)
    ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    for leftover in path.parent.glob("model.onnx*"):
        leftover.unlink()


def _router_model(folder: Path, bundle: Bundle, instances: int) -> dict[str, Any] | None:
    """Model ``router`` (the bundle's classifier on ONNX Runtime); its settings for the
    routing model, or None when the bundle has no router."""
    import onnx

    record = bundle.router
    if record is None:
        return None
    bundle.verify([record.path])
    graph = onnx.load(str(bundle.root / record.path))
    (folder / "router" / "1").mkdir(parents=True)
    _save_onnx(graph, folder / "router" / "1" / "model.onnx")

    def dims(value: Any) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1
                for d in value.type.tensor_type.shape.dim]

    graph_in, graph_out = graph.graph.input[0], graph.graph.output[0]
    (folder / "router" / "config.pbtxt").write_text(model_config(
        "router", "onnxruntime_onnx", [Tensor(graph_in.name, "TYPE_FP32", dims(graph_in))],
        [Tensor(graph_out.name, "TYPE_FP32", dims(graph_out))], None, instances, "KIND_CPU"))
    return {"input": graph_in.name, "output": graph_out.name, "classes": list(record.classes),
            "input_size": list(record.input_size)}


def _routing_model(folder: Path, bundle: Bundle, settings: dict[str, Any], batching: Batching,
                   instances: int) -> None:
    model = folder / protocol.MODEL
    (model / "1").mkdir(parents=True)
    here = Path(__file__).parent
    shutil.copyfile(here / "routing_model.py", model / "1" / "model.py")
    shutil.copyfile(here / "protocol.py", model / "1" / "protocol.py")
    classes = protocol.labels(bundle.weathers)
    (model / protocol.LABELS_FILE).write_text("\n".join(classes) + "\n")
    (model / "config.pbtxt").write_text(model_config(
        protocol.MODEL, "python", [frame_tensor(protocol.IMAGE, ragged=True)],
        [frame_tensor(protocol.RESTORED), weather_tensor(classes)], batching, instances,
        "KIND_CPU", parameters={"gpmask": json.dumps(settings)}))
