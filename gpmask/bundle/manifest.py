"""The deployment bundle: a folder of ONNX graphs, shared weight files and ``manifest.json``.

This module is the contract between the parts: export writes a bundle, calibration
and engine builds add to it, the runtime reads it. It imports neither torch nor onnx,
so an edge device can load a bundle with numpy alone.

``manifest.json`` (``format_version`` 1)::

    {
      "format_version": 1,
      "id": "3f2a...",                                 # made at export; graphs carry it
      "layout": "compact",                             # or "dense" (absent: dense)
      "weathers": ["rain", "raindrop", "snow"],        # ordered as in the checkpoint
      "default_weather": "rain",
      "input":  {"name": "image",    "layout": "NCHW", "dtype": "float32", "color": "RGB",
                 "range": [0.0, 1.0], "size_multiple": 4, "shape": [null, 3, null, null]},
      "output": {"name": "restored", ... same keys ...},
      "graphs": {"<weather>|common": {"fp32": {"path": "rain.onnx", "sha256": "...",
                                               "layout": "compact"},
                                      # calibrated graphs add "quality": {"psnr_vs_fp32",
                                      #   "drop", "max_psnr_drop", "fits"}
                                      "fp16": {...}, "int8": {...}, ...}},
      "weights": [{"path": "weights.bin", "sha256": "...", "bytes": 123}, ...],
      "engines": {"<weather>|common": {"<precision>": {"path": "engines/rain.fp16.engine",
                   "sha256": "...", "tensorrt_version": "10.3.0", "gpu": "...",
                   "compute_capability": "8.7", "shapes": {...}}}},
      "router": {"path": "router.onnx", "sha256": "...", "classes": ["clear", ...],
                 "input_size": [64, 64], "grid": [3, 4],  # tile side, tiles per frame
                 "temperature": 1.3,                      # only when a router was trained
                 "accuracy": 0.95, "accuracy_per_class": {"clear": ..., ...},
                 "confusion": [[...], ...], "heldout": "...", "heldout_frames": 256,
                 "report": "reports/router-confusion.png", "training": {...}},
      "checkpoint": {"sha256": "...", "metadata": {...}},   # sha256 null when exported from
                                                           # memory; metadata without "params"
      "versions": {"gpmask": "...", "torch": "...", "onnx": "...", "onnxruntime": "...",
                   "onnx_opset": 18},
      "verification": {"status": "passed", "report": "reports/export.json"}  # or "skipped"
    }

Every path is relative to the bundle folder, and none may lead out of it (through a
link either). :mod:`gpmask.bundle.schema` holds the JSON Schema of this layout;
:meth:`Bundle.open` validates every manifest against it and checks every file against
its sha256, and each graph against the identity written into it
(:mod:`gpmask.bundle.identity`), before any verb reads the bundle.

``layout`` (a string, ``"compact"`` or ``"dense"``) says how the export stored the
weathers: ``dense`` graphs hold their full weights (a tensor identical in two graphs is
stored once); ``compact`` graphs read the common weights, stored once, and rebuild
their own from a mask or position steps and values with standard ONNX operators
(:mod:`gpmask.bundle.compact`). Each graph record repeats the layout of that graph
(``"layout"``, same two values): in a compact bundle the fp32 and fp16 graphs are
compact and the int8 ones dense. A consumer that runs graphs with ONNX Runtime needs
nothing more (its constant folding evaluates the rebuild); one that needs plain weight
initializers folds the graph first (:func:`gpmask.graph.fold.fold_rebuild`).

Code outside :mod:`gpmask.bundle` reads and changes the manifest only through
:class:`Bundle`'s methods and the typed records they return, so the layout above has
one reader and one writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file, write_text_atomic

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
COMMON = "common"
#: The router class meaning "no adverse weather": the loop passes such a frame through
#: or gives it the common network.
CLEAR = "clear"
#: Initializers of a compact graph that only its weight rebuild reads are named with
#: this prefix: ONNX Runtime folds them away when it creates the session.
COMPACT_PREFIX = "compact/"
LAYOUTS = ("compact", "dense")


def is_bundle(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a gpmask manifest (damaged bundles included), so that
    ``--force`` may replace it; any other folder is the user's (see gpmask.fileio)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format_version", "weathers", "graphs"} <= set(manifest)


# ----------------------------------------------------------------- typed records
@dataclass(frozen=True)
class TensorSpec:
    """The graphs' input or output: an NCHW float32 RGB tensor in [0, 1].

    ``shape`` holds None for each dynamic dimension; a bundle exported with ``--size``
    has a fixed height and width (and batch).
    """

    name: str
    size_multiple: int = 1
    shape: tuple[int | None, ...] = (None, 3, None, None)
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)

    @classmethod
    def of(cls, record: dict[str, Any]) -> TensorSpec:
        return cls(record["name"], int(record.get("size_multiple", 1)),
                   tuple(record.get("shape") or (None, 3, None, None)), record["layout"],
                   record["dtype"], record.get("color", "RGB"),
                   tuple(record.get("range", (0.0, 1.0))))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layout": self.layout, "dtype": self.dtype,
                "color": self.color, "range": list(self.value_range),
                "size_multiple": self.size_multiple, "shape": list(self.shape)}

    @property
    def static_size(self) -> tuple[int, int] | None:
        """(height, width) when the export fixed them, else None."""
        height, width = self.shape[2], self.shape[3]
        return (height, width) if height is not None and width is not None else None

    def describe(self) -> str:
        """``Nx3xHxW``-style, a fixed dimension as its number."""
        return "x".join("N" if d is None else str(d) for d in self.shape)


@dataclass(frozen=True)
class GraphQuality:
    """How a calibrated graph scored against the fp32 graph on held-out frames."""

    psnr_vs_fp32: float
    drop: float
    max_psnr_drop: float
    fits: bool

    @classmethod
    def of(cls, record: dict[str, Any]) -> GraphQuality:
        return cls(float(record["psnr_vs_fp32"]), float(record["drop"]),
                   float(record["max_psnr_drop"]), bool(record["fits"]))


@dataclass(frozen=True)
class GraphRecord:
    """One graph file of a weather at a precision."""

    path: str
    sha256: str
    layout: str = "dense"
    quality: GraphQuality | None = None

    @classmethod
    def of(cls, record: dict[str, Any]) -> GraphRecord:
        quality = record.get("quality")
        return cls(record["path"], record["sha256"], record.get("layout", "dense"),
                   GraphQuality.of(quality) if quality else None)


@dataclass(frozen=True)
class EngineTarget:
    """What a TensorRT engine is specific to: the TensorRT version and the GPU; for the
    TensorRT running here, also whether it is the lean runtime (``lean``), which runs
    version-compatible engines only."""

    tensorrt_version: str
    gpu: str
    compute_capability: str
    lean: bool = False

    def __str__(self) -> str:
        runtime = "TensorRT lean runtime" if self.lean else "TensorRT"
        return (f"{runtime} {self.tensorrt_version} on {self.gpu} "
                f"(compute capability {self.compute_capability})")


@dataclass(frozen=True)
class EngineRecord:
    """One TensorRT engine file, with what it was built for and how.

    ``version_compatible``: built with TensorRT's version-compatible flag (``gpmask build
    --version-compatible``), so that later TensorRT versions, and the lean runtime, run it.
    """

    path: str
    sha256: str
    target: EngineTarget
    precision: str | None = None
    shapes: dict[str, Any] | None = None
    tf32: bool = False
    version_compatible: bool = False

    @classmethod
    def of(cls, record: dict[str, Any]) -> EngineRecord:
        target = EngineTarget(*(str(record.get(key, "unknown")) for key in
                                ("tensorrt_version", "gpu", "compute_capability")))
        return cls(record["path"], record["sha256"], target, record.get("precision"),
                   record.get("shapes"), bool(record.get("tf32", False)),
                   bool(record.get("version_compatible", False)))

    def mismatch(self, running: EngineTarget, bundle_root: str | os.PathLike,
                 precision: str) -> str | None:
        """Why this engine cannot run on ``running``, or None when it can.

        An engine runs only on the GPU model it was built for, and under the TensorRT
        version it was built with; TensorRT itself would fail to deserialize it or warn
        that it may misbehave. A version-compatible engine also runs under any later
        TensorRT (TensorRT's documentation: engines built with 8.6 and later run on later
        runtimes, 10 on 11, never on earlier ones). TensorRT's lean runtime
        (``running.lean``) runs version-compatible engines only.
        """
        rebuild = f"`gpmask build {bundle_root} --precision {precision}"
        if running.lean and not self.version_compatible:
            return (f"engine {self.path} was not built version-compatible, and this machine "
                    f"has {running}, which runs version-compatible engines only; rebuild "
                    f"the engines with {rebuild} "
                    f"--version-compatible` (on a machine with the full TensorRT), or "
                    f"install the full TensorRT here")
        same_gpu = (self.target.gpu, self.target.compute_capability) == \
            (running.gpu, running.compute_capability)
        version = _version_numbers(self.target.tensorrt_version)
        runs = running.tensorrt_version == self.target.tensorrt_version or (
            self.version_compatible and version is not None
            and (_version_numbers(running.tensorrt_version) or ()) >= version)
        if same_gpu and runs:
            return None
        return (f"engine {self.path} was built for {self.target}"
                f"{' (version-compatible)' if self.version_compatible else ''}, but this "
                f"machine has {running}; rebuild the engines here with {rebuild}`")


def _version_numbers(version: str) -> tuple[int, ...] | None:
    """``10.3.0.30`` as ``(10, 3, 0, 30)``, or None for a version that is not numbers."""
    parts = version.split(".")
    return tuple(int(part) for part in parts) if all(p.isdigit() for p in parts) else None


@dataclass(frozen=True)
class RouterRecord:
    """The bundle's weather router: its graph, the classes it tells apart, the side of the
    square tiles it sees (``input_size``), their ``grid`` (rows, cols) per frame, and what
    training recorded about it (``details``: temperature, held-out accuracy and confusion,
    settings)."""

    path: str
    sha256: str
    classes: tuple[str, ...]
    input_size: tuple[int, int]
    grid: tuple[int, int]
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, record: dict[str, Any]) -> RouterRecord:
        details = {k: v for k, v in record.items()
                   if k not in ("path", "sha256", "classes", "input_size", "grid")}
        return cls(record["path"], record["sha256"], tuple(record["classes"]),
                   tuple(record["input_size"]), tuple(record["grid"]), details)


# ----------------------------------------------------------------- the bundle
class Bundle:
    """A bundle folder and its manifest, read and changed through typed methods.

    Attributes:
        root: the bundle folder.
        manifest: the parsed ``manifest.json`` (a plain dict, for :mod:`gpmask.bundle`'s own
            modules; everything else uses the methods).
    """

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        #: relative path -> the sha256 it was verified (or recorded) with, so that a file
        #: checked once by this object is not hashed again before each reader.
        self._verified: dict[str, str] = {}

    @classmethod
    def create(cls, root: str | os.PathLike, weathers: list[str], input_spec: TensorSpec,
               output_spec: TensorSpec, layout: str, checkpoint_sha256: str | None,
               checkpoint_metadata: dict[str, Any], versions: dict[str, Any]) -> Bundle:
        """A new bundle in ``root`` with no graphs or weights recorded yet (not saved)."""
        return cls(root, {
            "format_version": FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "layout": layout,
            "weathers": list(weathers),
            "default_weather": weathers[0],
            "input": input_spec.to_dict(),
            "output": output_spec.to_dict(),
            "graphs": {},
            "weights": [],
            "checkpoint": {"sha256": checkpoint_sha256, "metadata": checkpoint_metadata},
            "versions": versions,
        })

    @classmethod
    def open(cls, root: str | os.PathLike, verify: bool = True) -> Bundle:
        """Read and validate ``root/manifest.json``, then check every file it lists.

        A missing manifest, one that is not JSON or does not fit the schema
        (:mod:`gpmask.bundle.schema`), a newer format, and (with ``verify``) a missing
        or modified file are refused, each with a :class:`GpmaskError` naming it. This is
        the one place every verb opens a bundle, so none reads unverified files.
        ``verify=False`` is for ``inspect``, which reports damage instead, and for a
        caller re-opening a bundle it has verified (the backends still check the files
        they read).
        """
        from gpmask.bundle.schema import validate_manifest

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

    # ----------------------------------------------------------------- what it holds
    @property
    def weathers(self) -> list[str]:
        """Weather names, in checkpoint order (``common`` is not one of them)."""
        return list(self.manifest["weathers"])

    @property
    def networks(self) -> list[str]:
        """The weathers, then ``common``: every network a bundle exports."""
        return [*self.weathers, COMMON]

    @property
    def default_weather(self) -> str:
        return self.manifest.get("default_weather", self.weathers[0])

    @property
    def input_spec(self) -> TensorSpec:
        return TensorSpec.of(self.manifest["input"])

    @property
    def output_spec(self) -> TensorSpec:
        return TensorSpec.of(self.manifest["output"])

    @property
    def size_multiple(self) -> int:
        return self.input_spec.size_multiple

    @property
    def layout(self) -> str:
        """``compact`` or ``dense``: how the export stored the weathers' weights (bundles
        written before layouts existed are dense)."""
        return self.manifest.get("layout", "dense")

    @property
    def checkpoint_sha256(self) -> str | None:
        """The sha256 of the checkpoint file exported, or None (exported from memory)."""
        return (self.manifest.get("checkpoint") or {}).get("sha256")

    @property
    def checkpoint_metadata(self) -> dict[str, Any]:
        """What the export recorded of its checkpoint (architecture, weathers, ...)."""
        return dict((self.manifest.get("checkpoint") or {}).get("metadata") or {})

    @property
    def verification(self) -> dict[str, Any]:
        """The export's verification: ``{"status": ..., "report": ...}``."""
        return dict(self.manifest.get("verification", {"status": "unknown"}))

    def check_weather(self, weather: str, allow_common: bool = True) -> None:
        """Refuse a weather the bundle lacks, listing the ones it has."""
        known = self.weathers + ([COMMON] if allow_common else [])
        if weather not in known:
            raise GpmaskError(f"unknown weather {weather!r}; this bundle has: {', '.join(known)}")

    # ----------------------------------------------------------------- graphs
    def precisions(self, weather: str) -> list[str]:
        """Precisions with a graph for ``weather``."""
        self.check_weather(weather)
        return list(self.manifest["graphs"].get(weather, {}))

    def graphs(self, precision: str) -> dict[str, GraphRecord]:
        """``precision``'s graphs: network (weathers in order, then ``common``) -> record."""
        graphs = self.manifest["graphs"]
        return {w: GraphRecord.of(graphs[w][precision]) for w in self.networks
                if precision in graphs.get(w, {})}

    def missing_graphs(self, precision: str) -> list[str]:
        """The networks (weathers, ``common``) with no graph at ``precision``."""
        present = self.graphs(precision)
        return [w for w in self.networks if w not in present]

    def graph(self, weather: str, precision: str = "fp32") -> GraphRecord:
        """``weather``'s graph record at ``precision`` (refused, listing what it has)."""
        return GraphRecord.of(self._entry("graphs", weather, precision))

    def graph_path(self, weather: str, precision: str = "fp32") -> Path:
        """Absolute path of ``weather``'s graph at ``precision``."""
        return self.root / self.graph(weather, precision).path

    def graph_digest(self, weather: str, precision: str = "fp32") -> str:
        """A sha256 standing for the graph's content: its own hash and those of the weight
        files it reads, so that a cache keyed on it is invalid once either changes."""
        import onnx

        model = onnx.load(self.graph_path(weather, precision), load_external_data=False)
        locations = {entry.value for tensor in model.graph.initializer
                     for entry in tensor.external_data if entry.key == "location"}
        hashes = [self.graph(weather, precision).sha256]
        hashes += sorted(w["sha256"] for w in self.manifest["weights"] if w["path"] in locations)
        return hashlib.sha256(" ".join(hashes).encode()).hexdigest()

    def set_graph(self, weather: str, precision: str, relative_path: str,
                  layout: str = "dense", quality: GraphQuality | None = None) -> None:
        """Record ``weather``'s graph at ``precision`` (hash computed now), its layout, and
        for a calibrated graph its measured quality.

        The graph file is first given the identity the record implies (bundle, weather,
        precision, weight files, size multiple; :mod:`gpmask.bundle.identity`), so the
        record and the file cannot later be swapped unnoticed. Its weight files must be
        written before it is recorded.
        """
        from gpmask.bundle import identity

        path = self.root / relative_path
        if "id" in self.manifest:  # bundles exported before identities have none
            locations = identity.weight_locations(identity.load_graph(path, relative_path))
            digests = {location: self._file_sha256(location) for location in locations}
            identity.stamp(path, identity.graph_props(
                self.manifest["id"], weather, precision,
                identity.weights_digest(locations, digests), self.size_multiple))
        record = self.record_file(relative_path, layout=layout)
        if quality is not None:
            record["quality"] = vars(quality).copy()
        self.manifest.setdefault("graphs", {}).setdefault(weather, {})[precision] = record

    # ----------------------------------------------------------------- engines
    def engines(self, precision: str) -> dict[str, EngineRecord]:
        """``precision``'s TensorRT engines: network -> record, in :attr:`networks` order."""
        engines = self.manifest.get("engines", {})
        return {w: EngineRecord.of(engines[w][precision]) for w in self.networks
                if precision in engines.get(w, {})}

    def engine_precisions(self) -> list[str]:
        """Precisions with an engine for at least one network."""
        found = {p for per in self.manifest.get("engines", {}).values() for p in per}
        return sorted(found)

    def engine(self, weather: str, precision: str) -> EngineRecord:
        """``weather``'s engine record at ``precision`` (refused, listing what it has)."""
        return EngineRecord.of(self._entry("engines", weather, precision))

    def set_engine(self, weather: str, precision: str, relative_path: str,
                   target: EngineTarget, shapes: dict[str, Any], tf32: bool,
                   version_compatible: bool = False) -> None:
        """Record an engine file written inside the bundle (hash computed now)."""
        record = self.record_file(
            relative_path, tensorrt_version=target.tensorrt_version, gpu=target.gpu,
            compute_capability=target.compute_capability, precision=precision,
            shapes=shapes, strongly_typed=True, tf32=tf32,
            version_compatible=version_compatible)
        self.manifest.setdefault("engines", {}).setdefault(weather, {})[precision] = record

    # ----------------------------------------------------------------- router
    @property
    def router(self) -> RouterRecord | None:
        """The weather router's record, or None when the bundle has none. A router of an
        earlier gpmask (no tile ``grid``: it saw a downscaled frame) is refused."""
        record = self.manifest.get("router")
        if not record:
            return None
        if "grid" not in record:
            raise GpmaskError(f"bundle {self.root}: its router comes from an earlier gpmask (it "
                              f"sees a downscaled frame, not tiles); train a new one with "
                              f"`gpmask train-router {self.root}`")
        return RouterRecord.of(record)

    def set_router(self, relative_path: str, classes: list[str], input_size: tuple[int, int],
                   grid: tuple[int, int], **details: Any) -> RouterRecord:
        """Record a router graph written inside the bundle (hash computed now).

        A graph that does not yet name its classes is given them (in output order), and
        one whose classes, input size or output count disagree with ``classes`` and
        ``input_size`` is refused (:func:`gpmask.bundle.identity.check_router`).
        """
        from gpmask.bundle import identity

        path = self.root / relative_path
        if identity.ROUTER_CLASSES not in identity.metadata(
                identity.load_graph(path, relative_path)):
            identity.stamp(path, identity.router_props(classes))
        identity.check_router(self.root, {"path": relative_path, "classes": list(classes),
                                          "input_size": list(input_size)})
        self.manifest["router"] = self.record_file(
            relative_path, classes=list(classes), input_size=list(input_size), grid=list(grid),
            **details)
        return RouterRecord.of(self.manifest["router"])

    # ----------------------------------------------------------------- weights, export
    def weight_files(self) -> dict[str, int]:
        """Weight file path -> its size in bytes."""
        return {w["path"]: w["bytes"] for w in self.manifest["weights"]}

    def set_weights(self, relative_path: str) -> None:
        """Record (or refresh) a shared weight file."""
        size = (self.root / relative_path).stat().st_size
        record = self.record_file(relative_path, bytes=size)
        self.manifest["weights"] = [
            w for w in self.manifest["weights"] if w["path"] != relative_path
        ] + [record]

    def set_verification(self, status: str, report: str | None = None) -> None:
        """Record how the export was verified (``passed`` with its report, or ``skipped``)."""
        self.manifest["verification"] = {"status": status, **({"report": report} if report
                                                                  else {})}

    # ----------------------------------------------------------------- integrity
    def files(self) -> list[dict[str, Any]]:
        """Every file record the manifest lists: weights, graphs, engines, router."""
        return [record for record, _ in self._sections()]

    def _sections(self) -> list[tuple[dict[str, Any], tuple[str, ...]]]:
        """Every file record with what it is: ``("weights",)``, ``("graphs", weather,
        precision)``, ``("engines", weather, precision)`` or ``("router",)``."""
        found: list[tuple[dict[str, Any], tuple[str, ...]]] = [
            (record, ("weights",)) for record in self.manifest["weights"]]
        for section in ("graphs", "engines"):
            for weather, per_precision in self.manifest.get(section, {}).items():
                found.extend((record, (section, weather, precision))
                             for precision, record in per_precision.items())
        if "router" in self.manifest:
            found.append((self.manifest["router"], ("router",)))
        return found

    def verify(self, paths: list[str] | None = None) -> None:
        """Check files against their manifest sha256 (all, or those in ``paths``), and each
        graph against the identity written into it (:mod:`gpmask.bundle.identity`).

        A missing file, one whose links lead out of the bundle folder, a hash mismatch or
        a graph that is not what its record says raises :class:`GpmaskError` naming it.
        """
        from gpmask.bundle import identity

        for record, kind in self._sections():
            if paths is not None and record["path"] not in paths:
                continue
            if self._verified.get(record["path"]) == record["sha256"]:
                continue
            path = self.root / record["path"]
            if not path.is_file():
                raise GpmaskError(f"bundle file {record['path']} is missing from {self.root}")
            if not identity.inside(self.root, record["path"]):
                raise GpmaskError(
                    f"bundle file {record['path']} is a link to {os.path.realpath(path)}, "
                    f"outside the bundle folder; a bundle holds its own files")
            if sha256_file(path) != record["sha256"]:
                raise GpmaskError(
                    f"bundle file {record['path']} does not match its manifest sha256 "
                    f"(modified or damaged); re-export the bundle"
                )
            if kind[0] == "graphs":
                identity.check_graph(self.root, record["path"], kind[1], kind[2],
                                     self.manifest)
            elif kind[0] == "router":
                identity.check_router(self.root, record)
            self._verified[record["path"]] = record["sha256"]

    def _file_sha256(self, relative_path: str) -> str:
        """The sha256 of a file of the bundle as it is now (remembered once computed)."""
        if relative_path not in self._verified:
            self._verified[relative_path] = sha256_file(self.root / relative_path)
        return self._verified[relative_path]

    def record_file(self, relative_path: str, **extra: Any) -> dict[str, Any]:
        """A manifest record for a file already written inside the bundle."""
        digest = sha256_file(self.root / relative_path)
        self._verified[relative_path] = digest
        return {"path": relative_path, "sha256": digest, **extra}

    def save(self) -> None:
        """Write ``manifest.json`` atomically."""
        write_text_atomic(self.root / MANIFEST, json.dumps(self.manifest, indent=2) + "\n")

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
