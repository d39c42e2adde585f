"""``export_bundle``: a masked checkpoint becomes a verified bundle of per-weather ONNX graphs.

The steps, in a temporary folder renamed into place only at the end (so a failure or
Ctrl-C leaves no bundle, and an existing one intact):

1. trace the network once, with the ``common`` weights (:mod:`gpmask.export.trace`), or
   take the package's trace of its architecture (:mod:`gpmask.export.shipped_trace`);
2. make ``common.onnx`` and one graph per weather by swapping initializers
   (:mod:`gpmask.export.specialize`); in the ``compact`` layout (the default), each
   graph then stores only where it differs from the common weights and rebuilds the
   rest (:mod:`gpmask.bundle.compact`);
3. write every distinct tensor once into ``weights.bin`` (:mod:`gpmask.bundle.weight_store`)
   and save the graphs, which reference it;
4. a shipped checkpoint (``demo``) gets its shipped weather router (``router.onnx``,
   :data:`gpmask.export.shipped_router.SHIPPED_ROUTERS`), so ``--weather auto`` works at once;
5. check each graph with onnx.checker and ONNX Runtime against PyTorch
   (:mod:`gpmask.export.verify`), report to ``reports/export.json``;
6. write ``manifest.json`` (schema in :mod:`gpmask.bundle`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime
import torch
from tqdm import tqdm

from gpmask import __version__
from gpmask.bundle import COMMON, LAYOUTS, Bundle, TensorSpec, is_bundle
from gpmask.bundle.compact import compact_graphs
from gpmask.bundle.weight_store import write_shared_weights
from gpmask.errors import GpmaskError
from gpmask.export.shipped_router import attach_router, shipped_router
from gpmask.export.shipped_trace import load_trace
from gpmask.export.specialize import FoldedParameterError, ParameterBinding
from gpmask.export.trace import INPUT_NAME, OPSET, OUTPUT_NAME, check_static_shape, trace_graph
from gpmask.export.verify import verify_graphs
from gpmask.fileio import (
    atomic_directory,
    check_outputs,
    check_replaceable,
    sha256_file,
    write_text_atomic,
)
from gpmask.masking.checkpoint import SHIPPED_CHECKPOINTS, MaskedCheckpoint, resolve_checkpoint
from gpmask.model import size_multiple

WEIGHTS_FILE = "weights.bin"
REPORT_FILE = "reports/export.json"
PRECISION = "fp32"
#: What an output folder that ``--force`` may replace is (see gpmask.fileio).
BUNDLE = "a gpmask bundle"


def _load(checkpoint: MaskedCheckpoint | str | os.PathLike) -> tuple[MaskedCheckpoint, str | None]:
    """The checkpoint and the sha256 of its file (None for one given in memory)."""
    if isinstance(checkpoint, MaskedCheckpoint):
        return checkpoint, None
    loaded = MaskedCheckpoint.load(checkpoint)
    return loaded, sha256_file(resolve_checkpoint(checkpoint))


def _shipped_name(checkpoint: MaskedCheckpoint | str | os.PathLike) -> str | None:
    """The name of the shipped checkpoint ``checkpoint`` is (``demo``), or None."""
    if isinstance(checkpoint, MaskedCheckpoint):
        return None
    path = resolve_checkpoint(checkpoint).resolve()
    return next((name for name, shipped in SHIPPED_CHECKPOINTS.items()
                 if shipped.resolve() == path), None)


def select_weathers(checkpoint: MaskedCheckpoint, weathers: Sequence[str] | None) -> list[str]:
    """The requested weathers (a list, or one comma-separated string) in checkpoint order;
    an unknown one is refused."""
    if weathers is None:
        return list(checkpoint.weathers)
    if isinstance(weathers, str):
        weathers = [w.strip() for w in weathers.split(",") if w.strip()]
    if not weathers:
        raise GpmaskError("no weathers selected")
    for weather in weathers:
        if weather not in checkpoint.weathers:
            known = ", ".join(checkpoint.weathers)
            raise GpmaskError(f"unknown weather {weather!r}; this checkpoint has: {known}")
    return [w for w in checkpoint.weathers if w in weathers]


def _new_bundle(
    folder: Path,
    checkpoint: MaskedCheckpoint,
    checkpoint_sha256: str | None,
    weathers: list[str],
    multiple: int,
    static_shape: Sequence[int] | None,
    layout: str,
) -> Bundle:
    """The bundle before graphs, weights and verification are recorded."""
    shape = tuple(static_shape) if static_shape else (None, 3, None, None)
    return Bundle.create(
        folder, weathers, TensorSpec(INPUT_NAME, multiple, shape),
        TensorSpec(OUTPUT_NAME, multiple, shape), layout, checkpoint_sha256,
        {k: v for k, v in checkpoint.metadata().items() if k != "params"},
        {"gpmask": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
         "onnxruntime": onnxruntime.__version__, "onnx_opset": OPSET})


def _trace_binding(
    model: torch.nn.Module,
    checkpoint: MaskedCheckpoint,
    weathers: list[str],
    static_shape: tuple[int, int, int, int] | None,
    multiple: int,
) -> ParameterBinding:
    """Trace once (or take the shipped trace of the architecture) and map initializers
    to parameters.

    A dynamic-shape export of an architecture the package ships a trace of
    (:mod:`gpmask.export.shipped_trace`) skips the exporter. Otherwise the exporter's
    optimizer is tried first (it folds shape arithmetic); if it fused a parameter that
    differs between weathers, the network is traced again without it, which keeps every
    parameter as a named initializer.
    """
    common = checkpoint.bake_numpy(COMMON)
    varying = {name for w in weathers for name in checkpoint.masks.get(w, {})}
    traced = None if static_shape else load_trace(checkpoint, common)
    if traced is None:
        traced = trace_graph(model, static_shape, multiple, optimize=True)
    try:
        return ParameterBinding(traced.model, common, varying - traced.unused)
    except FoldedParameterError:
        traced = trace_graph(model, static_shape, multiple, optimize=False)
        return ParameterBinding(traced.model, common, varying - traced.unused)


def _check_verification_memory(model: torch.nn.Module, shape: Sequence[int]) -> None:
    """Refuse to verify a static shape this machine cannot run (PyTorch and ONNX Runtime
    each restore a batch of it); the graphs could still be exported unverified."""
    from gpmask.host import check_memory
    from gpmask.model.memory import measured

    batch, _, height, width = shape
    check_memory(2 * measured(model).peak * batch * height * width,
                 f"verifying the graphs at {batch}x3x{height}x{width}",
                 "export with --no-verify on this machine (and verify on the target), or a "
                 "smaller --size")


def export_bundle(
    checkpoint: MaskedCheckpoint | str | os.PathLike,
    output: str | os.PathLike,
    weathers: Sequence[str] | str | None = None,
    static_shape: tuple[int, int, int, int] | None = None,
    verify: bool = True,
    force: bool = False,
    progress: bool = True,
    layout: str = "compact",
) -> Bundle:
    """Export ``checkpoint`` (a :class:`MaskedCheckpoint`, a path, or ``"demo"``) to a bundle.

    Args:
        output: the bundle folder to create. An existing one is refused unless ``force``,
            and even then replaced only if it is a gpmask bundle or an empty folder.
        weathers: subset of the checkpoint's weathers (default all), as a list or as
            ``"rain,snow"``; ``common`` is always exported.
        static_shape: fixed NCHW input shape; default dynamic batch, height and width.
        verify: check every graph with onnx.checker and against PyTorch (a mismatch
            raises and leaves no bundle).
        progress: show a tqdm progress bar on stderr.
        layout: ``compact`` (each weather stores where it differs from the common weights,
            and its graph rebuilds the rest with standard ONNX operators) or ``dense``
            (every graph holds its full weights; identical tensors stored once).

    Returns the written bundle, opened from ``output``.
    """
    if layout not in LAYOUTS:
        raise GpmaskError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if not isinstance(checkpoint, MaskedCheckpoint):
        check_outputs([output], [resolve_checkpoint(checkpoint)])
    check_replaceable(output, force, is_bundle, BUNDLE)  # before the slow part
    source = checkpoint
    checkpoint, checkpoint_sha256 = _load(checkpoint)
    selected = select_weathers(checkpoint, weathers)
    model = checkpoint.build_model(COMMON)
    multiple = size_multiple(model)
    if static_shape is not None:
        check_static_shape(static_shape, multiple)
        if verify:
            _check_verification_memory(model, static_shape)
    names = [COMMON, *selected]
    steps = 2 + len(names) * (2 if verify else 1)
    with atomic_directory(output, force, is_bundle, BUNDLE) as folder, tqdm(
        total=steps, desc="export", unit="step", disable=not progress
    ) as bar:
        bar.set_postfix_str("graph structure")
        binding = _trace_binding(model, checkpoint, selected, static_shape, multiple)
        bar.update()
        graphs = {}
        for weather in names:
            bar.set_postfix_str(f"graph {weather}")
            graphs[weather] = binding.bind(checkpoint.bake_numpy(weather))
            bar.update()
        if layout == "compact":
            bar.set_postfix_str("compacting")
            graphs, _ = compact_graphs(graphs, COMMON)
        bar.set_postfix_str(f"writing {WEIGHTS_FILE}")
        write_shared_weights(graphs, folder, WEIGHTS_FILE)
        bundle = _new_bundle(folder, checkpoint, checkpoint_sha256, selected, multiple,
                             static_shape, layout)
        for weather, graph in graphs.items():
            onnx.save(graph, str(folder / f"{weather}.onnx"))
            bundle.set_graph(weather, PRECISION, f"{weather}.onnx", layout)
        bundle.set_weights(WEIGHTS_FILE)
        shipped = _shipped_name(source)
        router = shipped_router(shipped, selected) if shipped else None
        if router:
            attach_router(bundle, *router)
        bar.update()
        bundle.set_verification("skipped")
        if verify:
            bar.set_postfix_str("verifying")
            report = verify_graphs(
                {w: bundle.graph_path(w, PRECISION) for w in names},
                checkpoint,
                static_shape,
                multiple,
                step=lambda weather: bar.update(),
            )
            (folder / Path(REPORT_FILE).parent).mkdir()
            write_text_atomic(folder / REPORT_FILE, json.dumps(report, indent=2) + "\n")
            bundle.set_verification("passed", REPORT_FILE)
        bundle.save()
    return Bundle.open(output)
