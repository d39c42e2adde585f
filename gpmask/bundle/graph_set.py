"""Write one precision's graphs into a bundle, their weights shared in one file.

Every precision gets its own weight file (``weights.fp16.bin``, ``weights.int8.bin``)
so that loading the fp16 graphs never reads fp32 bytes. Within it, a tensor that is the
same in two weathers' graphs (most of the common values) is stored once, by the same
content-addressed writer export uses for ``weights.bin``.

In a compact bundle the fp16 graphs are compact too (:mod:`gpmask.bundle.compact`):
their common weights once, each weather's mask and values in fp16. The int8 graphs
stay dense: per-channel weight scales follow each weather's own weights, so a
weather's int8 weights differ from the common graph's in almost every element (over
90 % on random 10 %-masks, see ``benchmarks/bench_compact.py``) and there is nothing
to leave out; and ``int8-cpu`` quantizes rewritten weights besides.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import onnx

from gpmask.bundle.compact import compact_graphs
from gpmask.bundle.manifest import COMMON, Bundle, GraphQuality
from gpmask.bundle.weight_store import write_shared_weights
from gpmask.fileio import replace_together
from gpmask.precision import precision as definition


def graph_name(weather: str, precision: str) -> str:
    """File name of ``weather``'s graph at ``precision`` (``rain.fp16.onnx``)."""
    return f"{weather}.{precision}.onnx"


def weights_name(precision: str) -> str:
    """File name of the shared weight file of ``precision`` (``weights.fp16.bin``)."""
    return f"weights.{precision}.bin"


def precision_layout(bundle: Bundle, precision: str) -> str:
    """How ``precision``'s graphs are stored in ``bundle``: ``compact`` or ``dense``
    (:attr:`gpmask.precision.Precision.stored_compact`)."""
    return "compact" if bundle.layout == "compact" and definition(precision).stored_compact \
        else "dense"


def save_precision_graphs(
    bundle: Bundle, precision: str, models: Mapping[str, onnx.ModelProto],
    qualities: Mapping[str, GraphQuality],
) -> None:
    """Write ``models`` (weather -> dense graph with in-memory weights) and record them
    with their measured ``qualities``, compacted against the common graph where
    :func:`precision_layout` says so.

    The weight file and the graphs are written into a staging folder inside the bundle
    and replace the old ones together with the manifest that records them
    (:func:`gpmask.fileio.replace_together`): a failure or Ctrl-C on the way leaves the
    bundle as it was, every file matching the manifest.
    """
    layout = precision_layout(bundle, precision)
    if layout == "compact":
        models, _ = compact_graphs(models, COMMON)
    staging = Path(tempfile.mkdtemp(prefix=f".{precision}.", dir=bundle.root))
    try:
        write_shared_weights(models, staging, weights_name(precision))
        for weather, model in models.items():
            onnx.save(model, staging / graph_name(weather, precision))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    def record() -> None:
        bundle.set_weights(weights_name(precision))
        for weather in models:
            bundle.set_graph(weather, precision, graph_name(weather, precision), layout,
                             qualities[weather])
        bundle.save()

    replace_together(bundle.root, staging, record)
