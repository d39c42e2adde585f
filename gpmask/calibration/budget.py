"""The quality budget: keep the most quantization-sensitive layers in fp32 until the drop fits.

Restoration networks lose visible quality in INT8 (dark or blotchy outputs), and which
layers cause it is a measurement, not a guess. So:

1. quantize every layer and measure the PSNR drop on held-out frames;
2. if it exceeds the budget, measure each layer's *sensitivity*: the PSNR, against the
   fp32 output, of a graph where that layer alone is quantized (lower = worse);
3. keep the k worst layers in fp32 for k = 1, 2, 4, ... until the drop fits, then
   bisect down to the smallest k that fits, so no more layers than needed stay fp32.

If even every layer in fp32 does not fit (a negative budget, or noise), the graph with
the smallest drop found is kept and the result says it does not fit.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpmask.calibration.frame_sets import Frames
from gpmask.calibration.int8 import Calibration, quantizable_nodes, quantize
from gpmask.calibration.quality import Scores, run_frames, score
from gpmask.errors import GpmaskError
from gpmask.graph.session import cpu_session
from gpmask.precision import Precision


@dataclass
class BudgetResult:
    """The graph the budget loop settled on and how it got there.

    Attributes:
        graph: serialized quantized graph (weights embedded).
        excluded: node names kept in fp32, most sensitive first.
        scores: quality of ``graph`` on the held-out frames.
        first_scores: quality with every layer quantized.
        fits: whether ``scores.drop`` is within the budget.
        steps: ``(layers kept in fp32, drop)`` for every graph tried.
        candidates: how many layers could be quantized.
    """

    graph: bytes
    excluded: list[str]
    scores: Scores
    first_scores: Scores
    fits: bool
    steps: list[tuple[int, float]] = field(default_factory=list)
    candidates: int = 0


class _Trial:
    """Quantizes with a given exclusion list and scores the result on the held-out frames."""

    def __init__(
        self, calibration: Calibration, precision: Precision, frames: Frames,
        fp32_outputs: list[np.ndarray], folder: Path,
    ) -> None:
        self.calibration, self.precision = calibration, precision
        self.frames, self.fp32_outputs = frames, fp32_outputs
        self.path = folder / "trial.onnx"

    def run(self, excluded: list[str]) -> tuple[bytes, Scores]:
        quantize(self.calibration, self.precision.int8, self.path, excluded)
        graph = self.path.read_bytes()
        outputs = run_frames(cpu_session(graph), self.frames)
        return graph, score(outputs, self.fp32_outputs, self.frames)


def layer_sensitivity(trial: _Trial, candidates: list[str],
                      progress: bool = True) -> list[tuple[str, float]]:
    """``(node, PSNR vs fp32 with only that node quantized)``, most sensitive first."""
    ranking = []
    for node in tqdm(candidates, desc=f"{trial.precision.name} sensitivity", unit="layer",
                     leave=False, disable=not progress):
        _, scores = trial.run([other for other in candidates if other != node])
        ranking.append((node, scores.psnr_vs_fp32))
    return sorted(ranking, key=lambda item: item[1])


def fit_budget(
    calibration: Calibration,
    precision: Precision,
    frames: Frames,
    fp32_outputs: list[np.ndarray],
    max_drop: float,
    progress: bool = True,
) -> BudgetResult:
    """Quantize ``calibration.graph`` to the int8 ``precision`` with as few fp32 layers
    as the budget allows.

    ``frames`` must be held-out frames with their clean images (the drop is measured
    against ground truth); ``fp32_outputs`` are the fp32 graph's outputs on them.
    """
    if frames.clean is None:
        raise GpmaskError("the quality budget needs held-out frames with clean images")
    candidates = quantizable_nodes(calibration.graph)
    with tempfile.TemporaryDirectory(prefix="gpmask-int8-") as folder:
        trial = _Trial(calibration, precision, frames, fp32_outputs, Path(folder))
        graph, first = trial.run([])
        tried = {0: (graph, first)}
        if first.drop > max_drop and candidates:
            ranking = [node for node, _ in layer_sensitivity(trial, candidates, progress)]

            def attempt(count: int) -> float:
                if count not in tried:
                    tried[count] = trial.run(ranking[:count])
                return tried[count][1].drop

            count = 1
            while attempt(count) > max_drop and count < len(ranking):
                count = min(2 * count, len(ranking))
            low, high = count // 2, count
            while high - low > 1 and attempt(high) <= max_drop:
                middle = (low + high) // 2
                if attempt(middle) <= max_drop:
                    high = middle
                else:
                    low = middle
        else:
            ranking = []
    fitting = [k for k, (_, s) in tried.items() if s.drop <= max_drop]
    chosen = min(fitting) if fitting else min(tried, key=lambda k: tried[k][1].drop)
    graph, scores = tried[chosen]
    return BudgetResult(
        graph=graph, excluded=ranking[:chosen], scores=scores, first_scores=first,
        fits=bool(fitting), steps=sorted((k, s.drop) for k, (_, s) in tried.items()),
        candidates=len(candidates),
    )
