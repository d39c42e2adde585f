"""Give the traced structure one weather's weights by swapping its initializers.

The graph is traced once (with the ``common`` weights); every weather's graph is a
copy whose initializers named after state-dict entries carry that weather's baked
values. This only works if the exporter kept each parameter as an initializer under
its state-dict name, unchanged. :class:`ParameterBinding` checks that once, so a
network whose weights were folded into other constants (say a BatchNorm merged into a
convolution) is refused instead of silently exporting the common weights for
every weather.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from gpmask.errors import GpmaskError


class FoldedParameterError(GpmaskError):
    """The exporter merged or changed a parameter, so its initializer cannot be swapped."""


class ParameterBinding:
    """Which initializers of a traced graph are which state-dict entries.

    Args:
        template: the traced graph (initializers in memory).
        traced_weights: the state dict the graph was traced with (name -> array).
        varying: names of entries whose values differ between the graphs to be made;
            each must be an initializer of the same name, shape and values.
    """

    def __init__(
        self,
        template: onnx.ModelProto,
        traced_weights: Mapping[str, np.ndarray],
        varying: set[str],
    ) -> None:
        self.template = template
        initializers = {t.name: t for t in template.graph.initializer}
        self.names = {name for name in traced_weights if name in initializers}
        for name in sorted(varying):
            if name not in initializers:
                raise FoldedParameterError(
                    f"the ONNX exporter did not keep parameter {name!r} as an initializer "
                    f"(it was folded into another constant), so per-weather graphs cannot be "
                    f"made from one trace"
                )
        for name in sorted(self.names):
            kept = numpy_helper.to_array(initializers[name])
            if kept.shape != traced_weights[name].shape or not np.array_equal(
                kept, traced_weights[name]
            ):
                raise FoldedParameterError(
                    f"the ONNX exporter changed the values of parameter {name!r} (folded "
                    f"another layer into it), so per-weather graphs cannot be made from one "
                    f"trace"
                )

    def bind(self, weights: Mapping[str, np.ndarray]) -> onnx.ModelProto:
        """A copy of the template whose parameter initializers hold ``weights``."""
        graph = onnx.ModelProto()
        graph.CopyFrom(self.template)
        set_initializers(graph, self.names, weights)
        return graph


def set_initializers(
    model: onnx.ModelProto, names: set[str], weights: Mapping[str, np.ndarray]
) -> None:
    """Give the initializers of ``model`` named in ``names`` the values in ``weights``,
    each in the initializer's own element type."""
    for tensor in model.graph.initializer:
        if tensor.name in names:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
            value = np.ascontiguousarray(weights[tensor.name], dtype=dtype)
            tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
