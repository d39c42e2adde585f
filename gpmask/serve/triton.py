"""Serving a bundle on Triton: the one-model repository ``gpmask serve`` runs.

The repository is written into a temporary folder when the server starts and removed
when it stops; the user's bundle is only read. It holds model ``gpmask``
(:mod:`gpmask.serve.restorer_model` on the Python backend), whose ``model.py`` puts
the folder this gpmask is imported from first on ``sys.path``: Triton's backend stub
ignores ``PYTHONPATH``, and the stub must run the same gpmask as the command that
started it (a checkout, not another installed copy).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import gpmask
from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.precision import AUTO as AUTO_PRECISION
from gpmask.precision import check_precision
from gpmask.serve import protocol
from gpmask.serve.config import Batching, Tensor, model_config
from gpmask.serve.server import Endpoints, TritonServer

#: The largest frame a served request may hold, by default (height, width): 4K UHD.
MAX_SIZE = (2160, 3840)

_MODEL_PY = '''"""Written by gpmask serve: the model is gpmask/serve/restorer_model.py."""
import sys

sys.path.insert(0, {root!r})
from gpmask.serve.restorer_model import TritonPythonModel  # noqa: E402,F401
'''


@dataclass(frozen=True)
class ServeSettings:
    """What ``gpmask serve`` runs: the Restorer's backend and precision, the default
    weather, what ``clear`` frames get, the largest frame, batching and instances."""

    backend: str = "auto"
    precision: str = AUTO_PRECISION
    weather: str | None = None
    clear: str = "pass"
    max_size: tuple[int, int] = MAX_SIZE
    batching: Batching = field(default_factory=Batching)
    instances: int = 1

    def default_weather(self, bundle: Bundle) -> str:
        """The weather of a request that names none: ``--weather``, else ``auto`` when
        the bundle has a router, else the bundle's default weather (as ``gpmask run``)."""
        if self.weather is None:
            return protocol.AUTO if bundle.router else bundle.default_weather
        choices = protocol.labels(bundle.weathers) + [protocol.AUTO]
        if self.weather not in choices:
            raise GpmaskError(f"--weather {self.weather!r}: not one of {', '.join(choices)} "
                              f"(a served request carries no frame index, so there are no "
                              f"schedule files here)")
        if self.weather == protocol.AUTO and not bundle.router:
            raise GpmaskError(f"bundle {bundle.root} has no weather router for 'auto'; train "
                              f"one with `gpmask train-router {bundle.root}` or pass "
                              f"--weather NAME")
        return self.weather


def write_serve_repository(folder: Path, bundle: Bundle, settings: ServeSettings,
                           status_file: Path) -> None:
    """Model ``gpmask`` for ``bundle`` in the (new, empty) repository ``folder``."""
    check_precision(settings.precision, "--precision", allow_auto=True)
    model = folder / protocol.MODEL
    (model / "1").mkdir(parents=True)
    root = str(Path(gpmask.__file__).resolve().parent.parent)
    (model / "1" / "model.py").write_text(_MODEL_PY.format(root=root))
    classes = protocol.labels(bundle.weathers)
    (model / protocol.LABELS_FILE).write_text("\n".join(classes) + "\n")
    parameters = {
        "bundle": str(bundle.root.resolve()), "backend": settings.backend,
        "precision": settings.precision, "weather": settings.default_weather(bundle),
        "clear": settings.clear, "max_size": "x".join(map(str, settings.max_size)),
        "status_file": str(status_file),
    }
    (model / "config.pbtxt").write_text(model_config(
        protocol.MODEL, "python", inputs=[frame_tensor(protocol.IMAGE, ragged=True)],
        outputs=[frame_tensor(protocol.RESTORED), weather_tensor(classes)],
        batching=settings.batching, instances=settings.instances, parameters=parameters))


def frame_tensor(name: str, ragged: bool = False) -> Tensor:
    """UINT8 [H, W, 3] RGB frames of any size (the batch dimension is Triton's)."""
    return Tensor(name, "TYPE_UINT8", (-1, -1, 3), allow_ragged_batch=ragged)


def weather_tensor(classes: list[str]) -> Tensor:
    """The one-hot ``weather`` output, labelled for Triton's classification extension."""
    return Tensor(protocol.WEATHER, "TYPE_FP32", (len(classes),),
                  label_filename=protocol.LABELS_FILE)


@contextlib.contextmanager
def serve_bundle(bundle: Bundle | str | os.PathLike, settings: ServeSettings = ServeSettings(),
                 endpoints: Endpoints | None = None, log: IO[bytes] | None = None,
                 timeout_s: float = 180.0) -> Iterator[TritonServer]:
    """Serve ``bundle`` on Triton while the block runs; yields the running server, whose
    ``loaded`` attribute lists what the model instances loaded (backend, precision)."""
    bundle = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    with tempfile.TemporaryDirectory(prefix="gpmask-serve-") as workspace:
        repository = Path(workspace) / "models"
        status = Path(workspace) / "instance"
        write_serve_repository(repository, bundle, settings, status)
        server = TritonServer(repository, endpoints or Endpoints(), log=log)
        server.start(timeout_s)
        try:
            server.loaded = sorted({
                "{backend}, {precision}".format(**json.loads(path.read_text()))
                for path in Path(workspace).glob("instance.*")})
            yield server
        finally:
            server.stop()
