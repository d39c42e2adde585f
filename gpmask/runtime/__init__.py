"""The runtime: load a bundle, keep every weather ready, restore frames (no torch here).

``Restorer`` is the entry point; backends live in :mod:`gpmask.runtime.backends`.
Nothing under this package imports torch or training code, so an edge device runs it
with numpy, OpenCV and TensorRT, OpenVINO or ONNX Runtime alone.
"""

from gpmask.runtime.restorer import Restorer

__all__ = ["Restorer"]
