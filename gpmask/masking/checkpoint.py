"""The masked checkpoint: common values, per-weather masks and specific values in one file.

File format (``*.gpmask.safetensors``):

- ``common/<name>``: every state-dict entry at full shape (the all-weather values C);
- ``mask/<weather>/<name>``: uint8, ``numpy.packbits`` of the flattened C-order
  boolean mask M_w (default big-endian bit order);
- ``specific/<weather>/<name>``: 1-D, the weather's values at M_w's set positions in
  flattened C order (S_w);
- ``__metadata__["gpmask"]``: JSON with ``format_version``, ``arch``, ``arch_kwargs``,
  ``weathers`` (ordered), ``params`` (name -> shape, dtype) and ``provenance`` (how the
  checkpoint was made).

A parameter with no specific element for a weather omits both of its entries.
Weather w's dense weights are W_w = C with W_w[M_w] = S_w (:meth:`MaskedCheckpoint.bake`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors
import safetensors.numpy

from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path

FORMAT_VERSION = 1
METADATA_KEY = "gpmask"
COMMON = "common"
_WEATHER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_ASSETS = Path(__file__).resolve().parent.parent / "assets"

#: Names that stand for a checkpoint shipped inside the package.
SHIPPED_CHECKPOINTS = {"demo": _ASSETS / "demo.gpmask.safetensors"}


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """The file a checkpoint argument names: a path, or a shipped name such as ``demo``."""
    path = Path(path_or_name)
    if not path.is_file() and str(path_or_name) in SHIPPED_CHECKPOINTS:
        return SHIPPED_CHECKPOINTS[str(path_or_name)]
    return path


class MaskDensity(NamedTuple):
    """Fraction of elements that are weather-specific, overall and per parameter."""

    overall: float
    per_parameter: dict[str, float]


class MaskedCheckpoint:
    """A network's common values plus, per weather, a mask and that weather's specific values.

    Args:
        arch: architecture name or ``module:Class`` import path (see :mod:`gpmask.model`).
        arch_kwargs: keyword arguments the architecture is built with.
        common: state-dict name -> array (every parameter and buffer).
        masks: weather -> parameter name -> boolean array of the parameter's shape.
        specific: weather -> parameter name -> 1-D array with one value per set mask element.
        provenance: free-form JSON-able description of how the values were made.

    Every argument is checked; bad input raises :class:`GpmaskError` naming the tensor.
    """

    def __init__(
        self,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        common: Mapping[str, np.ndarray],
        masks: Mapping[str, Mapping[str, np.ndarray]],
        specific: Mapping[str, Mapping[str, np.ndarray]],
        provenance: Mapping[str, Any] | None = None,
        weathers: list[str] | None = None,
    ) -> None:
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.common = {name: np.asarray(value) for name, value in common.items()}
        self.weathers = list(weathers if weathers is not None else masks)
        self.masks = {w: {n: np.asarray(m, dtype=bool) for n, m in masks[w].items()} for w in masks}
        self.specific = {w: {n: np.asarray(v) for n, v in specific[w].items()} for w in specific}
        self.provenance = dict(provenance or {})
        self._validate()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_weights(
        cls,
        arch: str,
        arch_kwargs: Mapping[str, Any],
        common: Mapping[str, Any],
        weather_weights: Mapping[str, Mapping[str, Any]],
        masks: Mapping[str, Mapping[str, Any]],
        provenance: Mapping[str, Any] | None = None,
    ) -> MaskedCheckpoint:
        """Build from dense weights: S_w is weather w's weights read at its mask.

        ``common`` and each ``weather_weights[w]`` are state dicts (torch tensors or
        arrays); ``masks[w]`` maps parameter names to boolean tensors or arrays. A
        parameter absent from ``masks[w]`` has no specific elements for w.
        """
        common_np = {name: _to_numpy(value) for name, value in common.items()}
        unknown = set(weather_weights) ^ set(masks)
        if unknown:
            raise GpmaskError(f"weathers {sorted(unknown)} need both weights and a mask")
        mask_np: dict[str, dict[str, np.ndarray]] = {}
        specific_np: dict[str, dict[str, np.ndarray]] = {}
        for weather, weights in weather_weights.items():
            mask_np[weather], specific_np[weather] = {}, {}
            for name, mask in masks[weather].items():
                mask_arr = _to_numpy(mask).astype(bool)
                if name not in weights:
                    raise GpmaskError(f"weights of {weather!r} lack masked parameter {name!r}")
                values = _to_numpy(weights[name])
                if values.shape != mask_arr.shape:
                    raise GpmaskError(
                        f"mask/{weather}/{name}: shape {mask_arr.shape} does not match "
                        f"the parameter's {values.shape}"
                    )
                if mask_arr.any():
                    mask_np[weather][name] = mask_arr
                    specific_np[weather][name] = values[mask_arr]
        return cls(
            arch,
            arch_kwargs,
            common_np,
            mask_np,
            specific_np,
            provenance,
            weathers=list(weather_weights),
        )

    # ----------------------------------------------------------------- validation
    def _validate(self) -> None:
        if len(set(self.weathers)) != len(self.weathers):
            dupes = sorted({w for w in self.weathers if self.weathers.count(w) > 1})
            raise GpmaskError(f"duplicate weather names: {', '.join(dupes)}")
        for weather in self.weathers:
            if weather == COMMON or not _WEATHER_NAME.match(weather):
                raise GpmaskError(
                    f"invalid weather name {weather!r}: use letters, digits, '_' or '-', "
                    f"not {COMMON!r}"
                )
        extra = (set(self.masks) | set(self.specific)) - set(self.weathers)
        if extra:
            raise GpmaskError(f"masks or values for unlisted weathers: {sorted(extra)}")
        for name, value in self.common.items():
            _check_finite(f"{COMMON}/{name}", value)
        for weather in self.weathers:
            masks = self.masks.get(weather, {})
            values = self.specific.get(weather, {})
            if set(masks) != set(values):
                odd = sorted(set(masks) ^ set(values))[0]
                raise GpmaskError(f"{weather}/{odd}: a mask needs specific values and vice versa")
            for name, mask in masks.items():
                key = f"mask/{weather}/{name}"
                if name not in self.common:
                    raise GpmaskError(f"{key}: no parameter {name!r} in the common values")
                if mask.shape != self.common[name].shape:
                    raise GpmaskError(
                        f"{key}: shape {mask.shape} does not match the parameter's "
                        f"{self.common[name].shape}"
                    )
                spec = values[name]
                if spec.ndim != 1 or spec.size != int(mask.sum()):
                    raise GpmaskError(
                        f"specific/{weather}/{name}: {spec.size} values for a mask with "
                        f"{int(mask.sum())} set elements"
                    )
                _check_finite(f"specific/{weather}/{name}", spec)

    # ----------------------------------------------------------------- file I/O
    @classmethod
    def load(cls, path: str | os.PathLike) -> MaskedCheckpoint:
        """Read a ``*.gpmask.safetensors`` file (or a shipped name such as ``demo``)."""
        path = resolve_checkpoint(path)
        if not path.is_file():
            raise GpmaskError(f"checkpoint {path} does not exist")
        try:
            with safetensors.safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises several types for damaged files
            raise GpmaskError(f"{path} is not a readable safetensors file: {exc}") from exc
        if METADATA_KEY not in metadata:
            raise GpmaskError(f"{path} is not a gpmask checkpoint (no {METADATA_KEY!r} metadata)")
        try:
            meta = json.loads(metadata[METADATA_KEY])
            version, weathers = meta["format_version"], list(meta["weathers"])
            params, arch = meta["params"], meta["arch"]
            arch_kwargs = meta.get("arch_kwargs", {})
            if not isinstance(arch, str) or not isinstance(arch_kwargs, dict):
                raise TypeError("'arch' must be a name and 'arch_kwargs' an object")
        except (ValueError, KeyError, TypeError) as exc:
            detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
            raise GpmaskError(f"{path}: damaged gpmask metadata ({detail})") from exc
        if version > FORMAT_VERSION:
            raise GpmaskError(
                f"{path} has format version {version}; this gpmask reads up to {FORMAT_VERSION}"
            )
        common, masks, specific = {}, {w: {} for w in weathers}, {w: {} for w in weathers}
        for key, value in tensors.items():
            kind, _, rest = key.partition("/")
            if kind == COMMON:
                common[rest] = value
                continue
            weather, _, name = rest.partition("/")
            if kind not in ("mask", "specific") or weather not in masks:
                raise GpmaskError(f"{path}: unexpected tensor {key!r} (unknown weather or kind)")
            if kind == "specific":
                specific[weather][name] = value
            elif name not in params:
                raise GpmaskError(f"{key}: no parameter {name!r} in the checkpoint")
            else:
                masks[weather][name] = _unpack_mask(key, value, params[name]["shape"])
        for name, info in params.items():
            if name not in common:
                raise GpmaskError(f"{path}: common/{name} is missing")
            if list(common[name].shape) != list(info["shape"]):
                raise GpmaskError(
                    f"common/{name}: shape {list(common[name].shape)} but metadata says "
                    f"{info['shape']}"
                )
        return cls(
            arch,
            arch_kwargs,
            common,
            masks,
            specific,
            meta.get("provenance", {}),
            weathers=weathers,
        )

    def metadata(self) -> dict[str, Any]:
        """The JSON metadata written under ``__metadata__["gpmask"]``."""
        return {
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "weathers": self.weathers,
            "params": {
                name: {"shape": list(value.shape), "dtype": str(value.dtype)}
                for name, value in self.common.items()
            },
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the checkpoint atomically (a crash leaves any previous file intact)."""
        tensors = {f"{COMMON}/{name}": np.ascontiguousarray(v) for name, v in self.common.items()}
        for weather in self.weathers:
            for name, mask in self.masks.get(weather, {}).items():
                tensors[f"mask/{weather}/{name}"] = np.packbits(mask.reshape(-1))
                tensors[f"specific/{weather}/{name}"] = np.ascontiguousarray(
                    self.specific[weather][name]
                )
        metadata = {METADATA_KEY: json.dumps(self.metadata(), sort_keys=True)}
        with atomic_path(path) as tmp:
            safetensors.numpy.save_file(tensors, str(tmp), metadata=metadata)

    # ----------------------------------------------------------------- queries
    def _check_weather(self, weather: str) -> None:
        if weather != COMMON and weather not in self.weathers:
            raise GpmaskError(
                f"unknown weather {weather!r}; this checkpoint has: "
                f"{', '.join([COMMON, *self.weathers])}"
            )

    def bake_numpy(self, weather: str) -> dict[str, np.ndarray]:
        """Dense weights of ``weather`` (or ``"common"``) as arrays: W = C, W[M_w] = S_w."""
        self._check_weather(weather)
        baked = {name: value.copy() for name, value in self.common.items()}
        if weather != COMMON:
            for name, mask in self.masks.get(weather, {}).items():
                baked[name][mask] = self.specific[weather][name]
        return baked

    def bake(self, weather: str) -> dict[str, Any]:
        """Dense state dict (torch tensors) of ``weather`` or ``"common"``."""
        import torch

        return {name: torch.from_numpy(value) for name, value in self.bake_numpy(weather).items()}

    def build_model(self, weather: str) -> Any:
        """The ``nn.Module`` of the checkpoint's architecture with ``weather``'s baked weights."""
        from gpmask.model import build_model

        model = build_model(self.arch, self.arch_kwargs)
        try:
            missing, unexpected = model.load_state_dict(self.bake(weather), strict=False)
        except RuntimeError as exc:  # tensors of other shapes than the architecture's
            detail = " ".join(str(exc).split())
            raise GpmaskError(f"checkpoint does not fit architecture {self.arch!r} with "
                              f"{self.arch_kwargs}: {detail[:300]}") from exc
        if missing or unexpected:
            raise GpmaskError(
                f"checkpoint does not fit architecture {self.arch!r}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        return model.eval()

    def parameter_names(self) -> list[str]:
        """State-dict names in file order."""
        return list(self.common)

    def num_parameters(self) -> int:
        """Element count of the dense network (the same for every weather)."""
        return int(sum(value.size for value in self.common.values()))

    def density(self, weather: str) -> MaskDensity:
        """Fraction of elements specific to ``weather``, overall and per parameter."""
        self._check_weather(weather)
        masks = self.masks.get(weather, {})
        per_param = {
            name: float(masks[name].mean()) if name in masks else 0.0 for name in self.common
        }
        selected = sum(int(m.sum()) for m in masks.values())
        return MaskDensity(selected / max(self.num_parameters(), 1), per_param)

    def _mask_or_empty(self, weather: str, name: str) -> np.ndarray:
        mask = self.masks.get(weather, {}).get(name)
        return mask if mask is not None else np.zeros(self.common[name].shape, bool)

    def overlap(self, first: str, second: str) -> float:
        """Intersection over union of two weathers' masks, over all parameters."""
        self._check_weather(first)
        self._check_weather(second)
        inter = union = 0
        for name in self.common:
            a, b = self._mask_or_empty(first, name), self._mask_or_empty(second, name)
            inter += int(np.logical_and(a, b).sum())
            union += int(np.logical_or(a, b).sum())
        return inter / union if union else 0.0

    def overlap_per_parameter(self, first: str, second: str) -> dict[str, float]:
        """Intersection over union of two weathers' masks in each parameter (0 where both
        masks are empty)."""
        self._check_weather(first)
        self._check_weather(second)
        result = {}
        for name in self.common:
            a, b = self._mask_or_empty(first, name), self._mask_or_empty(second, name)
            union = int(np.logical_or(a, b).sum())
            result[name] = int(np.logical_and(a, b).sum()) / union if union else 0.0
        return result


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _check_finite(key: str, value: np.ndarray) -> None:
    if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
        bad = int((~np.isfinite(value)).sum())
        raise GpmaskError(f"{key}: {bad} NaN or Inf values")


def _unpack_mask(key: str, packed: np.ndarray, shape: list[int]) -> np.ndarray:
    """Unpack a ``numpy.packbits`` mask, checking its length fits the parameter's shape."""
    count = int(np.prod(shape)) if shape else 1
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (count + 7) // 8:
        raise GpmaskError(
            f"{key}: packed mask of {packed.size} bytes ({packed.dtype}) does not fit a "
            f"parameter of shape {list(shape)} ({(count + 7) // 8} bytes expected)"
        )
    bits = np.unpackbits(packed)
    if bits[count:].any():
        raise GpmaskError(f"{key}: padding bits set past the parameter's {count} elements")
    return bits[:count].astype(bool).reshape(shape)
