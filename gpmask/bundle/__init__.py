"""The deployment format: a bundle folder, its manifest and how its weights are stored.

Everything that writes or reads a bundle (export, calibration, the engine build, the
runtime, inspect) stands above this package and goes through :class:`Bundle`. The
package imports neither torch nor a runtime library, so an edge device reads a bundle
with numpy (and onnx, for the graphs themselves).

- :mod:`gpmask.bundle.manifest`: :class:`Bundle`, the manifest's typed records;
- :mod:`gpmask.bundle.schema`: the manifest's JSON Schema;
- :mod:`gpmask.bundle.weight_store`: one shared, content-addressed weight file per precision;
- :mod:`gpmask.bundle.compact`: common values once, each weather's differences rebuilt by
  standard ONNX operators;
- :mod:`gpmask.bundle.graph_set`: one precision's graphs written together;
- :mod:`gpmask.bundle.summary`: what ``gpmask inspect`` reports.
"""

from gpmask.bundle.manifest import (
    CLEAR,
    COMMON,
    COMPACT_PREFIX,
    FORMAT_VERSION,
    LAYOUTS,
    MANIFEST,
    Bundle,
    EngineRecord,
    EngineTarget,
    GraphQuality,
    GraphRecord,
    RouterRecord,
    TensorSpec,
    is_bundle,
)

__all__ = ["CLEAR", "COMMON", "COMPACT_PREFIX", "FORMAT_VERSION", "LAYOUTS", "MANIFEST", "Bundle",
           "EngineRecord", "EngineTarget", "GraphQuality", "GraphRecord", "RouterRecord",
           "TensorSpec", "is_bundle"]
