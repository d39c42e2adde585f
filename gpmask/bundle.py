"""The deployment bundle: a folder of ONNX graphs, shared weight files and ``manifest.json``.

This module is the contract between the parts: export writes a bundle, calibration
and engine builds add to it, the runtime reads it. It imports neither torch nor onnx,
so an edge device can load a bundle with numpy alone.

``manifest.json`` (``format_version`` 1)::

    {
      "format_version": 1,
      "layout": "compact",                             # or "dense" (absent: dense)
      "weathers": ["rain", "raindrop", "snow"],        # ordered as in the checkpoint
      "default_weather": "rain",
      "input":  {"name": "image",    "layout": "NCHW", "dtype": "float32", "color": "RGB",
                 "range": [0.0, 1.0], "size_multiple": 4, "shape": [null, 3, null, null]},
      "output": {"name": "restored", ... same keys ...},
      "graphs": {"<weather>|common": {"fp32": {"path": "rain.onnx", "sha256": "...",
                                               "layout": "compact"},
                                      "fp16": {...}, "int8": {...}, ...}},
      "weights": [{"path": "weights.bin", "sha256": "...", "bytes": 123}, ...],
      "engines": {"<weather>|common": {"<precision>": {"path": "engines/rain.fp16.engine",
                   "sha256": "...", "tensorrt_version": "10.3.0", "gpu": "...",
                   "compute_capability": "8.7", "shapes": {...}}}},
      "router": {"path": "router.onnx", "sha256": "...", "classes": ["clear", ...],
                 "input_size": [96, 96],                 # only when a router was trained
                 "accuracy": 0.6, "accuracy_per_class": {"clear": ..., ...},
                 "heldout_frames": 64, "training": {...}},  # held-out synthetic accuracy
      "checkpoint": {"sha256": "...", "metadata": {...}},   # sha256 null when exported from
                                                           # memory; metadata without "params"
      "versions": {"gpmask": "...", "torch": "...", "onnx": "...", "onnxruntime": "...",
                   "onnx_opset": 18},
      "verification": {"status": "passed", "report": "reports/export.json"}  # or "skipped"
    }

Every path is relative to the bundle folder. :mod:`gpmask.bundle_schema` holds the JSON
Schema of this layout; :meth:`Bundle.open` validates every manifest against it and checks
every file against its sha256 before any verb reads the bundle.

``layout`` (a string, ``"compact"`` or ``"dense"``) says how the export stored the
weathers: ``dense`` graphs hold their full weights (a tensor identical in two graphs is
stored once); ``compact`` graphs read the common weights, stored once, and rebuild
their own from a mask or position steps and values with standard ONNX operators
(:mod:`gpmask.export.compact`). Each graph record repeats the layout of that graph
(``"layout"``, same two values): in a compact bundle the fp32 and fp16 graphs are
compact and the int8 ones dense. A consumer that runs graphs with ONNX Runtime needs
nothing more (its constant folding evaluates the rebuild); one that needs plain weight
initializers folds the graph first (``gpmask.export.compact.fold_rebuild``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file, write_text_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COMMON = "common"
#: Precisions a bundle holds graphs (or engines) of. A new one is added here and given a
#: recipe in gpmask.calibration.
GRAPH_PRECISIONS = ("fp32", "fp16", "int8", "int8-cpu", "int8-openvino")
#: Precisions a backend computes from another precision's graphs, with no graphs of their
#: own: precision -> the graph precision it reads (OpenVINO's bfloat16 inference of the
#: fp32 graphs; see gpmask.runtime.backends.openvino).
HINTED_PRECISIONS = {"bf16": "fp32"}
#: Every precision gpmask knows, in one place: calibrate, build, bench and the runtime
#: refuse any other name with this list.
PRECISIONS = (*GRAPH_PRECISIONS, *HINTED_PRECISIONS)


def check_precision(precision: str, option: str | None = None) -> str:
    """``precision`` if gpmask knows it, else a :class:`GpmaskError` listing the known ones
    (prefixed with the command-line ``option`` that gave it, if any)."""
    if precision not in PRECISIONS:
        where = f"{option}: " if option else ""
        raise GpmaskError(f"{where}unknown precision {precision!r}; known precisions: "
                          f"{', '.join(PRECISIONS)}")
    return precision


def is_bundle(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a gpmask manifest (damaged bundles included), so that
    ``--force`` may replace it; any other folder is the user's (see gpmask.fileio)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format_version", "weathers", "graphs"} <= set(manifest)


#: Initializers of a compact graph that only its weight rebuild reads are named with
#: this prefix: ONNX Runtime folds them away when it creates the session.
COMPACT_PREFIX = "compact/"


class Bundle:
    """A bundle folder and its manifest.

    Attributes:
        root: the bundle folder.
        manifest: the parsed ``manifest.json`` (a plain dict; see the module docstring).
    """

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        #: relative path -> the sha256 it was verified (or recorded) with, so that a file
        #: checked once by this object is not hashed again before each reader.
        self._verified: dict[str, str] = {}

    @classmethod
    def open(cls, root: str | os.PathLike, verify: bool = True) -> Bundle:
        """Read and validate ``root/manifest.json``, then check every file it lists.

        A missing manifest, one that is not JSON or does not fit the schema
        (:mod:`gpmask.bundle_schema`), a newer format, and (with ``verify``) a missing
        or modified file are refused, each with a :class:`GpmaskError` naming it. This is
        the one place every verb opens a bundle, so none reads unverified files.
        ``verify=False`` is for ``inspect``, which reports damage instead, and for a
        caller re-opening a bundle it has verified (the backends still check the files
        they read).
        """
        from gpmask.bundle_schema import validate_manifest

        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise GpmaskError(f"{root} is not a gpmask bundle (no {MANIFEST})")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise GpmaskError(f"{path}: unreadable manifest ({exc})") from exc
        if isinstance(manifest, dict) and isinstance(manifest.get("format_version"), int) \
                and manifest["format_version"] > FORMAT_VERSION:
            raise GpmaskError(
                f"{path}: bundle format {manifest['format_version']} is newer than this "
                f"gpmask reads ({FORMAT_VERSION}); upgrade gpmask"
            )
        validate_manifest(manifest, path)
        bundle = cls(root, manifest)
        if verify:
            bundle.verify()
        return bundle

    # ----------------------------------------------------------------- queries
    @property
    def weathers(self) -> list[str]:
        """Weather names, in checkpoint order (``common`` is not one of them)."""
        return list(self.manifest["weathers"])

    @property
    def default_weather(self) -> str:
        return self.manifest.get("default_weather", self.weathers[0])

    @property
    def size_multiple(self) -> int:
        return int(self.manifest["input"].get("size_multiple", 1))

    def check_weather(self, weather: str, allow_common: bool = True) -> None:
        """Refuse a weather the bundle lacks, listing the ones it has."""
        known = self.weathers + ([COMMON] if allow_common else [])
        if weather not in known:
            raise GpmaskError(f"unknown weather {weather!r}; this bundle has: {', '.join(known)}")

    def precisions(self, weather: str) -> list[str]:
        """Precisions with a graph for ``weather``."""
        self.check_weather(weather)
        return list(self.manifest["graphs"].get(weather, {}))

    def graph_path(self, weather: str, precision: str = "fp32") -> Path:
        """Absolute path of ``weather``'s graph at ``precision``."""
        return self.root / self._entry("graphs", weather, precision)["path"]

    def engine_entry(self, weather: str, precision: str) -> dict[str, Any]:
        """Manifest record of ``weather``'s TensorRT engine at ``precision``."""
        return self._entry("engines", weather, precision)

    def _entry(self, section: str, weather: str, precision: str) -> dict[str, Any]:
        self.check_weather(weather)
        entries = self.manifest.get(section, {}).get(weather, {})
        if precision not in entries:
            have = ", ".join(entries) or "none"
            raise GpmaskError(
                f"bundle {self.root} has no {precision} {section[:-1]} for {weather!r} "
                f"(has: {have})"
            )
        return entries[precision]

    def files(self) -> list[dict[str, Any]]:
        """Every file record the manifest lists: weights, graphs, engines, router."""
        records = list(self.manifest["weights"])
        for section in ("graphs", "engines"):
            for per_precision in self.manifest.get(section, {}).values():
                records.extend(per_precision.values())
        if "router" in self.manifest:
            records.append(self.manifest["router"])
        return records

    # ----------------------------------------------------------------- integrity
    def verify(self, paths: list[str] | None = None) -> None:
        """Check files against their manifest sha256 (all, or those in ``paths``).

        A missing file or a hash mismatch raises :class:`GpmaskError` naming the file.
        """
        for record in self.files():
            if paths is not None and record["path"] not in paths:
                continue
            if self._verified.get(record["path"]) == record["sha256"]:
                continue
            path = self.root / record["path"]
            if not path.is_file():
                raise GpmaskError(f"bundle file {record['path']} is missing from {self.root}")
            if sha256_file(path) != record["sha256"]:
                raise GpmaskError(
                    f"bundle file {record['path']} does not match its manifest sha256 "
                    f"(modified or damaged); re-export the bundle"
                )
            self._verified[record["path"]] = record["sha256"]

    # ----------------------------------------------------------------- updates
    def record_file(self, relative_path: str, **extra: Any) -> dict[str, Any]:
        """A manifest record for a file already written inside the bundle."""
        digest = sha256_file(self.root / relative_path)
        self._verified[relative_path] = digest
        return {"path": relative_path, "sha256": digest, **extra}

    def set_graph(self, weather: str, precision: str, relative_path: str,
                  layout: str = "dense") -> None:
        """Record ``weather``'s graph at ``precision`` and its layout (hash computed now)."""
        graphs = self.manifest.setdefault("graphs", {}).setdefault(weather, {})
        graphs[precision] = self.record_file(relative_path, layout=layout)

    @property
    def layout(self) -> str:
        """``compact`` or ``dense``: how the export stored the weathers' weights (bundles
        written before layouts existed are dense)."""
        return self.manifest.get("layout", "dense")

    def set_weights(self, relative_path: str) -> None:
        """Record (or refresh) a shared weight file."""
        size = (self.root / relative_path).stat().st_size
        record = self.record_file(relative_path, bytes=size)
        self.manifest["weights"] = [
            w for w in self.manifest["weights"] if w["path"] != relative_path
        ] + [record]

    def save(self) -> None:
        """Write ``manifest.json`` atomically."""
        write_text_atomic(self.root / MANIFEST, json.dumps(self.manifest, indent=2) + "\n")
