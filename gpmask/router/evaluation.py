"""How well a router routes, in both synthetic styles: accuracy per class and the confusion
matrix on held-out frames, and on synthetic clips whose weather changes, the frames it
takes to follow each change, flicker between weathers and frames sent to a wrong network.

Held-out frames are crops of the held-out sample images (never used to train the
router) under synthetic weather, scored on the router's own decision (the most probable
class). The clips pan across the same images in stretches of one weather, ordered so
that every class follows every other once (:data:`CHANGE_SEQUENCE`), and are routed as
``gpmask run --weather auto`` routes a video: the confidence rule and the hysteresis of a
:class:`~gpmask.runtime.routing.RoutingPolicy` decide each frame's weather.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpmask.bundle import CLEAR
from gpmask.bundle.manifest import RouterRecord
from gpmask.fileio import atomic_path
from gpmask.metrics import (
    class_accuracy,
    confusion_matrix,
    format_confusion,
    switch_lags,
    weather_flicker,
)
from gpmask.router.frames import FrameSet, Rendering, render_frames
from gpmask.runtime.router_frames import UNSURE
from gpmask.runtime.routing import ClassifierRouter, RoutingPolicy

#: Held-out frames are square crops of these sides (pixels) at these severities.
EVAL_SIDE = (128, 320)
EVAL_SEVERITY = (0.6, 1.3)
#: Stretches of the evaluation clips: every ordered pair of classes appears once as a
#: change of weather (an Eulerian circuit of the four classes).
CHANGE_SEQUENCE = (CLEAR, "rain", "raindrop", "snow", CLEAR, "raindrop", "rain", "snow",
                   "raindrop", CLEAR, "snow", "rain", CLEAR)
#: The most frames a change of weather may take to be followed.
MAX_LAG = 3


@dataclass
class FrameAccuracy:
    """The router's decisions on held-out frames against their true class."""

    classes: list[str]
    frames: int
    accuracy: float
    per_class: dict[str, float | None]
    confusion: list[list[int]]

    @classmethod
    def of(cls, true: Sequence[str], predicted: Sequence[str], classes: Sequence[str]
           ) -> FrameAccuracy:
        matrix = confusion_matrix(true, predicted, classes)
        return cls(list(classes), len(true), float(np.trace(matrix) / max(1, matrix.sum())),
                   class_accuracy(matrix, classes), matrix.tolist())

    def format(self) -> str:
        per_class = ", ".join(f"{c} {a:.1%}" for c, a in self.per_class.items()
                              if a is not None)
        return (f"{self.accuracy:.1%} of {self.frames} frames ({per_class})\n"
                + format_confusion(np.array(self.confusion), self.classes))


@dataclass
class ClipRouting:
    """The weather chosen on clips whose weather changes, against the true weather.

    ``lags``: frames until each change was followed; ``flicker``: changes from one weather
    straight to another inside a stretch of one weather; ``misrouted``: frames given
    another weather's network; ``passed``: frames of a weather passed through.
    """

    frames: int
    accuracy: float
    lags: list[dict]
    flicker: int
    misrouted: int
    passed: int

    @property
    def max_lag(self) -> int:
        return max((lag["frames"] for lag in self.lags), default=0)

    def format(self) -> str:
        late = [lag for lag in self.lags if lag["frames"] > MAX_LAG]
        lags = ", ".join(f"{lag['from']}>{lag['to']} {lag['frames']}" for lag in self.lags)
        return (f"{self.accuracy:.1%} of {self.frames} clip frames routed to their weather; "
                f"{self.misrouted} sent to another weather's network, {self.passed} weather "
                f"frames passed through; flicker between weathers {self.flicker}\n"
                f"frames to follow each change (max {self.max_lag}, {len(late)} of "
                f"{len(self.lags)} over {MAX_LAG}): {lags}")


def route_clip(router: ClassifierRouter, probabilities: Sequence[np.ndarray],
               true: Sequence[str]) -> ClipRouting:
    """Route a clip's frames (their class probabilities, in order) with ``router``'s policy
    from a fresh start, and score the weathers chosen against ``true``."""
    fresh = ClassifierRouter(router.session, router.classes, router.tile, router.grid,
                             router.policy)
    chosen = [fresh.step(p) for p in probabilities]
    wrong = [c != t for c, t in zip(chosen, true, strict=True)]
    return ClipRouting(
        frames=len(true),
        accuracy=float(1 - np.mean(wrong)),
        lags=switch_lags(true, chosen),
        flicker=weather_flicker(true, chosen, CLEAR),
        misrouted=sum(w and c != CLEAR for w, c in zip(wrong, chosen, strict=True)),
        passed=sum(c == CLEAR and t != CLEAR for c, t in zip(chosen, true, strict=True)),
    )


@dataclass
class StyleRouting:
    """Routing in one synthetic style: the router's own decisions on held-out frames
    (``frames``), the weather each of those frames gets from its decision alone
    (``routed``: a decision under the policy's ``min_confidence`` passes the frame through,
    counted as ``clear``), and a clip routed with the policy's hysteresis."""

    style: str
    frames: FrameAccuracy
    routed: FrameAccuracy
    clip: ClipRouting

    def format(self) -> str:
        return (f"held-out frames, the router's decision: {self.frames.format()}\n"
                f"held-out frames, the weather each gets (unsure: passed through, as clear): "
                f"{self.routed.format()}\nclip: {self.clip.format()}")


def heldout_frames(classes: Sequence[str], per_image: int, style: str, seed: int) -> FrameSet:
    """``per_image`` frames of every class on every held-out sample image, in ``style``."""
    from gpmask.data.clean import sample_images

    return render_frames(sample_images("heldout"), classes, per_image,
                         Rendering(EVAL_SIDE, EVAL_SEVERITY, style=style), seed)


def change_sequence(classes: Sequence[str]) -> list[str]:
    """:data:`CHANGE_SEQUENCE` restricted to ``classes`` (a class repeated by the removal of
    those between is kept once)."""
    kept = [c for c in CHANGE_SEQUENCE if c in classes]
    return [c for i, c in enumerate(kept) if i == 0 or c != kept[i - 1]]


def predict(router: ClassifierRouter, frames: Sequence[np.ndarray]) -> list[str]:
    """The router's own decision (its most probable class) for each frame."""
    return [router.classes[int(np.argmax(router.probabilities(f)))] for f in frames]


def routed_alone(router: ClassifierRouter, frames: Sequence[np.ndarray]) -> list[str]:
    """The weather each frame gets from its own decision: its class when the router is
    sure, :data:`CLEAR` (passed through) when it is not."""
    return [CLEAR if decision == UNSURE else decision
            for decision in (router.classify(f) for f in frames)]


def evaluate_routing(
    path: str | os.PathLike, record: RouterRecord, policy: RoutingPolicy | None = None,
    styles: Sequence[str] = ("train", "heldout"), per_image: int = 10, stretch: int = 16,
    size: tuple[int, int] = (192, 192), seed: int = 1234,
) -> list[StyleRouting]:
    """Routing of the router graph at ``path`` (described by ``record``) in each style:
    ``per_image`` held-out frames per (held-out image, class), and a clip of ``stretch``
    frames per stretch of :data:`CHANGE_SEQUENCE` (the classes the router knows) at
    ``size``, routed with ``policy`` (default: the runtime's)."""
    from gpmask.data.clips import make_clip

    router = ClassifierRouter.load(path, record, policy or RoutingPolicy())
    classes = router.classes
    sequence = change_sequence(classes)
    results = []
    for style in styles:
        held = heldout_frames(classes, per_image, style, seed)
        clip = make_clip([c for c in classes if c != CLEAR], frames=stretch * len(sequence),
                         size=size, seed=seed, sequence=sequence, style=style)
        probabilities = [router.probabilities(frame) for frame in clip.degraded]
        results.append(StyleRouting(
            style, FrameAccuracy.of(held.labels, predict(router, held.frames), classes),
            FrameAccuracy.of(held.labels, routed_alone(router, held.frames), classes),
            route_clip(router, probabilities, clip.weathers)))
    return results


def router_to_evaluate(checkpoint: str, weathers: Sequence[str], bundle: str | None
                       ) -> tuple[Path, RouterRecord] | None:
    """The router graph and record to evaluate beside ``checkpoint``: ``bundle``'s router
    when given (refused when it has none), else the one shipped with a shipped checkpoint
    (:func:`gpmask.export.shipped_router.shipped_router`), else None."""
    from gpmask.bundle import Bundle
    from gpmask.errors import GpmaskError
    from gpmask.export.shipped_router import shipped_router

    if bundle is not None:
        opened = Bundle.open(bundle)
        record = opened.router
        if record is None:
            raise GpmaskError(f"--router {bundle}: the bundle has no weather router; train one "
                              f"with `gpmask train-router {bundle}`")
        opened.verify([record.path])
        return opened.root / record.path, record
    shipped = shipped_router(checkpoint, list(weathers))
    if shipped is None:
        return None
    graph, fields = shipped
    return graph, RouterRecord.of({**fields, "path": graph.name})


def plot_confusion(path: Path, matrix: np.ndarray, classes: Sequence[str], title: str) -> None:
    """PNG: the confusion matrix, each cell its frame count, shaded by the row's share."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shares = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    figure, axes = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 1.8))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(len(classes)):
        for col in range(len(classes)):
            axes.text(col, row, str(int(matrix[row, col])), ha="center", va="center",
                      color="white" if shares[row, col] > 0.5 else "black")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("routed to")
    axes.set_ylabel("true class")
    axes.set_title(title, fontsize=9, wrap=True)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
