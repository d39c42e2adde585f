"""What a bundle's TensorRT engines and their activations take on a device, computed from
its graphs (docs/jetson.md quotes the figures for an 8 GB Orin).

Without a GPU the engines cannot be built, so this computes the two parts a device's
memory holds from the bundle's graphs, and says how each was computed:

- weights: every network of the bundle (its weathers and ``common``) is one engine with
  its own weights, parameters x bytes per weight (4 fp32, 2 fp16, 1 int8 plus its
  per-channel scales);
- activations: the peak of the tensors a sequential executor keeps alive at once,
  walking the graph in order (each tensor allocated by its producer, freed after its
  last reader), with the element types the graph gives them, at each frame size and
  batch 1. The TensorRT backend holds one scratch buffer for all engines (only one
  weather runs at a time), sized for the largest engine at the profile's largest shape,
  so this is counted once, not per weather. TensorRT plans its own memory (fusing
  layers, choosing tactics), so its scratch differs; `gpmask bench BUNDLE --backends
  tensorrt` on the device measures it (device memory column).

    python benchmarks/bench_engine_memory.py            # the paper's network and the demo
    python benchmarks/bench_engine_memory.py --checkpoint demo -o engine-memory.json
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from gpmask.bench.fixtures import prepared_bundle, random_checkpoint
from gpmask.bench.records import write_record
from gpmask.bundle import Bundle
from gpmask.calibration.options import CalibrationOptions
from gpmask.sizes import format_size, parse_size

MIB = 1 << 20
#: The default network: the paper's architecture with random weights (memory does not
#: depend on the values).
PAPER = "ggpm-unet"
_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.INT8: 1,
          onnx.TensorProto.UINT8: 1, onnx.TensorProto.INT64: 8, onnx.TensorProto.INT32: 4,
          onnx.TensorProto.BOOL: 1}


def parameters(model: onnx.ModelProto) -> int:
    """Elements in the graph's float initializers (the network's weights)."""
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))


def activation_peak(model: onnx.ModelProto, shape: tuple[int, ...]) -> int:
    """Bytes of the tensors alive at once at their peak, running ``model`` in graph order
    on an input of ``shape`` (weights not counted)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.graph.value_info[:]  # inferred again for the concrete shape
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = size
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    sizes = {}
    for info in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = info.type.tensor_type
        if tensor.shape.dim and all(d.HasField("dim_value") for d in tensor.shape.dim):
            sizes[info.name] = int(np.prod([d.dim_value for d in tensor.shape.dim])) * \
                _BYTES.get(tensor.elem_type, 4)
    weights = {t.name for t in inferred.graph.initializer}
    last_read = {}
    for index, node in enumerate(inferred.graph.node):
        for name in node.input:
            last_read[name] = index
    outputs = {o.name for o in inferred.graph.output}
    live = {i.name: sizes[i.name] for i in inferred.graph.input}
    peak = sum(live.values())
    for index, node in enumerate(inferred.graph.node):
        for name in node.output:
            live[name] = sizes.get(name, 0)
        peak = max(peak, sum(live.values()))
        for name in node.input:
            if name in live and name not in weights and name not in outputs \
                    and last_read.get(name) == index:
                del live[name]
    return peak


def measure(checkpoint, sizes: list[tuple[int, int]]) -> dict:
    """Parameters, engines, weights per precision (all engines) and activation peaks per
    size and precision of one network's bundle, printed as they are computed."""
    with tempfile.TemporaryDirectory() as folder:
        root, _ = prepared_bundle(Path(folder), checkpoint, ["fp16"], CalibrationOptions(
            max_psnr_drop=100, synthetic=2, calibration_size=(32, 32), eval_size=(32, 32)),
            layout="dense")
        bundle = Bundle.open(root)
        graphs = {p: onnx.load(str(bundle.graph_path("rain", p))) for p in ("fp32", "fp16")}
        count = parameters(graphs["fp32"])
        engines = len(bundle.networks)
        print(f"network: {count:,} parameters; {engines} engines ({', '.join(bundle.networks)})")
        weights = {}
        for name, per_weight in (("fp32", 4), ("fp16", 2), ("int8", 1)):
            weights[name] = engines * count * per_weight / MIB
            print(f"weights {name}: {count * per_weight / MIB:.1f} MiB per engine, "
                  f"{weights[name]:.1f} MiB for all {engines}")
        activations = {}
        for height, width in sizes:
            size = format_size((height, width))
            activations[size] = {}
            for precision, graph in graphs.items():
                peak = activation_peak(graph, (1, 3, height, width)) / MIB
                activations[size][precision] = peak
                print(f"activations {precision} at {size}, batch 1: {peak:.0f} MiB at their "
                      f"peak (one buffer for all engines)")
    return {"parameters": count, "engines": engines, "weights_mib": weights,
            "activations_mib": activations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append",
                        help="a checkpoint file or shipped name (repeat; default: the paper's "
                             "ggpm-unet with random weights, and the shipped demo)")
    parser.add_argument("--sizes", default="720x1280,1080x1920")
    parser.add_argument("-o", "--output", help="write the figures as a JSON record here")
    args = parser.parse_args()
    sizes = [parse_size(size) for size in args.sizes.split(",")]
    networks = {}
    for checkpoint in args.checkpoint or [PAPER, "demo"]:
        print(f"== {checkpoint}")
        source = random_checkpoint("ggpm-unet", density=0.1) if checkpoint == PAPER \
            else checkpoint
        networks[checkpoint] = measure(source, sizes)
    if args.output:
        write_record(args.output, "engine_memory", {"networks": networks})
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
