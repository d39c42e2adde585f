"""Train the weather router, calibrate it, measure it on held-out frames, ship it in a bundle.

The router is a :class:`~gpmask.model.weather_classifier.WeatherClassifier` over ``clear``
plus the bundle's weathers, trained on tiles taken at full resolution from labelled
frames (:mod:`gpmask.router.frames`): synthetic weather rendered on clean images, a
user's own frames (``--data``), or both. Each training tile is cut from a random frame at
a random place, turned a random quarter turn and mirrored half the time (weather has no
preferred orientation once the scene is varied), then made into the graph's input by
the runtime's own :func:`~gpmask.runtime.router_frames.router_input`, so training sees
exactly what the loop feeds the router.

Held-out frames (held-out clean images under synthetic weather, or the last part of each
class folder) are routed as the loop routes a frame: the whole frame's grid of tiles
through the exported ONNX graph. Their logits fit the temperature (one number that
minimises their negative log-likelihood; it changes no decision, only the confidence
the runtime compares with ``min_confidence``), which the exported graph then applies.
The held-out accuracy per class and the confusion matrix are printed, drawn into the
bundle's ``reports/`` folder and recorded in the manifest's ``router`` entry.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.export.shipped_router import ROUTER_FILE
from gpmask.fileio import atomic_path
from gpmask.metrics import class_accuracy, confusion_matrix, format_confusion
from gpmask.router.evaluation import heldout_frames, plot_confusion, predict
from gpmask.router.frames import FrameSet, Rendering, read_class_folders, render_frames
from gpmask.runtime.router_frames import router_input
from gpmask.runtime.routing import CLEAR, ClassifierRouter, router_session

#: The confusion matrix picture, inside the bundle.
CONFUSION_PICTURE = "reports/router-confusion.png"


@dataclass
class RouterSettings:
    """How the router is trained (``gpmask train-router``'s defaults).

    The synthetic pool holds ``renders`` crops per (training image, class), drawn once;
    every step samples ``batch_size`` tiles of ``tile`` pixels from it. A frame at run
    time is a ``grid`` (rows, cols) of such tiles. ``members`` classifiers, trained from
    successive seeds, make the router (an ensemble: see
    :class:`~gpmask.model.weather_classifier.TileRouter`).
    """

    steps: int = 3000
    members: int = 2
    batch_size: int = 48
    learning_rate: float = 3e-3
    tile: int = 64
    grid: tuple[int, int] = (3, 4)
    width: int = 16
    renders: int = 48
    heldout_renders: int = 16  # held-out frames per (held-out image, class): see evaluation
    crop_side: tuple[int, int] = (128, 256)
    severity: tuple[float, float] = (0.5, 1.4)
    heldout_fraction: float = 0.2  # of each --data class folder
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "members", "batch_size", "tile", "width", "renders",
                     "heldout_renders"):
            if getattr(self, name) < 1:
                raise GpmaskError(f"--{name.replace('_', '-')} must be at least 1, got "
                                  f"{getattr(self, name)}")
        if min(self.grid) < 1:
            raise GpmaskError(f"--grid must be at least 1x1, got {self.grid[0]}x{self.grid[1]}")
        if not 0 < self.heldout_fraction < 1:
            raise GpmaskError(f"--heldout-fraction must be between 0 and 1, got "
                              f"{self.heldout_fraction}")

    def rendering(self, vary_scenes: bool) -> Rendering:
        """How this recipe's synthetic frames are drawn."""
        return Rendering(self.crop_side, self.severity, vary_scenes=vary_scenes)


@dataclass
class RouterReport:
    """What training produced: held-out accuracy overall and per class, the confusion
    matrix (rows: true class, columns: routed class), and the fitted temperature."""

    classes: list[str]
    accuracy: float
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    temperature: float
    heldout: str
    heldout_frames: int
    train_frames: int
    steps: int
    seconds: float
    picture: str = CONFUSION_PICTURE
    settings: dict = field(default_factory=dict)

    def format(self) -> str:
        per_class = ", ".join(f"{c} {a:.1%}" for c, a in self.per_class.items()
                              if a is not None)
        return (f"router accuracy on {self.heldout_frames} held-out frames ({self.heldout}): "
                f"{self.accuracy:.1%} ({per_class}); temperature {self.temperature:.2f}\n"
                + format_confusion(np.array(self.confusion), self.classes))


def training_frames(classes: list[str], settings: RouterSettings,
                    data: str | os.PathLike | None, synthetic: bool, progress: bool
                    ) -> tuple[FrameSet, FrameSet, str]:
    """Training frames, held-out frames and what the held-out frames are.

    Without ``data``: synthetic weather on the training sample images, held out on the
    held-out ones. With ``data``: its folders, plus the synthetic training frames of the
    classes gpmask can render when ``synthetic``; held out from ``data`` only, since the
    user's frames are what the router must get right.
    """
    from gpmask.data.clean import sample_images
    from gpmask.data.synthetic import WEATHERS

    renderable = [c for c in classes if c == CLEAR or c in WEATHERS]
    train_images = sample_images("train")
    if data is None:
        unknown = [c for c in classes if c not in renderable]
        if unknown:
            raise GpmaskError(f"no synthetic weather for {', '.join(unknown)}; the router "
                              f"trains on {', '.join(WEATHERS)} unless --data gives frames")
        train = render_frames(train_images, classes, settings.renders,
                              settings.rendering(vary_scenes=True), settings.seed, progress)
        heldout = heldout_frames(classes, settings.heldout_renders, "train", settings.seed + 1)
        return train, heldout, "synthetic weather on held-out images"
    train, heldout = read_class_folders(data, classes, settings.heldout_fraction)
    if synthetic:
        train.extend(render_frames(train_images, renderable, settings.renders,
                                   settings.rendering(vary_scenes=True), settings.seed,
                                   progress))
    return train, heldout, f"the last {settings.heldout_fraction:.0%} of each class of {data}"


def sample_batch(frames: FrameSet, class_index: dict[str, list[int]], size: int, tile: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``size`` training tiles (router inputs) and their class indices: a class at random,
    a frame of it at random, a tile of it at a random place, turned and mirrored."""
    names = list(class_index)
    inputs, labels = [], []
    for label in rng.integers(len(names), size=size):
        members = class_index[names[label]]
        frame = frames.frames[members[int(rng.integers(len(members)))]]
        height, width = frame.shape[:2]
        top = int(rng.integers(0, max(1, height - tile + 1)))
        left = int(rng.integers(0, max(1, width - tile + 1)))
        cut = np.rot90(frame[top : top + tile, left : left + tile], int(rng.integers(4)))
        if rng.random() < 0.5:
            cut = cut[:, ::-1]
        inputs.append(router_input(np.ascontiguousarray(cut), tile, (1, 1)))
        labels.append(label)
    return np.concatenate(inputs), np.array(labels, dtype=np.int64)


def train_classifier(frames: FrameSet, classes: list[str], settings: RouterSettings,
                     member: int = 0, progress: bool = True):
    """A :class:`WeatherClassifier` trained on tiles of ``frames`` (Adam, one-cycle
    learning rate), in eval mode; ``member`` (of the ensemble) offsets the seed."""
    import torch
    from tqdm import tqdm

    from gpmask.model.weather_classifier import WeatherClassifier

    torch.manual_seed(settings.seed + member)
    rng = np.random.default_rng(settings.seed + 7 + member)
    class_index = {name: [i for i, label in enumerate(frames.labels) if label == name]
                   for name in classes}
    model = WeatherClassifier(len(classes), width=settings.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, settings.learning_rate, total_steps=settings.steps, pct_start=0.15)
    model.train()
    for _ in tqdm(range(settings.steps), desc=f"router {member + 1}/{settings.members}",
                  unit="step", disable=not progress):
        inputs, labels = sample_batch(frames, class_index, settings.batch_size, settings.tile,
                                      rng)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(inputs)),
                                                 torch.from_numpy(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``labels`` under
    softmax(``logits`` / T) (temperature scaling, Guo et al. 2017)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    def nll(log_t: float) -> float:
        scaled = log_softmax(logits / np.exp(log_t), axis=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)),
                                        method="bounded").x))


def train_router(
    bundle_path: str | os.PathLike,
    settings: RouterSettings | None = None,
    data: str | os.PathLike | None = None,
    synthetic: bool = False,
    progress: bool = True,
) -> RouterReport:
    """Train the router for a bundle's weathers, calibrate and export it into the bundle
    (``router.onnx``, written atomically), record it in the manifest and draw its
    confusion matrix into ``reports/``.

    ``data``: a folder of one subfolder per class of the user's own frames
    (:func:`~gpmask.router.frames.read_class_folders`); ``synthetic`` mixes synthetic
    weather into its training frames. Without ``data`` the router learns from synthetic
    weather alone.
    """
    import torch

    from gpmask.model.weather_classifier import TileRouter

    settings = settings or RouterSettings()
    bundle = Bundle.open(bundle_path)
    classes = [CLEAR, *bundle.weathers]
    started = time.perf_counter()
    train, heldout, described = training_frames(classes, settings, data, synthetic, progress)
    classifiers = [train_classifier(train, classes, settings, member, progress)
                   for member in range(settings.members)]
    labels = np.array([classes.index(name) for name in heldout.labels])
    with torch.no_grad():
        raw = np.concatenate([
            TileRouter(classifiers)(torch.from_numpy(router_input(f, settings.tile,
                                                                 settings.grid))).numpy()
            for f in heldout.frames])
    temperature = fit_temperature(raw, labels)
    path = bundle.root / ROUTER_FILE
    with atomic_path(path, suffix=".onnx") as tmp:
        export_router(TileRouter(classifiers, temperature), settings.tile, settings.grid, tmp)
        exported = ClassifierRouter(router_session(tmp), classes, settings.tile, settings.grid)
        predicted = predict(exported, heldout.frames)
    matrix = confusion_matrix(heldout.labels, predicted, classes)
    report = RouterReport(
        classes=classes,
        accuracy=float(np.trace(matrix) / matrix.sum()),
        per_class=class_accuracy(matrix, classes),
        confusion=matrix.tolist(),
        temperature=temperature,
        heldout=described,
        heldout_frames=len(heldout),
        train_frames=len(train),
        steps=settings.steps,
        seconds=time.perf_counter() - started,
        settings=asdict(settings),
    )
    plot_confusion(bundle.root / CONFUSION_PICTURE, matrix, classes,
                   f"router on {report.heldout_frames} held-out frames ({described}): "
                   f"{report.accuracy:.1%}")
    bundle.set_router(
        ROUTER_FILE, classes, (settings.tile, settings.tile), settings.grid,
        temperature=temperature, accuracy=report.accuracy,
        accuracy_per_class=report.per_class, confusion=report.confusion,
        heldout=described, heldout_frames=report.heldout_frames, report=CONFUSION_PICTURE,
        training={"steps": settings.steps, "members": settings.members,
                  "train_frames": report.train_frames,
                  "seed": settings.seed,
                  "data": ("synthetic (gpmask.data.synthetic)" if data is None else
                           f"{Path(data)}" + (" + synthetic" if synthetic else ""))},
    )
    bundle.save()
    return report


def export_router(router, tile: int, grid: tuple[int, int], path: os.PathLike) -> None:
    """The router as a self-contained ONNX graph: input ``tiles`` (rows*cols x 3 x tile x
    tile), output ``logits`` (1 x classes)."""
    import torch

    from gpmask.export.trace import quiet_exporter

    example = torch.zeros(grid[0] * grid[1], 3, tile, tile)
    try:
        with quiet_exporter():
            torch.onnx.export(
                router, (example,), str(path), input_names=["tiles"], output_names=["logits"],
                dynamo=True, external_data=False, verbose=False,
            )
    except Exception as exc:  # the exporter's many error types: one line for the user
        raise GpmaskError(f"router export to ONNX failed: {str(exc).splitlines()[0]}") from exc
