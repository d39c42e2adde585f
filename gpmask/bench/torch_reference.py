"""Torch eager, the reference every deployed backend is compared with, and torch.compile.

The bundle holds graphs, not the network's Python code and weights, so the reference
is rebuilt from the masked checkpoint the bundle was exported from. The manifest
records that checkpoint's sha256; a checkpoint given by the user is checked against
it, and without one the shipped demo checkpoint is used when it is the recorded one.
Torch lives here, in the benchmark, and never in :mod:`gpmask.runtime`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file
from gpmask.masking.checkpoint import SHIPPED_CHECKPOINTS, MaskedCheckpoint, resolve_checkpoint
from gpmask.runtime.backends.base import Backend


def reference_checkpoint(
    bundle: Bundle, checkpoint: str | None
) -> tuple[MaskedCheckpoint | None, str]:
    """The bundle's source checkpoint, or None and the reason torch cannot run.

    Returns ``(checkpoint, source)`` where ``source`` names the file used, or
    ``(None, reason)``. A checkpoint the user names that is missing or is not the one
    the bundle was exported from is refused: that is bad input, not a missing backend.
    """
    recorded = bundle.checkpoint_sha256
    if checkpoint is not None:
        path = resolve_checkpoint(checkpoint)
        if not path.is_file():
            raise GpmaskError(f"checkpoint {checkpoint} not found")
        if recorded is not None and sha256_file(path) != recorded:
            raise GpmaskError(f"checkpoint {path} is not the one bundle {bundle.root} was "
                              f"exported from (sha256 differs from the manifest's)")
        loaded = MaskedCheckpoint.load(path)
        _check_same_network(loaded, bundle, path)
        return loaded, str(path)
    if recorded is None:
        return None, ("the bundle records no checkpoint file (exported from memory); "
                      "pass --checkpoint")
    demo = SHIPPED_CHECKPOINTS["demo"]
    if demo.is_file() and sha256_file(demo) == recorded:
        return MaskedCheckpoint.load(demo), "demo"
    return None, (f"the bundle's checkpoint (sha256 {recorded[:12]}...) is not the shipped "
                  f"demo; pass --checkpoint PATH")


def _check_same_network(checkpoint: MaskedCheckpoint, bundle: Bundle, path: object) -> None:
    """Refuse a checkpoint of another architecture or weathers than the bundle's: for a
    bundle exported from memory there is no file hash to compare, but the manifest keeps
    the checkpoint's architecture, and a torch reference of another network would make
    every ratio and PSNR of the report meaningless."""
    recorded = bundle.checkpoint_metadata
    ours = {"arch": checkpoint.arch, "arch_kwargs": checkpoint.arch_kwargs}
    theirs = {key: recorded.get(key) for key in ours}
    missing = [w for w in bundle.weathers if w not in checkpoint.weathers]
    if (recorded.get("arch") is not None and ours != theirs) or missing:
        raise GpmaskError(f"checkpoint {path} is not the one bundle {bundle.root} was exported "
                          f"from (its network is {ours}, the bundle's {theirs}"
                          + (f"; it lacks {', '.join(missing)}" if missing else "") + ")")


class TorchEagerBackend(Backend):
    """Every weather of a checkpoint as an eager PyTorch module, behind the runtime's interface.

    Args:
        checkpoint: the masked checkpoint; each weather's network is baked from it.
        weathers: the weathers to prepare.
        device: ``cpu`` or ``cuda[:N]``.
        threads: intra-op threads on the CPU (the same count the ONNX Runtime sessions use).
    """

    def __init__(self, checkpoint: MaskedCheckpoint, weathers: list[str], device: str,
                 threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.name = "torch"
        self.weathers = list(weathers)
        self.device = torch.device(device)
        self.models: dict[str, Any] = {
            weather: checkpoint.build_model(weather).eval().to(self.device)
            for weather in weathers
        }

    def _forward(self, weather: str, batch: Any) -> Any:
        return self.models[weather](batch)

    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            restored = self._forward(weather, torch.from_numpy(batch).to(self.device))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return restored.cpu().numpy()

    def close(self) -> None:
        self.models.clear()


def torch_compile_refusal() -> str | None:
    """Why ``torch.compile`` cannot run here, or None when it can."""
    import torch

    if not torch._dynamo.is_dynamo_supported():
        return "torch.compile (dynamo) is not supported on this Python or platform"
    if torch_device() == "cpu" and not any(
            shutil.which(name) for name in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        return "inductor builds CPU kernels with a C++ compiler, and none was found (g++)"
    return None


def torch_device() -> str:
    """Where the torch references run: the first CUDA GPU when torch has one, else the CPU."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class TorchCompileBackend(TorchEagerBackend):
    """The torch eager modules through ``torch.compile`` (inductor), every weather one function.

    The weathers' networks differ only in their values, so one compiled function takes a
    weather's parameters as inputs (``torch.func.functional_call``): switching weather
    reuses the compiled code. Compiling happens on the first frame (and once more when
    the frame size first changes, after which shapes are compiled as dynamic), which is
    why ``gpmask bench`` runs it only when asked (``--backends ...,torch-compile``).
    """

    def __init__(self, checkpoint: MaskedCheckpoint, weathers: list[str], device: str,
                 threads: int) -> None:
        import torch
        from torch.func import functional_call

        super().__init__(checkpoint, weathers, device, threads)
        self.name = "torch-compile"
        module = self.models[self.weathers[0]]
        self.values = {weather: {name: value.detach() for name, value in
                                 (*model.named_parameters(), *model.named_buffers())}
                       for weather, model in self.models.items()}
        self.compiled = torch.compile(
            lambda values, batch: functional_call(module, values, (batch,)))

    def _forward(self, weather: str, batch: Any) -> Any:
        return self.compiled(self.values[weather], batch)
