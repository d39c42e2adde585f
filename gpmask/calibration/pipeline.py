"""``gpmask calibrate``'s Python API: add fp16 or int8 graphs to a bundle, measured.

For every weather and ``common``: make the reduced-precision graph from the fp32 one
by the precision's recipe (:attr:`gpmask.precision.Precision.recipe`), judge it on
held-out frames of that weather against fp32 and ground truth, and (int8) keep
sensitive layers in fp32 until the PSNR drop fits the budget. The graphs of one
precision share a weight file; the manifest records them with their hashes and their
measured quality (which ``--precision auto`` reads); the report says what each one costs.

Calibration works on dense graphs: a compact bundle's fp32 graphs are folded first
(:func:`gpmask.graph.fold.fold_rebuild`; ONNX Runtime's quantizer wants weight
initializers), and :func:`gpmask.bundle.graph_set.save_precision_graphs` compacts the
results again where that precision is stored compact.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tqdm import tqdm

from gpmask.bundle import MANIFEST, Bundle, GraphQuality
from gpmask.bundle.graph_set import save_precision_graphs
from gpmask.calibration.budget import BudgetResult, fit_budget
from gpmask.calibration.frame_sets import (
    Frames,
    check_data_folders,
    folder_calibration_frames,
    heldout_frames,
    synthetic_calibration_frames,
)
from gpmask.calibration.int8 import CACHE_FOLDER, Calibration
from gpmask.calibration.options import CalibrationOptions
from gpmask.calibration.quality import Scores, run_frames, score
from gpmask.calibration.quality_report import update_report
from gpmask.errors import GpmaskError
from gpmask.fileio import check_file_output
from gpmask.graph.fold import dense_graph_file, load_dense
from gpmask.graph.fp16 import FP32_OPS, convert_graph
from gpmask.graph.rewrites import apply_rewrites
from gpmask.graph.session import cpu_session
from gpmask.precision import CALIBRATED, Precision, precision
from gpmask.sizes import format_size


@dataclass
class CalibrationResult:
    """One network's graph at one precision and what it scored on held-out frames.

    Attributes:
        weather: the network (a weather or ``common``).
        precision: the precision made.
        scores: against fp32 and ground truth on the held-out frames.
        max_psnr_drop: the budget it was judged against.
        heldout: where the held-out frames came from.
        settings: what made the graph (recipe settings), for the report.
        budget: int8 only: how the budget loop settled (layers kept in fp32, steps).
        calibration: int8 only: the calibration run (frames, cache).
    """

    weather: str
    precision: str
    scores: Scores
    max_psnr_drop: float
    heldout: str
    settings: dict[str, Any]
    budget: BudgetResult | None = None
    calibration: Calibration | None = field(default=None, repr=False)

    @property
    def fits(self) -> bool:
        """Whether the PSNR drop against ground truth is within the budget."""
        if self.budget is not None:
            return self.budget.fits
        return self.scores.drop is not None and self.scores.drop <= self.max_psnr_drop

    @property
    def calibrated_now(self) -> bool:
        """int8: whether the ranges were computed now (False: read from the cache)."""
        return self.calibration is not None and self.calibration.reader.fed > 0

    @property
    def quality(self) -> GraphQuality:
        """What the manifest records for the graph."""
        return GraphQuality(self.scores.psnr_vs_fp32, float(self.scores.drop or 0.0),
                            self.max_psnr_drop, self.fits)

    def report_entry(self) -> dict[str, Any]:
        """The entry of ``reports/calibration.json`` for this graph."""
        entry: dict[str, Any] = {"scores": self.scores.to_dict(), "heldout": self.heldout,
                                 "settings": self.settings}
        if self.budget is not None and self.calibration is not None:
            budget, calibration = self.budget, self.calibration
            entry.update({
                "all_layers_quantized": budget.first_scores.to_dict(),
                "max_psnr_drop": self.max_psnr_drop,
                "fits": budget.fits,
                "excluded_layers": budget.excluded,
                "quantizable_layers": budget.candidates,
                "budget_steps": [{"layers_in_fp32": k, "drop": d} for k, d in budget.steps],
                "calibration_frames": len(calibration.frames),
                "calibration_source": calibration.frames.source,
                "calibration_cache": Path(calibration.cache_path).name,
                "calibrated_now": self.calibrated_now,
            })
        return entry


def calibrate_bundle(
    root: str | os.PathLike, precision_name: str, options: CalibrationOptions | None = None
) -> dict[str, CalibrationResult]:
    """Add ``precision_name``'s graphs (a precision with an ``fp16`` or ``int8`` recipe) to
    the bundle at ``root``; returns each network's result (also written to ``reports/``)."""
    options = options or CalibrationOptions()
    options.check(precision_name)
    definition = precision(precision_name)
    if not definition.calibrated:
        raise GpmaskError(f"precision {precision_name!r} is not made by calibration; use one of "
                          f"{', '.join(CALIBRATED)}")
    bundle = Bundle.open(root)  # checks every graph and weight file against its sha256
    check_file_output(bundle.root / MANIFEST)  # a bundle it cannot write: before any work
    if options.data_dir is not None:
        check_data_folders(options.data_dir, bundle.weathers)
    recipe = RECIPES[definition.recipe]
    models, results = {}, {}
    for weather in tqdm(bundle.networks, desc=definition.name, unit="graph",
                        disable=not options.progress):
        frames = heldout_frames(weather, bundle.weathers, options.eval_size)
        fp32_outputs = run_frames(cpu_session(bundle.graph_path(weather)), frames)
        models[weather], results[weather] = recipe(bundle, weather, definition, options,
                                                   frames, fp32_outputs)
    save_precision_graphs(bundle, definition.name, models,
                          {w: r.quality for w, r in results.items()})
    update_report(bundle, definition.name, {w: r.report_entry() for w, r in results.items()})
    return results


def _fp16(bundle: Bundle, weather: str, definition: Precision, options: CalibrationOptions,
          frames: Frames, fp32_outputs: list[np.ndarray]
          ) -> tuple[onnx.ModelProto, CalibrationResult]:
    model = convert_graph(load_dense(bundle.graph_path(weather)), options.fp16_io)
    outputs = run_frames(cpu_session(model), frames)
    return model, CalibrationResult(
        weather, definition.name, score(outputs, fp32_outputs, frames), options.max_psnr_drop,
        frames.source, {"fp16_io": options.fp16_io, "fp32_ops": list(FP32_OPS)})


def _calibration_frames(bundle: Bundle, weather: str, options: CalibrationOptions) -> Frames:
    if options.data_dir is not None:
        return folder_calibration_frames(
            weather, bundle.weathers, options.data_dir, options.calibration_size
        )
    return synthetic_calibration_frames(
        weather, bundle.weathers, options.synthetic, options.calibration_size, options.seed
    )


def _int8(bundle: Bundle, weather: str, definition: Precision, options: CalibrationOptions,
          frames: Frames, fp32_outputs: list[np.ndarray]
          ) -> tuple[onnx.ModelProto, CalibrationResult]:
    scheme = definition.int8
    digest = bundle.graph_digest(weather)
    if scheme.rewrites:  # the ranges of a rewritten graph are its own
        digest = hashlib.sha256(f"{digest} {' '.join(scheme.rewrites)}".encode()).hexdigest()
    with dense_graph_file(bundle.graph_path(weather),
                          lambda model: apply_rewrites(model, scheme.rewrites)) as graph:
        calibration = Calibration(
            graph=graph,
            graph_digest=digest,
            frames=_calibration_frames(bundle, weather, options),
            method=options.method,
            cache_folder=bundle.root / CACHE_FOLDER,
        )
        budget = fit_budget(calibration, definition, frames, fp32_outputs,
                            options.max_psnr_drop, options.progress)
    if not budget.fits:
        warnings.warn(
            f"{weather} {definition.name}: PSNR drop {budget.scores.drop:.3f} dB exceeds the "
            f"budget of {options.max_psnr_drop} dB even with layers kept in fp32; "
            f"kept the best graph found ({len(budget.excluded)} layers in fp32)",
            stacklevel=3,
        )
    settings = {**calibration.settings(), "scheme": asdict(scheme),
                "calibration_size": format_size(options.calibration_size),
                "eval_size": format_size(options.eval_size)}
    return onnx.load_from_string(budget.graph), CalibrationResult(
        weather, definition.name, budget.scores, options.max_psnr_drop, frames.source,
        settings, budget, calibration)


#: Recipe (:attr:`gpmask.precision.Precision.recipe`) -> how one network's graph is made.
RECIPES = {"fp16": _fp16, "int8": _int8}
