"""Write one precision's graphs into a bundle, their weights shared in one file.

Every precision gets its own weight file (``weights.fp16.bin``, ``weights.int8.bin``)
so that loading the fp16 graphs never reads fp32 bytes. Within it, a tensor that is the
same in two weathers' graphs (most of the common values) is stored once, by the same
content-addressed writer export uses for ``weights.bin``.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from gpmask.bundle import Bundle
from gpmask.export.weight_store import write_shared_weights
from gpmask.fileio import atomic_path


def graph_name(weather: str, precision: str) -> str:
    """File name of ``weather``'s graph at ``precision`` (``rain.fp16.onnx``)."""
    return f"{weather}.{precision}.onnx"


def weights_name(precision: str) -> str:
    """File name of the shared weight file of ``precision`` (``weights.fp16.bin``)."""
    return f"weights.{precision}.bin"


def save_precision_graphs(
    bundle: Bundle, precision: str, models: Mapping[str, onnx.ModelProto]
) -> None:
    """Write ``models`` (weather -> graph with in-memory weights) and record them.

    The weight file and each graph are written atomically; the manifest is saved last,
    so a failure leaves the manifest describing the files it described before.
    """
    write_shared_weights(models, bundle.root, weights_name(precision))
    for weather, model in models.items():
        with atomic_path(bundle.root / graph_name(weather, precision)) as tmp:
            onnx.save(model, tmp)
    bundle.set_weights(weights_name(precision))
    for weather in models:
        bundle.set_graph(weather, precision, graph_name(weather, precision))
    bundle.save()
