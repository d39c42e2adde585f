"""Build a masked checkpoint from plain PyTorch files made elsewhere.

A user who trained GGPM with other code has a base state dict (the common values)
and, per weather, a fine-tuned state dict plus a mask. Weather w's network is
``where(mask_w, finetuned_w, base)``: the specific values are the fine-tuned weights
read at the mask. Several weathers may name one fine-tuned file (the paper's code
fine-tunes one network and separates the weathers by their masks only).

Files are read as the paper's code (and WGWS-Net's) writes them, always with
``weights_only=True`` so no pickled code runs:

- state dicts from ``torch.save(net.state_dict())``, possibly wrapped as
  ``{"state_dict": ...}``, possibly with DistributedDataParallel's ``module.`` prefix
  (stripped);
- masks as a dict parameter name -> bool tensor, or as a list of bool tensors in
  ``net.parameters()`` order, where an entry of ``False`` (or ``None``, or a 0-d
  ``False`` tensor) stands for a parameter that had no gradient and so no specific
  elements; or a list of such lists, the history of the last steps, of which the
  last is the mask.

An architecture may declare ``training_only_parameters``: names its original code
registers ahead of all others that its forward pass never reads (``ggpm-unet``: the
paper's six loss-weighting scalars). They are dropped from state dicts and from the
head of mask lists, and every such change is recorded as a note in the checkpoint's
provenance, which ``gpmask import`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.model import build_model

#: Key prefix DistributedDataParallel adds when the wrapper's own state dict is saved.
DDP_PREFIX = "module."


def _load_pth(path: str | os.PathLike) -> Any:
    """Any ``.pth`` object loaded with ``weights_only=True`` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise GpmaskError(f"{path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise GpmaskError(f"{path} is not a readable PyTorch weights file: {exc}") from exc


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A ``.pth`` state dict (name -> tensor), unwrapped from ``{"state_dict": ...}``."""
    state = _load_pth(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GpmaskError(f"{path} does not hold a state dict (name -> tensor)")
    return state


class _ImportReader:
    """Reads one import's files against one architecture, collecting notes on what it changed.

    Args:
        arch: architecture name (for messages).
        parameters: the architecture's parameters in ``net.parameters()`` order (name, shape).
        training_only: names the original code registers first and gpmask leaves out.
    """

    def __init__(
        self, arch: str, parameters: list[tuple[str, torch.Size]], training_only: Sequence[str]
    ) -> None:
        self.arch = arch
        self.parameters = parameters
        self.training_only = tuple(training_only)
        self.notes: list[str] = []
        self._state_dicts: dict[Path, dict[str, torch.Tensor]] = {}

    def state_dict(self, path: str | os.PathLike) -> dict[str, torch.Tensor]:
        """A state dict with the DDP prefix stripped and training-only entries dropped.

        Each file is read once, however many weathers name it.
        """
        key = Path(path).resolve()
        if key not in self._state_dicts:
            self._state_dicts[key] = self._clean_names(load_state_dict(path), path)
        return self._state_dicts[key]

    def mask(self, path: str | os.PathLike) -> dict[str, torch.Tensor]:
        """A mask file in any of the accepted forms as parameter name -> bool tensor."""
        mask = _load_pth(path)
        if isinstance(mask, dict):
            return self._mask_from_dict(self._clean_names(mask, path), path)
        if isinstance(mask, (list, tuple)) and mask and all(
            isinstance(step, (list, tuple)) for step in mask
        ):
            self.notes.append(f"{path}: a history of {len(mask)} masks; using the last")
            mask = mask[-1]
        if isinstance(mask, (list, tuple)):
            return self._mask_from_list(list(mask), path)
        raise GpmaskError(
            f"mask {path}: expected a dict name -> bool tensor or a list of bool tensors in "
            f"net.parameters() order, got {type(mask).__name__}"
        )

    # ------------------------------------------------------------------ internals
    def _clean_names(self, state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
        if state and all(isinstance(k, str) and k.startswith(DDP_PREFIX) for k in state):
            state = {name[len(DDP_PREFIX):]: value for name, value in state.items()}
            self.notes.append(
                f"{path}: stripped the {DDP_PREFIX!r} prefix (DistributedDataParallel)"
            )
        dropped = [name for name in self.training_only if name in state]
        if dropped:
            state = {name: value for name, value in state.items() if name not in dropped}
            self.notes.append(
                f"{path}: dropped the training-only {', '.join(dropped)} ({self.arch} does "
                f"not use them)"
            )
        return state

    def _mask_from_dict(self, mask: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
        known = {name for name, _ in self.parameters}
        masks = {}
        for name, value in mask.items():
            if name not in known:
                raise GpmaskError(f"mask {path}: {name!r} is not a parameter of {self.arch}")
            if _has_no_elements(value):
                continue
            if not isinstance(value, torch.Tensor) or value.dtype != torch.bool:
                kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
                raise GpmaskError(f"mask {path}: {name!r} is {kind}, not bool")
            masks[name] = value  # shapes are checked against the weights when they meet
        return masks

    def _mask_from_list(self, entries: list[Any], path: str | os.PathLike) -> dict[str, Any]:
        """Entries matched to parameters by position, after the training-only head if present."""
        count, scalars = len(self.parameters), len(self.training_only)
        with_head = scalars > 0 and (
            len(entries) == count + scalars
            or (len(entries) != count and all(_is_scalar(e) for e in entries[:scalars]))
        )
        expected = [(name, torch.Size()) for name in self.training_only] if with_head else []
        head = len(expected)
        expected += self.parameters
        masks = {}
        for index, ((name, shape), value) in enumerate(zip(expected, entries, strict=False)):
            where = f"mask {path}: entry {index} ({name})"
            value = torch.tensor(value) if isinstance(value, bool) else value
            if value is not None and not isinstance(value, torch.Tensor):
                raise GpmaskError(f"{where} is {type(value).__name__}, not a bool tensor")
            if value is not None and value.dtype != torch.bool:
                raise GpmaskError(f"{where} is {value.dtype}, not bool")
            if index < head and _is_scalar(value):
                continue  # a training-only scalar: dropped
            if index >= head and _has_no_elements(value):
                continue  # the parameter had no gradient: no specific elements
            if value.shape != shape:
                hint = " (a scalar entry may only be False)" if value.dim() == 0 else ""
                raise GpmaskError(
                    f"{where}: shape {tuple(value.shape)} does not match the parameter's "
                    f"{tuple(shape)}{hint}"
                )
            masks[name] = value
        if len(entries) != len(expected):
            counts = f"mask {path}: {len(entries)} entries, but {self.arch} has {count} parameters"
            if scalars:
                counts += f" ({count + scalars} with its training-only ones)"
            if len(entries) < len(expected):
                missing = expected[len(entries)][0]
                raise GpmaskError(f"{counts}: no entry for {missing} (entry {len(entries)})")
            raise GpmaskError(f"{counts}: entry {len(expected)} is past the last parameter")
        if head:
            self.notes.append(
                f"{path}: dropped the {head} leading entries, for the training-only "
                f"{', '.join(self.training_only)}"
            )
        return masks


def _has_no_elements(value: Any) -> bool:
    """``None``, ``False`` or a 0-d ``False`` tensor: a parameter without specific elements."""
    if value is None or value is False:
        return True
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not bool(value)


def _is_scalar(value: Any) -> bool:
    """An entry a 0-d parameter's mask can be: ``None``, a bool, or a 0-d tensor."""
    return value is None or isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and value.dim() == 0
    )


def import_checkpoint(
    arch: str,
    arch_kwargs: dict[str, Any],
    base: str | os.PathLike,
    weathers: dict[str, tuple[str | os.PathLike, str | os.PathLike]],
) -> MaskedCheckpoint:
    """A :class:`MaskedCheckpoint` from a base state dict and per-weather (weights, mask) files.

    What was changed on the way in (prefix stripped, training-only entries dropped, the
    last of a mask history taken) is listed in ``checkpoint.provenance["notes"]``.
    """
    model = build_model(arch, arch_kwargs)
    files = _ImportReader(
        arch,
        [(name, param.shape) for name, param in model.named_parameters()],
        getattr(model, "training_only_parameters", ()),
    )
    common = files.state_dict(base)
    weights, masks = {}, {}
    for weather, (weights_path, mask_path) in weathers.items():
        weights[weather] = files.state_dict(weights_path)
        masks[weather] = files.mask(mask_path)
    provenance = {
        "method": "imported",
        "base": str(base),
        "weathers": {w: [str(p) for p in paths] for w, paths in weathers.items()},
        "notes": files.notes,
    }
    return MaskedCheckpoint.from_weights(arch, arch_kwargs, common, weights, masks, provenance)
