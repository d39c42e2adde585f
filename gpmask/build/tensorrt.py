"""TensorRT engines from a bundle's graphs: strongly typed, one profile, one timing cache.

TensorRT 11 removed weak typing (the FP16/INT8 builder flags and implicit calibrators),
and JetPack's TensorRT 10 builds strongly typed networks too, so precision is whatever
the graph says: the fp32, fp16 (casts) or int8 (explicit Q/DQ) graph that
``gpmask calibrate`` wrote. The network is parsed strongly typed and no precision flag
is set. Building goes through Polygraphy's loaders, which follow TensorRT's API changes
between versions.

Every weather's graph has the same structure, so one timing cache per bundle lets
later builds reuse the tactic timings of the first. Timings hold for one TensorRT
version on one GPU model, so the cache file is named after the version, the
architecture and the GPU's name
(``engines/timing.trt<version>.sm<capability>.<gpu-name>.cache``): a bundle built on
two Orin modules (one SM, different GPUs) or on a Jetson and a desktop keeps a cache
for each instead of one that TensorRT would reject. Engines only run on the TensorRT
version and GPU they were built with; both are recorded in the manifest so the
runtime can refuse a mismatch.

The optimization profile covers ``--min-size`` to ``--max-size`` and batches of 1 to
``--max-batch`` (default 1), tuned for ``--opt-size`` at batch 1, except for a bundle
exported with a static size (``export --size 720x1280``): its graphs accept that shape
only, so the profile is min = opt = max = that shape (and its batch), and sizes saying
anything else are refused.

Version compatibility (``--version-compatible``): TensorRT's ``VERSION_COMPATIBLE`` flag
makes engines that later TensorRT versions, and TensorRT's lean runtime on its own, run
(TensorRT 8.6 and later; TensorRT 10 engines on TensorRT 11). The lean runtime is the
smaller library a device needs when it only runs engines (``pip install
tensorrt-lean-cu13``); such engines may run slower than ones built for one version, so
the flag is the user's choice and the manifest records it.

TF32: Polygraphy's builder config turns TensorRT's TF32 flag off unless asked, so fp32
engines compute in full float32 by default; ``tf32=True`` lets fp32 convolutions and
matrix products use TF32 on GPUs that have it (faster, with rounding differences).
The manifest records the choice.

Compact graphs (:mod:`gpmask.bundle.compact`) rebuild their weights from the common
ones with standard ONNX operators; TensorRT is not given that rebuild: each graph is
folded into plain initializers first (:func:`gpmask.graph.fold.dense_graph_file`, which
needs no TensorRT) and the folded graph is checked against the compact one on ONNX
Runtime, outputs equal, on a sample of the profile's smallest shape (its batch
included) before the parser sees it.

Nothing is written unless TensorRT imports and a GPU is visible: an engine cannot be
built, or faked, anywhere else. Bundle.open has checked every file the parser will
read (graphs and weight files) against its sha256; a Polygraphy or TensorRT failure
during a build ends in one GpmaskError line (:func:`gpmask.errors.tensorrt_errors`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from gpmask.bundle import Bundle, TensorSpec
from gpmask.errors import GpmaskError, tensorrt_errors
from gpmask.fileio import atomic_path
from gpmask.graph.fold import dense_graph_file
from gpmask.host import tensorrt_module, tensorrt_target
from gpmask.precision import TENSORRT_PRECISIONS
from gpmask.sizes import Size, check_multiple, format_size

ENGINE_FOLDER = "engines"


@dataclass(frozen=True)
class ShapeRange:
    """The one optimization profile: min, opt and max (height, width), and the batch range.

    ``batch`` is the smallest batch and the one the engines are tuned for; ``max_batch``
    (default ``batch``) the largest they accept. A video loop restores one frame at a
    time, so batch 1 is what the profile is tuned for; ``Restorer.restore_batch`` runs
    up to ``max_batch`` frames in one call.
    """

    min: Size
    opt: Size
    max: Size
    batch: int = 1
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.max_batch is None:
            object.__setattr__(self, "max_batch", self.batch)

    @classmethod
    def fixed(cls, height: int, width: int, batch: int = 1,
              max_batch: int | None = None) -> ShapeRange:
        """The profile of one frame size: min = opt = max."""
        return cls((height, width), (height, width), (height, width), batch, max_batch)

    def check(self, multiple: int) -> ShapeRange:
        """This range, if every side is a multiple of ``multiple``, min <= opt <= max, and
        1 <= batch <= max_batch."""
        for name, size in (("--min-size", self.min), ("--opt-size", self.opt),
                           ("--max-size", self.max)):
            check_multiple(size, multiple, name)
        for axis in (0, 1):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise GpmaskError(f"profile {self}: need min <= opt <= max in height and in "
                                  f"width")
        if not 1 <= self.batch <= self.max_batch:
            raise GpmaskError(f"profile {self}: need 1 <= batch {self.batch} <= --max-batch "
                              f"{self.max_batch}")
        return self

    @classmethod
    def of(cls, record: dict[str, Any]) -> ShapeRange:
        """The profile an engine record's ``shapes`` describe (:meth:`to_dict`)."""
        return cls(tuple(record["min"]), tuple(record["opt"]), tuple(record["max"]),
                   record.get("batch", 1), record.get("max_batch"))

    def outside(self, shape: tuple[int, ...]) -> str | None:
        """What of the NCHW input ``shape`` lies outside this profile, or None."""
        batch, _, height, width = shape
        reasons = []
        if not self.batch <= batch <= self.max_batch:
            accepted = self.batch if self.batch == self.max_batch else \
                f"{self.batch} to {self.max_batch}"
            reasons.append(f"a batch of {batch} frames, where the engines take {accepted}")
        if not all(low <= size <= high for low, size, high in
                   zip(self.min, (height, width), self.max, strict=True)):
            reasons.append(f"frames of {height}x{width}, where the engines take "
                           f"{format_size(self.min)} to {format_size(self.max)}")
        return " and ".join(reasons) or None

    def covering(self, shape: tuple[int, ...]) -> ShapeRange:
        """This profile widened to take the NCHW input ``shape`` too (same opt size)."""
        batch, _, height, width = shape
        return ShapeRange((min(self.min[0], height), min(self.min[1], width)), self.opt,
                          (max(self.max[0], height), max(self.max[1], width)),
                          min(self.batch, batch), max(self.max_batch, batch))

    def options(self) -> str:
        """The ``gpmask build`` options that make this profile."""
        options = " ".join(f"--{name}-size {format_size(size)}" for name, size in
                           (("min", self.min), ("opt", self.opt), ("max", self.max)))
        return options + (f" --max-batch {self.max_batch}" if self.max_batch > 1 else "")

    def nchw(self) -> dict[str, tuple[int, int, int, int]]:
        """The profile's ``min``, ``opt`` and ``max`` input shapes (NCHW, RGB): what TensorRT's
        optimization profile (or ONNX Runtime's TensorRT provider) is given."""
        return {"min": (self.batch, 3, *self.min), "opt": (self.batch, 3, *self.opt),
                "max": (self.max_batch, 3, *self.max)}

    def to_dict(self) -> dict[str, Any]:
        """As the manifest records it (``max_batch`` only where it differs from ``batch``)."""
        record = {"min": list(self.min), "opt": list(self.opt), "max": list(self.max),
                  "batch": self.batch}
        if self.max_batch != self.batch:
            record["max_batch"] = self.max_batch
        return record

    def __str__(self) -> str:
        sizes = ", ".join(f"{name} {format_size(size)}" for name, size in
                          (("min", self.min), ("opt", self.opt), ("max", self.max)))
        return sizes if self.max_batch == self.batch else \
            f"{sizes}, batch {self.batch} to {self.max_batch}"


#: The profile of a dynamic bundle when no size is given: small frames to 1080p, tuned
#: for 720p, one frame at a time.
DEFAULT_PROFILE = ShapeRange((64, 64), (720, 1280), (1080, 1920))


def profile_shapes(input_spec: TensorSpec, requested: ShapeRange | None) -> ShapeRange:
    """The optimization profile for a bundle whose manifest ``input`` is ``input_spec``.

    A static height and width (``export --size``) fix the profile (and the batch, when
    it is static too); ``requested`` may then only repeat them. Otherwise ``requested``
    (default :data:`DEFAULT_PROFILE`) is checked against the network's size multiple.
    """
    batch, _, height, width = input_spec.shape
    if height is None or width is None:
        return (requested or DEFAULT_PROFILE).check(input_spec.size_multiple)
    fixed = ShapeRange.fixed(height, width, batch or 1)
    if requested is None:
        return fixed
    static = input_spec.describe()
    if (requested.min, requested.opt, requested.max) != (fixed.min, fixed.opt, fixed.max):
        raise GpmaskError(f"the profile ({requested}) contradicts the bundle's static input "
                          f"shape {static}: its graphs accept {height}x{width} only; leave "
                          f"--min-size, --opt-size and --max-size out, or export without "
                          f"--size for a range")
    if requested.max_batch != 1 and (requested.batch, requested.max_batch) != \
            (fixed.batch, fixed.max_batch):
        raise GpmaskError(f"--max-batch {requested.max_batch} contradicts the bundle's static "
                          f"input shape {static}: its graphs take batches of {fixed.batch} "
                          f"only; leave --max-batch out, or export without --size for a "
                          f"range")
    return fixed


def timing_cache_name(tensorrt_version: str, compute_capability: str, gpu_name: str) -> str:
    """The bundle-relative timing cache for one TensorRT version on one GPU model.

    The GPU's name is part of it (as a file-name-safe slug) because GPUs of one
    architecture differ in what TensorRT measures: two Orin modules share SM 8.7.
    """
    capability = compute_capability.replace(".", "")
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "unknown-gpu"
    return f"{ENGINE_FOLDER}/timing.trt{tensorrt_version}.sm{capability}.{slug}.cache"


def build_engine(
    graph: str | os.PathLike, engine: str | os.PathLike, input_name: str, shapes: ShapeRange,
    timing_cache: str | os.PathLike, workspace_mb: int | None = None, tf32: bool = False,
    version_compatible: bool = False,
) -> None:
    """Build one strongly typed engine from ``graph`` and write it to ``engine`` atomically.

    ``version_compatible`` sets TensorRT's ``VERSION_COMPATIBLE`` builder flag: the plan
    then carries a copy of the lean runtime, runs under later TensorRT versions and under
    the lean runtime alone, and may run slower than an engine for one version.
    """
    from polygraphy.backend.common import SaveBytes
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineBytesFromNetwork,
        NetworkFromOnnxPath,
        Profile,
    )

    trt = tensorrt_module(builder=True)
    profile = Profile().add(input_name, **shapes.nchw())
    pools = {trt.MemoryPoolType.WORKSPACE: workspace_mb << 20} if workspace_mb else None
    config = CreateConfig(
        profiles=[profile],
        load_timing_cache=str(timing_cache) if os.path.exists(timing_cache) else None,
        memory_pool_limits=pools,
        tf32=tf32,
        version_compatible=version_compatible,
    )
    network = NetworkFromOnnxPath(str(graph), strongly_typed=True)
    with atomic_path(engine) as tmp, \
            tensorrt_errors(f"TensorRT could not build {os.path.basename(engine)} from "
                            f"{os.path.basename(graph)}"):
        SaveBytes(EngineBytesFromNetwork(network, config, save_timing_cache=str(timing_cache)),
                  str(tmp))()


def build_bundle_engines(
    root: str | os.PathLike, precision: str, shapes: ShapeRange | None = None,
    workspace_mb: int | None = None, tf32: bool = False, progress: bool = True,
    version_compatible: bool = False,
) -> list[str]:
    """Build one engine per weather (and ``common``) at ``precision``; returns their paths.

    ``shapes``: the profile (see :func:`profile_shapes`; None: the bundle's static shape,
    or :data:`DEFAULT_PROFILE`); ``version_compatible``: see :func:`build_engine`.
    Refuses, before writing anything, when TensorRT's builder or a GPU is missing, when
    the bundle lacks the graphs of ``precision``, or when any of its files does not match
    the manifest.
    """
    if precision not in TENSORRT_PRECISIONS:
        raise GpmaskError(f"unknown engine precision {precision!r}; use one of "
                          f"{', '.join(TENSORRT_PRECISIONS)}")
    bundle = Bundle.open(root)
    shape_range = profile_shapes(bundle.input_spec, shapes)
    missing = bundle.missing_graphs(precision)
    if missing:
        raise GpmaskError(f"bundle {bundle.root} has no {precision} graph for "
                          f"{', '.join(missing)}; run: gpmask calibrate {bundle.root} "
                          f"--precision {precision}")
    try:
        target = tensorrt_target(0, builder=True)
    except GpmaskError as exc:
        raise GpmaskError(f"{exc}; build engines on the target machine (a Jetson with "
                          f"JetPack, or a GPU machine with TensorRT 10 or 11); no file was "
                          f"written") from exc
    try:
        (bundle.root / ENGINE_FOLDER).mkdir(exist_ok=True)
    except OSError as exc:
        raise GpmaskError(f"cannot write {bundle.root / ENGINE_FOLDER}: "
                          f"{exc.strerror or exc}") from exc
    timing_cache = bundle.root / timing_cache_name(target.tensorrt_version,
                                                   target.compute_capability, target.gpu)
    sample = (shape_range.batch, 3, *shape_range.min)
    written = []
    for weather in tqdm(bundle.networks, desc=f"TensorRT {precision}", unit="engine",
                        disable=not progress):
        relative = f"{ENGINE_FOLDER}/{weather}.{precision}.engine"
        with dense_graph_file(bundle.graph_path(weather, precision),
                              check_shape=sample) as graph:
            build_engine(graph, bundle.root / relative, bundle.input_spec.name, shape_range,
                         timing_cache, workspace_mb, tf32, version_compatible)
        bundle.set_engine(weather, precision, relative, target, shape_range.to_dict(), tf32,
                          version_compatible)
        bundle.save()  # each engine recorded as it lands: a later failure leaves no stale hash
        written.append(relative)
    return written
