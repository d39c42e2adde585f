"""Check a written bundle's graphs: onnx.checker, then ONNX Runtime against PyTorch.

Each graph is compared with the PyTorch network built independently from the
checkpoint for that weather (``MaskedCheckpoint.build_model``, which bakes the
weights again and loads them through ``load_state_dict``), so a wrong swap of
initializers, a wrong offset into the shared weight file or an exporter bug all show
up as a numerical mismatch. Inputs: random values, and a photograph with synthetic
weather at two sizes (the sizes differ, so the dynamic axes are exercised; a static
graph is checked at its one shape).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import torch

from gpmask.data.clean import sample_images
from gpmask.data.synthetic import WEATHERS as SYNTHETIC_WEATHERS
from gpmask.data.synthetic import degrade
from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import MaskedCheckpoint

#: Largest allowed absolute difference between ONNX Runtime and PyTorch in fp32, for
#: outputs within [-1, 1]. An output of larger magnitude (an untrained network can reach
#: tens) is allowed TOLERANCE times its largest absolute value: float32 rounding grows
#: with the values, and 1e-4 relative is still 100x the rounding of a deep network.
TOLERANCE = 1e-4


def _round_up(value: int, multiple: int) -> int:
    return multiple * math.ceil(value / multiple)


def verification_inputs(
    photo: np.ndarray, weather: str, static_shape: tuple[int, int, int, int] | None,
    multiple: int,
) -> dict[str, np.ndarray]:
    """Named NCHW float32 inputs in [0, 1]: random values, and ``photo`` (HxWx3) with
    synthetic weather (``weather``'s own where :mod:`gpmask.data.synthetic` renders it,
    else rain) at two sizes."""
    if static_shape is None:
        shapes = {
            "random": (2, 3, _round_up(48, multiple), _round_up(80, multiple)),
            "photo-a": (1, 3, _round_up(48, multiple), _round_up(64, multiple)),
            "photo-b": (1, 3, _round_up(72, multiple), _round_up(56, multiple)),
        }
    else:
        shapes = {"random": static_shape, "photo": static_shape}
    rendered = weather if weather in SYNTHETIC_WEATHERS else SYNTHETIC_WEATHERS[0]
    rng = np.random.default_rng(0)
    inputs = {}
    for name, (batch, _, height, width) in shapes.items():
        if name == "random":
            inputs[name] = rng.random((batch, 3, height, width), dtype=np.float32)
            continue
        resized = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        degraded = degrade(resized, rendered, seed=0)
        nchw = np.ascontiguousarray(degraded.transpose(2, 0, 1)[None], dtype=np.float32)
        inputs[f"{rendered}-{name}"] = np.repeat(nchw, batch, axis=0)
    return inputs


def check_graph(path: Path) -> None:
    """onnx.checker's full check (with external data and shape inference) of one graph file."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise GpmaskError(f"{path.name} fails onnx.checker: {first}") from exc


def compare_with_torch(
    path: Path,
    checkpoint: MaskedCheckpoint,
    weather: str,
    inputs: dict[str, np.ndarray],
) -> list[dict]:
    """Max abs difference between ONNX Runtime on ``path`` and PyTorch, per input."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    model = checkpoint.build_model(weather)
    results = []
    with torch.inference_mode():
        for name, image in inputs.items():
            (onnx_out,) = session.run(None, {session.get_inputs()[0].name: image})
            torch_out = model(torch.from_numpy(image)).numpy()
            if onnx_out.shape != torch_out.shape:
                raise GpmaskError(
                    f"{path.name}: output shape {list(onnx_out.shape)} differs from "
                    f"PyTorch's {list(torch_out.shape)} on input {name}"
                )
            error = float(np.max(np.abs(onnx_out - torch_out)))
            allowed = TOLERANCE * max(1.0, float(np.max(np.abs(torch_out))))
            results.append({"input": name, "shape": list(image.shape), "max_abs_error": error,
                            "allowed": allowed, "passed": error <= allowed})
    return results


def verify_graphs(
    paths: dict[str, Path],
    checkpoint: MaskedCheckpoint,
    static_shape: tuple[int, int, int, int] | None,
    multiple: int,
    step: Callable[[str], None] = lambda weather: None,
) -> dict:
    """Check every graph (weather -> path); the report, or a GpmaskError on any failure.

    Each graph gets :func:`verification_inputs` for its weather at ``static_shape`` (or
    dynamic sizes, multiples of ``multiple``); ``step`` is called after each weather
    (progress reporting).
    """
    report = {"status": "passed", "tolerance": TOLERANCE, "checker": "onnx.checker full_check",
              "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
              "reference": f"torch {torch.__version__}, weights baked per weather", "graphs": {}}
    photo = sample_images("heldout")[0]
    for weather, path in paths.items():
        check_graph(path)
        inputs = verification_inputs(photo, weather, static_shape, multiple)
        results = compare_with_torch(path, checkpoint, weather, inputs)
        report["graphs"][weather] = {"path": path.name, "checker": "passed", "inputs": results}
        for result in results:
            if not result["passed"]:
                raise GpmaskError(
                    f"{path.name} does not match PyTorch for {weather!r}: max abs error "
                    f"{result['max_abs_error']:.3g} > {result['allowed']:.3g} on input "
                    f"{result['input']} {'x'.join(map(str, result['shape']))}"
                )
        step(weather)
    return report
