"""``gpmask calibrate``'s Python API: add fp16 or int8 graphs to a bundle, measured.

For every weather and ``common``: make the reduced-precision graph from the fp32 one,
judge it on held-out frames of that weather against fp32 and ground truth, and (int8)
keep sensitive layers in fp32 until the PSNR drop fits the budget. The graphs of one
precision share a weight file; the manifest records them with their hashes; the
report says what each one costs.

Calibration works on dense graphs: a compact bundle's fp32 graphs are folded first
(:func:`gpmask.export.compact.fold_rebuild`; ONNX Runtime's quantizer wants weight
initializers), and :func:`gpmask.calibration.graph_set.save_precision_graphs` compacts
the results again where that precision is stored compact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import onnx
from tqdm import tqdm

from gpmask.bundle import COMMON, Bundle
from gpmask.calibration.budget import fit_budget
from gpmask.calibration.fp16 import FP32_OPS, convert_graph
from gpmask.calibration.frames import (
    Frames,
    folder_calibration_frames,
    heldout_frames,
    synthetic_calibration_frames,
)
from gpmask.calibration.graph_set import save_precision_graphs
from gpmask.calibration.int8 import CACHE_FOLDER, SCHEMES, Calibration, Int8Scheme
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.quality import cpu_session, run_frames, score
from gpmask.calibration.report import update_report
from gpmask.calibration.rewrites import apply_rewrites
from gpmask.errors import GpmaskError
from gpmask.export.compact import fold_rebuild
from gpmask.sizes import format_size

#: The precisions calibration makes (each one of gpmask.bundle.PRECISIONS).
PRECISIONS = ("fp16", *SCHEMES)


def calibrate_bundle(
    root: str | os.PathLike, precision: str, options: CalibrationOptions | None = None
) -> dict[str, dict[str, Any]]:
    """Add ``precision``'s graphs (``fp16`` or an int8 scheme) to the bundle at ``root``.

    Returns the report entries, weather -> entry (also written to ``reports/``).
    """
    options = options or CalibrationOptions()
    options.check()
    if precision not in PRECISIONS:
        raise GpmaskError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    bundle = Bundle.open(root)  # checks every graph and weight file against its sha256
    weathers = [*bundle.weathers, COMMON]
    if precision == "fp16":
        entries, models = _fp16(bundle, weathers, options)
    else:
        entries, models = _int8(bundle, weathers, precision, options)
    save_precision_graphs(bundle, precision, models)
    update_report(bundle, precision, entries)
    return entries


def _reference(bundle: Bundle, weather: str, options: CalibrationOptions):
    """Held-out frames of ``weather`` and the fp32 graph's outputs on them."""
    frames = heldout_frames(weather, bundle.weathers, options.eval_size)
    return frames, run_frames(cpu_session(bundle.graph_path(weather)), frames)


def _fp16(bundle: Bundle, weathers: list[str], options: CalibrationOptions):
    entries, models = {}, {}
    settings = {"fp16_io": options.fp16_io, "fp32_ops": list(FP32_OPS)}
    for weather in tqdm(weathers, desc="fp16", unit="graph", disable=not options.progress):
        models[weather] = convert_graph(dense_graph(bundle, weather), options.fp16_io)
        frames, fp32_outputs = _reference(bundle, weather, options)
        outputs = run_frames(cpu_session(models[weather].SerializeToString()), frames)
        entries[weather] = {
            "scores": score(outputs, fp32_outputs, frames).to_dict(),
            "heldout": frames.source,
            "settings": settings,
        }
    return entries, models


def dense_graph(bundle: Bundle, weather: str) -> onnx.ModelProto:
    """``weather``'s fp32 graph with its weights as plain initializers, in memory (a compact
    graph's rebuild folded)."""
    return fold_rebuild(onnx.load(bundle.graph_path(weather)))


def _calibration_frames(bundle: Bundle, weather: str, options: CalibrationOptions) -> Frames:
    if options.data_dir is not None:
        return folder_calibration_frames(
            weather, bundle.weathers, options.data_dir, options.calibration_size
        )
    return synthetic_calibration_frames(
        weather, bundle.weathers, options.synthetic, options.calibration_size, options.seed
    )


def _graph_digest(bundle: Bundle, weather: str) -> str:
    """Stands for the fp32 graph's content: its own hash and those of the files it reads."""
    graph = onnx.load(bundle.graph_path(weather), load_external_data=False)
    locations = {
        entry.value for tensor in graph.graph.initializer for entry in tensor.external_data
        if entry.key == "location"
    }
    hashes = [bundle.manifest["graphs"][weather]["fp32"]["sha256"]]
    hashes += sorted(w["sha256"] for w in bundle.manifest["weights"] if w["path"] in locations)
    return hashlib.sha256(" ".join(hashes).encode()).hexdigest()


@contextlib.contextmanager
def _graph_to_quantize(
    bundle: Bundle, weather: str, scheme: Int8Scheme
) -> Iterator[tuple[Path, str]]:
    """The fp32 graph ``scheme`` quantizes, with its weights as initializers (a compact
    graph folded), rewritten when any of the scheme's rewrites applies (in a temporary
    folder when either changed it), and the digest standing for its content."""
    path, digest = bundle.graph_path(weather), _graph_digest(bundle, weather)
    with tempfile.TemporaryDirectory(prefix="gpmask-rewrite-") as folder:
        model = dense_graph(bundle, weather)
        changed = bundle.manifest["graphs"][weather]["fp32"].get("layout") == "compact"
        if scheme.rewrites:
            model, rewritten = apply_rewrites(model, scheme.rewrites)
            if rewritten:
                changed = True
                digest = hashlib.sha256(
                    f"{digest} {' '.join(scheme.rewrites)}".encode()).hexdigest()
        if changed:
            path = Path(folder) / path.name
            onnx.save(model, path, save_as_external_data=True, location=f"{path.name}.data")
        yield path, digest


def _int8(bundle: Bundle, weathers: list[str], precision: str, options: CalibrationOptions):
    scheme = SCHEMES[precision]
    entries, models = {}, {}
    for weather in tqdm(weathers, desc=precision, unit="graph", disable=not options.progress):
        frames, fp32_outputs = _reference(bundle, weather, options)
        with _graph_to_quantize(bundle, weather, scheme) as (graph, digest):
            calibration = Calibration(
                graph=graph,
                graph_digest=digest,
                frames=_calibration_frames(bundle, weather, options),
                method=options.method,
                cache_folder=bundle.root / CACHE_FOLDER,
            )
            result = fit_budget(calibration, scheme, frames, fp32_outputs,
                                options.max_psnr_drop, options.progress)
        if not result.fits:
            warnings.warn(
                f"{weather} {precision}: PSNR drop {result.scores.drop:.3f} dB exceeds the "
                f"budget of {options.max_psnr_drop} dB even with layers kept in fp32; "
                f"kept the best graph found ({len(result.excluded)} layers in fp32)",
                stacklevel=2,
            )
        models[weather] = onnx.load_from_string(result.graph)
        entries[weather] = {
            "scores": result.scores.to_dict(),
            "all_layers_quantized": result.first_scores.to_dict(),
            "max_psnr_drop": options.max_psnr_drop,
            "fits": result.fits,
            "excluded_layers": result.excluded,
            "quantizable_layers": result.candidates,
            "budget_steps": [{"layers_in_fp32": k, "drop": d} for k, d in result.steps],
            "calibration_frames": len(calibration.frames),
            "calibration_source": calibration.frames.source,
            "calibration_cache": Path(calibration.cache_path).name,
            "calibrated_now": calibration.reader.fed > 0,
            "heldout": frames.source,
            "settings": {**calibration.settings(), "scheme": asdict(scheme),
                         "calibration_size": format_size(options.calibration_size),
                         "eval_size": format_size(options.eval_size)},
        }
    return entries, models
