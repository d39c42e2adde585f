"""Resident memory of the ONNX Runtime backend: every weather loaded vs one weather alone.

The runtime keeps every weather of a bundle ready so that switching costs nothing; this
measures what that readiness costs in memory, on 720p frames. Each configuration runs
in a fresh subprocess (so one cannot reuse another's pages or arena) which loads the
bundle, restores one frame with every weather it loaded, and reports its resident set
(VmRSS) and peak (VmHWM) from /proc/self/status:

- ``one``: only the first weather's session;
- ``all``: every weather (and ``common``) as the runtime loads them — initializers
  shared through ``add_initializer``, one environment allocator;
- ``independent``: every weather as plain separate sessions, for comparison.

Usage::

    python benchmarks/bench_runtime_memory.py [--checkpoint demo] [--size 720x1280]

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

CONFIGS = ("one", "all", "independent")


def child(bundle_dir: str, config: str, height: int, width: int) -> dict[str, object]:
    """Load ``config`` and restore one frame per loaded weather; report memory."""
    import onnxruntime as ort

    from gpmask.bench.memory import rss_mib
    from gpmask.bundle import Bundle
    from gpmask.runtime.backends.onnxruntime import OnnxRuntimeBackend, SessionSettings
    from gpmask.runtime.frames import pad_reflect

    bundle = Bundle.open(bundle_dir)
    settings = SessionSettings()
    frame = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    batch = pad_reflect(frame, bundle.size_multiple)
    before = rss_mib()
    if config == "independent":
        sessions = {}
        for weather in (*bundle.weathers, "common"):
            options = SessionSettings(use_env_allocators=False).session_options()
            sessions[weather] = ort.InferenceSession(str(bundle.graph_path(weather)), options,
                                                     providers=["CPUExecutionProvider"])
        name = sessions["common"].get_inputs()[0].name
        for session in sessions.values():
            session.run(None, {name: batch})
        loaded = list(sessions)
    else:
        only = [bundle.weathers[0]] if config == "one" else None
        backend = OnnxRuntimeBackend(bundle, settings=settings, weathers=only)
        for weather in backend.weathers:
            backend.run(weather, batch)
        loaded = backend.weathers
    after = rss_mib()
    return {"config": config, "weathers": loaded, "rss_mib": after["rss_mib"],
            "peak_mib": after["peak_rss_mib"], "rss_before_load_mib": before["rss_mib"],
            "settings": settings.describe()}


def measure(bundle_dir: str, config: str, size: str) -> dict[str, object]:
    """Run one configuration in its own Python process."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", config, "--bundle", bundle_dir, "--size", size],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def export_demo_bundle(checkpoint: str, folder: Path) -> Path:
    """Export ``checkpoint`` (or a random ``tiny`` checkpoint if it is missing)."""
    from gpmask.export.exporter import export_bundle
    from gpmask.masking.checkpoint import MaskedCheckpoint, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    if path.is_file():
        source = MaskedCheckpoint.load(path)
    else:
        print(f"{checkpoint} not found: using a random checkpoint of the tiny architecture",
              file=sys.stderr)
        source = random_checkpoint()
    return export_bundle(source, folder / "bundle", verify=False).root


def random_checkpoint(arch: str = "tiny", arch_kwargs: dict | None = None,
                      weathers: tuple[str, ...] = ("rain", "raindrop", "snow")) -> object:
    """A masked checkpoint of ``arch`` (default the ``tiny`` network) with random values."""
    from gpmask.masking.checkpoint import MaskedCheckpoint
    from gpmask.model import build_model

    model = build_model(arch, arch_kwargs)
    common = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    rng = np.random.default_rng(0)
    masks = {w: {n: rng.random(v.shape) < 0.4 for n, v in common.items()} for w in weathers}
    weights = {w: {n: v + rng.normal(0, 0.05, v.shape).astype(v.dtype)
                   for n, v in common.items()} for w in weathers}
    return MaskedCheckpoint.from_weights(arch, arch_kwargs or {}, common, weights, masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="bundle folder (default: export --checkpoint)")
    parser.add_argument("--checkpoint", default="demo")
    parser.add_argument("--size", default="720x1280", help="frame HEIGHTxWIDTH")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(child(args.bundle, args.child, height, width)))
        return
    with tempfile.TemporaryDirectory() as temp:
        bundle_dir = args.bundle or str(export_demo_bundle(args.checkpoint, Path(temp)))
        results = {config: measure(bundle_dir, config, args.size) for config in CONFIGS}
    print(f"frame {height}x{width}, ONNX Runtime CPU, settings {results['all']['settings']}")
    for config, result in results.items():
        print(f"{config:12s} weathers={','.join(result['weathers']):32s} "
              f"RSS {result['rss_mib']:8.1f} MiB  peak {result['peak_mib']:8.1f} MiB")
    for key in ("rss_mib", "peak_mib"):
        for config in ("all", "independent"):
            ratio = results[config][key] / results["one"][key]
            print(f"{key[:-4]} ratio {config}/one: {ratio:.2f}")


if __name__ == "__main__":
    main()
