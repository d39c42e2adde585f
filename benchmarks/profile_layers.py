"""Where the time goes, layer by layer, in ONNX Runtime and OpenVINO on one bundle graph.

ONNX Runtime's profiler (``SessionOptions.enable_profiling``) records every kernel it
runs with the node's (fused) name and op type; OpenVINO's (``PERF_COUNT``) records every
layer of the compiled graph with the kernel it chose (``exec_type``, e.g.
``brgconv_avx512_I8``, ``jit_avx2_FP32``). Both run the same frame ``--runs`` times;
the script prints each engine's total per op type and its slowest layers, with their
share of the run. Use it to see which layers keep an int8 graph from the instruction
limit (narrow convolutions, reorders between layouts, requantizing concatenations).

Usage::

    python benchmarks/profile_layers.py BUNDLE --precision int8-cpu --size 720x1280
    python benchmarks/profile_layers.py BUNDLE --precision int8 --engines openvino --top 25
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np

from gpmask.bundle import Bundle
from gpmask.runtime.backends.onnxruntime import SessionSettings
from gpmask.runtime.backends.openvino import CompileSettings, core, graph_precision
from gpmask.sizes import parse_size


def onnxruntime_layers(graph: Path, batch: np.ndarray, runs: int) -> list[tuple[str, str, float]]:
    """``(node name, op type, mean ms per run)`` for every kernel ONNX Runtime ran."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = SessionSettings(use_env_allocators=False).session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: batch})  # warm-up, counted out below
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"].removesuffix("_kernel_time"), event["args"]["op_name"])
            totals[key].append(event["dur"] / 1000)
    # Keep the last ``runs`` calls of each kernel: the first was the warm-up.
    return [(node, op, sum(times[-runs:]) / runs) for (node, op), times in totals.items()]


def openvino_layers(graph: Path, batch: np.ndarray, runs: int,
                    precision: str) -> list[tuple[str, str, float]]:
    """``(layer name, layer type / kernel, mean ms per run)`` for every executed layer."""
    config = {**CompileSettings().config(precision), "PERF_COUNT": "YES"}
    request = core().compile_model(core().read_model(str(graph)), "CPU", config)\
        .create_infer_request()
    request.infer({0: batch})
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for _ in range(runs):
        request.infer({0: batch})
        for info in request.get_profiling_info():
            if info.real_time.total_seconds() > 0:
                key = (info.node_name, f"{info.node_type} {info.exec_type}")
                totals[key] += info.real_time.total_seconds() * 1000
    return [(node, kind, total / runs) for (node, kind), total in totals.items()]


def print_layers(engine: str, layers: list[tuple[str, str, float]], top: int) -> None:
    total = sum(ms for _, _, ms in layers)
    print(f"\n{engine}: {total:.1f} ms per run in {len(layers)} kernels")
    by_kind: dict[str, float] = collections.defaultdict(float)
    for _, kind, ms in layers:
        by_kind[kind] += ms
    for kind, ms in sorted(by_kind.items(), key=lambda item: -item[1]):
        print(f"  {kind:48s} {ms:8.2f} ms {ms / total:6.1%}")
    print(f"  slowest {top}:")
    for node, kind, ms in sorted(layers, key=lambda item: -item[2])[:top]:
        print(f"    {node[:56]:56s} {kind[:40]:40s} {ms:7.2f} ms {ms / total:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder")
    parser.add_argument("--precision", default="int8-cpu",
                        help="graph precision (bf16: the fp32 graph on OpenVINO)")
    parser.add_argument("--weather", help="weather (default: the bundle's first)")
    parser.add_argument("--size", default="720x1280", help="HEIGHTxWIDTH (default 720x1280)")
    parser.add_argument("--runs", type=int, default=5, help="profiled runs (default 5)")
    parser.add_argument("--top", type=int, default=15, help="slowest layers shown (default 15)")
    parser.add_argument("--engines", default="onnxruntime,openvino", help="engines to profile")
    args = parser.parse_args()
    bundle = Bundle.open(args.bundle)
    weather = args.weather or bundle.weathers[0]
    graph = bundle.graph_path(weather, graph_precision(args.precision))
    height, width = parse_size(args.size)
    batch = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    print(f"{graph.name} at {args.size}, mean of {args.runs} runs")
    engines = args.engines.split(",")
    if "onnxruntime" in engines and args.precision != "bf16":
        print_layers("onnxruntime", onnxruntime_layers(graph, batch, args.runs), args.top)
    if "openvino" in engines:
        print_layers("openvino", openvino_layers(graph, batch, args.runs, args.precision),
                     args.top)


if __name__ == "__main__":
    main()
