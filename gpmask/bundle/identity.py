"""What each graph of a bundle is, written into the graph itself and checked when it is read.

A manifest's sha256 proves a file is the one recorded, not that the record is right:
``rain.onnx`` and ``snow.onnx`` swapped (their hashes updated), two records swapped, a
graph paired with another bundle's weight file, or a router whose classes were
reordered would all pass the hashes and give wrong frames with exit code 0. So every
graph carries its identity in its ONNX ``metadata_props``, written when the bundle
records it (:meth:`gpmask.bundle.Bundle.set_graph`):

- ``gpmask.bundle``: the bundle's id (made once, at export);
- ``gpmask.weather`` and ``gpmask.precision``: the record it belongs to;
- ``gpmask.weights``: a digest of the weight files it reads (their paths and sha256);
- ``gpmask.size_multiple``: what height and width must be multiples of for the network.

A router carries ``gpmask.router_classes``, its classes in output order
(:meth:`~gpmask.bundle.Bundle.set_router`), and its graph's own input and output shapes
must agree with the manifest's input size and class count.

:func:`check_graph` and :func:`check_router` run wherever a bundle's files are verified
(:meth:`~gpmask.bundle.Bundle.verify`), so every verb and the ``Restorer`` refuse an
inconsistent bundle with a line that names the file and what disagrees. A bundle
written before identities existed (no ``id`` in its manifest) is checked for readable
ONNX files and consistent shapes only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path

PREFIX = "gpmask."
BUNDLE, WEATHER, PRECISION, WEIGHTS, SIZE_MULTIPLE, ROUTER_CLASSES = (
    PREFIX + key for key in ("bundle", "weather", "precision", "weights", "size_multiple",
                             "router_classes"))


def load_graph(path: Path, name: str) -> Any:
    """A bundle graph file without its external data; anything else is refused by name."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and onnx's own errors, by version
        raise GpmaskError(f"bundle file {name} is not a readable ONNX graph ({exc}); "
                          f"re-export the bundle") from exc


def metadata(model: Any) -> dict[str, str]:
    """A graph's ``metadata_props`` as a dict."""
    return {prop.key: prop.value for prop in model.metadata_props}


def stamp(path: Path, props: Mapping[str, str]) -> None:
    """Write ``props`` into the graph file ``path``'s metadata (other keys kept)."""
    model = load_graph(path, path.name)
    merged = {**metadata(model), **props}
    del model.metadata_props[:]
    for key in sorted(merged):
        model.metadata_props.add(key=key, value=merged[key])
    with atomic_path(path, suffix=".onnx") as tmp:
        tmp.write_bytes(model.SerializeToString())


def weight_locations(model: Any) -> list[str]:
    """The external-data files a graph reads (paths relative to the graph's folder)."""
    import onnx

    return sorted({entry.value for tensor in model.graph.initializer
                   if tensor.data_location == onnx.TensorProto.EXTERNAL
                   for entry in tensor.external_data if entry.key == "location"})


def weights_digest(locations: list[str], sha256: Mapping[str, str]) -> str:
    """One sha256 standing for the weight files ``locations`` and their contents."""
    text = " ".join(f"{location}:{sha256[location]}" for location in sorted(locations))
    return hashlib.sha256(text.encode()).hexdigest()


def graph_props(bundle_id: str, weather: str, precision: str, digest: str,
                size_multiple: int) -> dict[str, str]:
    """The identity :func:`check_graph` expects of a graph."""
    return {BUNDLE: bundle_id, WEATHER: weather, PRECISION: precision, WEIGHTS: digest,
            SIZE_MULTIPLE: str(size_multiple)}


def _io_names(model: Any) -> tuple[list[str], list[str]]:
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    return inputs, [o.name for o in model.graph.output]


def check_graph(root: Path, path: str, weather: str, precision: str,
                manifest: Mapping[str, Any]) -> None:
    """Refuse the graph file ``path`` unless it is what its record says it is."""
    model = load_graph(root / path, path)
    inputs, outputs = _io_names(model)
    wanted = (manifest["input"]["name"], manifest["output"]["name"])
    if (inputs[:1], outputs[:1]) != ([wanted[0]], [wanted[1]]):
        raise GpmaskError(
            f"bundle file {path} takes {inputs} and gives {outputs}, but the manifest "
            f"describes input {wanted[0]!r} and output {wanted[1]!r}; re-export the bundle")
    if "id" not in manifest:
        return
    props = metadata(model)
    weights = {record["path"]: record["sha256"] for record in manifest["weights"]}
    locations = weight_locations(model)
    unrecorded = [location for location in locations if location not in weights]
    if unrecorded:
        raise GpmaskError(f"bundle file {', '.join(unrecorded)} is not recorded in the "
                          f"manifest, yet {path} reads it; re-export the bundle")
    multiple = manifest["input"].get("size_multiple", 1)
    expected = {BUNDLE: manifest["id"], WEATHER: weather, PRECISION: precision,
                WEIGHTS: weights_digest(locations, weights)}
    if not props.get(BUNDLE):
        raise GpmaskError(f"bundle file {path} carries no gpmask identity, so it was not "
                          f"written by this bundle's export; re-export the bundle")
    for key, value in expected.items():
        if props.get(key) != value:
            raise GpmaskError(_mismatch(path, key, props.get(key), value, weather, precision))
    needed = int(props.get(SIZE_MULTIPLE, "1"))
    if multiple % needed:
        raise GpmaskError(
            f"manifest.json: input size_multiple {multiple} does not fit the network in "
            f"{path}, which needs multiples of {needed}; re-export the bundle")


def _mismatch(path: str, key: str, found: str | None, wanted: str, weather: str,
              precision: str) -> str:
    if key == WEATHER:
        return (f"bundle file {path} is the {found} network, but the manifest records it "
                f"as {weather}'s {precision} graph (files or records swapped); re-export "
                f"the bundle")
    if key == PRECISION:
        return (f"bundle file {path} is a {found} graph, but the manifest records it as "
                f"{precision}; re-export the bundle")
    if key == WEIGHTS:
        return (f"bundle file {path} was written with other weight files than those the "
                f"manifest records (a weight file replaced); re-export the bundle")
    return f"bundle file {path} belongs to another bundle; re-export the bundle"


def check_router(root: Path, record: Mapping[str, Any]) -> None:
    """Refuse a router graph whose classes or shapes disagree with its manifest record."""
    path = record["path"]
    model = load_graph(root / path, path)
    classes = list(record["classes"])
    stamped = metadata(model).get(ROUTER_CLASSES)
    if stamped is not None and json.loads(stamped) != classes:
        raise GpmaskError(
            f"bundle file {path} was trained for the classes {json.loads(stamped)} (in that "
            f"order), but the manifest lists {classes}; train the router again with "
            f"`gpmask train-router`")
    again = "train the router again with `gpmask train-router`"
    inputs, outputs = _io_names(model)
    if len(inputs) != 1 or not outputs:
        raise GpmaskError(f"bundle file {path} is not a router (it takes {inputs}); {again}")
    image = next(i for i in model.graph.input if i.name == inputs[0]).type.tensor_type.shape.dim
    logits = model.graph.output[0].type.tensor_type.shape.dim
    size = [d.dim_value or None for d in image][2:]
    if len(image) != 4 or len(logits) != 2:
        raise GpmaskError(f"bundle file {path} is not a router (a router takes one NCHW "
                          f"image and gives one row of class scores); {again}")
    if None not in size and size != list(record["input_size"]):
        raise GpmaskError(
            f"manifest.json: router input_size {record['input_size']} is not the "
            f"{size[0]}x{size[1]} input of {path}; {again}")
    if logits[1].dim_value != len(classes):
        raise GpmaskError(
            f"manifest.json: the router lists {len(classes)} classes {classes}, but {path} "
            f"tells {logits[1].dim_value or 'an unknown number of'} apart; {again}")


def router_props(classes: list[str]) -> dict[str, str]:
    """The identity :func:`check_router` expects of a router graph."""
    return {ROUTER_CLASSES: json.dumps(list(classes))}


def inside(root: Path, path: str) -> bool:
    """Whether the file ``path`` of the bundle at ``root``, links resolved, lies inside it."""
    return Path(os.path.realpath(root / path)).is_relative_to(Path(os.path.realpath(root)))
