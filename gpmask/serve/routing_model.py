"""The routing model of an exported Triton repository (``gpmask export-triton``).

It is model ``gpmask`` in NVIDIA's Triton container, on the Python backend, in front of
one model per weather (``rain``, ``snow``, ..., ``common``; ONNX Runtime, OpenVINO or
TensorRT) and the bundle's ``router``. A Triton ensemble is a fixed graph and cannot
choose a model per frame, so this model does what an ensemble cannot, with Triton's
business-logic scripting (BLS): it turns frames into the graphs' NCHW float batch,
asks ``router`` for the weather of ``auto`` frames, sends each group of frames to its
weather's model, and turns the result back into frames. Batching, grouping and errors
are :class:`FrameModel`'s, shared with ``gpmask serve``.

The container has neither gpmask nor OpenCV: this file is copied into the repository as
``model.py`` beside ``protocol.py``, and needs numpy and the two of them only.
"""

from __future__ import annotations

import json

import numpy as np

try:  # in a model repository, protocol.py lies beside this file
    import protocol
except ImportError:  # imported from the gpmask package
    from gpmask.serve import protocol

try:  # present inside Triton's Python backend only
    import triton_python_backend_utils as pb_utils
except ImportError:
    pb_utils = None


class TritonPythonModel(protocol.FrameModel):
    """Triton's Python-backend model interface; settings come from ``config.pbtxt``."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        settings = json.loads(config["parameters"]["gpmask"]["string_value"])
        self.pb_utils = pb_utils
        self.classes = protocol.labels(settings["weathers"])
        self.router = settings.get("router")
        self.choices = [*self.classes, protocol.AUTO] if self.router else self.classes
        self.default = settings["default_weather"]
        self.clear = settings["clear"]
        self.max_size = tuple(settings["max_size"])
        self.multiple = settings["size_multiple"]
        self.graph_batch = settings["graph_batch"]  # the most frames one model call takes
        self.input, self.output = settings["graph_input"], settings["graph_output"]

    def classify(self, frame: np.ndarray) -> str:
        router = self.router
        logits = self._infer("router", router["input"], router["output"],
                             protocol.router_input(frame, tuple(router["input_size"])))
        return router["classes"][int(np.argmax(logits[0]))]

    def restore(self, network: str, frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]
        step = self.graph_batch
        restored = [self._infer(network, self.input, self.output,
                                protocol.frames_to_nchw(frames[start:start + step],
                                                        self.multiple))
                    for start in range(0, len(frames), step)]
        return protocol.nchw_to_frames(np.concatenate(restored), height, width)

    def _infer(self, model: str, input_name: str, output_name: str,
               batch: np.ndarray) -> np.ndarray:
        """One BLS request to ``model``; its error becomes this request's error."""
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=[output_name],
            inputs=[protocol.from_numpy(pb_utils, input_name, batch)])
        response = request.exec()
        if response.has_error():
            raise protocol.RequestError(f"model {model}: {response.error().message()}")
        output = pb_utils.get_output_tensor_by_name(response, output_name)
        return np.array(protocol.to_numpy(output))  # a copy: the response's memory goes
