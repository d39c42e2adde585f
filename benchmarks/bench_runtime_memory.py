"""Resident memory of a CPU backend: every weather loaded vs one weather alone.

The runtime keeps every weather of a bundle ready so that switching costs nothing; this
measures what that readiness costs in memory, on 720p frames. Each configuration runs
in a fresh subprocess (so one cannot reuse another's pages or arena) which loads the
bundle, restores one frame with every weather it loaded, and reports its resident set
(VmRSS) and peak (VmHWM) from /proc/self/status, and the seconds from loading to the
first frames (cold start):

- ``one``: only the first weather's session (compiled model);
- ``all``: every weather (and ``common``) as the runtime loads them — ONNX Runtime:
  initializers shared through ``add_initializer``, one environment allocator;
  OpenVINO: one Core, one compiled model and infer request per weather, one output
  buffer;
- ``independent``: every weather as plain separate sessions (ONNX Runtime) or compiled
  by a Core of its own (OpenVINO), for comparison.

Usage::

    python benchmarks/bench_runtime_memory.py [--checkpoint demo] [--size 720x1280]
    python benchmarks/bench_runtime_memory.py --backend openvino

Without ``--bundle`` it exports the checkpoint (the shipped demo model, or a random
checkpoint of the same ``tiny`` architecture when the demo is not there) into a
temporary folder first.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from gpmask.bench.fixtures import prepared_bundle
from gpmask.sizes import parse_size

CONFIGS = ("one", "all", "independent")
BACKENDS = ("onnxruntime", "openvino")


def child(bundle_dir: str, config: str, height: int, width: int,
          backend: str = "onnxruntime") -> dict[str, object]:
    """Load ``config`` and restore one frame per loaded weather; report memory."""
    import time

    from gpmask.bench.memory import rss_mib
    from gpmask.bundle import Bundle
    from gpmask.runtime.frame_batch import pad_reflect

    bundle = Bundle.open(bundle_dir)
    frame = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    batch = pad_reflect(frame, bundle.size_multiple)
    before = rss_mib()
    start = time.perf_counter()
    load = _openvino if backend == "openvino" else _onnxruntime
    loaded, settings, held = load(bundle, config, batch)
    cold_start = time.perf_counter() - start
    after = rss_mib()
    del held  # the sessions or compiled models, alive until measured
    return {"config": config, "backend": backend, "weathers": loaded,
            "rss_mib": after["rss_mib"], "peak_mib": after["peak_rss_mib"],
            "rss_before_load_mib": before["rss_mib"], "cold_start_s": cold_start,
            "settings": settings}


def _openvino(bundle, config: str, batch: np.ndarray) -> tuple[list[str], dict, object]:
    import openvino as ov

    from gpmask.runtime.backends.openvino import CompileSettings, OpenVinoBackend

    settings = CompileSettings()
    if config == "independent":
        loaded = [*bundle.weathers, "common"]
        compiled = [ov.Core().compile_model(str(bundle.graph_path(weather)), "CPU",
                                            settings.config("fp32")) for weather in loaded]
        for model in compiled:
            model({0: batch})
        return loaded, settings.describe(), compiled
    only = [bundle.weathers[0]] if config == "one" else None
    backend = OpenVinoBackend(bundle, settings=settings, weathers=only)
    for weather in backend.weathers:
        backend.run(weather, batch)
    return backend.weathers, settings.describe(), backend


def _onnxruntime(bundle, config: str, batch: np.ndarray) -> tuple[list[str], dict, object]:
    import onnxruntime as ort

    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend, SessionSettings

    settings = SessionSettings()
    if config == "independent":
        sessions = {}
        for weather in (*bundle.weathers, "common"):
            options = SessionSettings(use_env_allocators=False).session_options()
            sessions[weather] = ort.InferenceSession(str(bundle.graph_path(weather)), options,
                                                     providers=["CPUExecutionProvider"])
        name = sessions["common"].get_inputs()[0].name
        for session in sessions.values():
            session.run(None, {name: batch})
        return list(sessions), settings.describe(), sessions
    only = [bundle.weathers[0]] if config == "one" else None
    backend = OnnxRuntimeBackend(bundle, settings=settings, weathers=only)
    for weather in backend.weathers:
        backend.run(weather, batch)
    return backend.weathers, settings.describe(), backend


def measure(bundle_dir: str, config: str, size: str, backend: str) -> dict[str, object]:
    """Run one configuration in its own Python process."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", config, "--bundle", bundle_dir, "--size", size,
         "--backend", backend],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export --checkpoint)")
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--size", default="720x1280", help="frame HEIGHTxWIDTH")
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                        help="CPU backend (default onnxruntime)")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = parse_size(args.size)
    if args.child:
        print(json.dumps(child(args.bundle, args.child, height, width, args.backend)))
        return
    with tempfile.TemporaryDirectory() as temp:
        bundle_dir = args.bundle or str(prepared_bundle(Path(temp), args.checkpoint)[0])
        results = {config: measure(bundle_dir, config, args.size, args.backend)
                   for config in CONFIGS}
    print(f"frame {height}x{width}, {args.backend} on the CPU, settings "
          f"{results['all']['settings']}")
    for config, result in results.items():
        print(f"{config:12s} weathers={','.join(result['weathers']):32s} "
              f"RSS {result['rss_mib']:8.1f} MiB  peak {result['peak_mib']:8.1f} MiB  "
              f"cold start {result['cold_start_s']:6.2f} s")
    for key in ("rss_mib", "peak_mib"):
        for config in ("all", "independent"):
            ratio = results[config][key] / results["one"][key]
            print(f"{key[:-4]} ratio {config}/one: {ratio:.2f}")


if __name__ == "__main__":
    main()
