"""The model ``gpmask serve`` runs inside Triton's Python backend: a bundle's Restorer.

Each model instance (``--instances N``) is its own stub process holding one
:class:`~gpmask.runtime.Restorer` with every weather loaded, so instances restore in
parallel without sharing a Python interpreter. Batching, grouping and per-request
errors are :class:`~gpmask.serve.protocol.FrameModel`'s.

``auto`` classifies each frame on its own with the bundle's router
(:meth:`~gpmask.runtime.routing.ClassifierRouter.classify`, the decision ``gpmask run``
takes): requests carry no stream, so there is no hysteresis to apply; a client that
wants one routes on its side and sends the weather.
"""

from __future__ import annotations

import json

import numpy as np

from gpmask.serve import protocol

try:  # present inside Triton's Python backend only
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (docs, linters)
    pb_utils = None


class TritonPythonModel(protocol.FrameModel):
    """Triton's Python-backend model interface (``initialize``, ``execute``, ``finalize``)."""

    def initialize(self, args: dict[str, str]) -> None:
        from gpmask.runtime import Restorer
        from gpmask.runtime.routing import ClassifierRouter

        config = json.loads(args["model_config"])
        settings = {key: value["string_value"] for key, value in config["parameters"].items()}
        self.pb_utils = pb_utils
        self.restorer = Restorer(settings["bundle"], backend=settings["backend"],
                                 precision=settings["precision"])
        bundle = self.restorer.bundle
        self.default = settings["weather"]
        self.clear = settings["clear"]
        self.max_size = tuple(int(v) for v in settings["max_size"].split("x"))
        self.classes = protocol.labels(bundle.weathers)
        self.router = ClassifierRouter.from_bundle(bundle) if bundle.router else None
        self.choices = [*self.classes, protocol.AUTO] if self.router else self.classes
        status = settings.get("status_file")
        if status:  # tells `gpmask serve` which backend the instance loaded
            with open(f"{status}.{args['model_instance_name']}", "w") as file:
                json.dump({"backend": self.restorer.backend_name,
                           "precision": self.restorer.precision}, file)

    def classify(self, frame: np.ndarray) -> str:
        return self.router.classify(np.ascontiguousarray(frame[:, :, ::-1]))  # takes BGR

    def restore(self, network: str, frames: np.ndarray) -> np.ndarray:
        from gpmask.errors import GpmaskError

        try:
            return self.restorer.restore_batch(frames, network)
        except GpmaskError as exc:
            raise protocol.RequestError(str(exc)) from exc

    def finalize(self) -> None:
        self.restorer.close()

