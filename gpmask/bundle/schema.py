"""The JSON Schema of a bundle's ``manifest.json``, and the one check every reader goes through.

:meth:`gpmask.bundle.Bundle.open` validates the manifest against :data:`MANIFEST_SCHEMA`
(with the ``jsonschema`` package), so that every consumer (inspect, calibrate, build,
bench, run, ``Restorer``) refuses a manifest of the wrong shape with the same message
naming the field, instead of each failing its own way on a string where a list was
meant (``"rain"`` read as the weathers r, a, i, n).

The schema enforces the type of every field the code reads (see the layout in
:mod:`gpmask.bundle`). Sections where later gpmask versions plausibly add fields (the
top level, tensor specs, file records, the router, engine records) accept additional
properties; the fields that exist keep their types. Each node's ``description`` is the
"must be ..." part of the error message.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from gpmask.errors import GpmaskError


def _string(description: str = "a string", **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _integer(minimum: int, description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": minimum, "description": description}


def _pair(description: str) -> dict[str, Any]:
    return {"type": "array", "items": _integer(1, "a positive integer"), "minItems": 2,
            "maxItems": 2, "description": description}


def _object(description: str, properties: dict[str, Any], required: tuple[str, ...] = (),
            **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties,
            "required": list(required), **extra}


_SHA256 = _string("a sha256 of 64 lowercase hex digits", pattern="^[0-9a-f]{64}$")
#: Relative, and never leaving the bundle folder: no leading '/', no '..' component.
_PATH = _string("a relative path inside the bundle folder",
                pattern=r"^(?!/)(?!(.*/)?\.\.(/|$)).+$")
_FILE_PROPERTIES = {"path": _PATH, "sha256": _SHA256}
_FILE = _object("a file record {path, sha256}", _FILE_PROPERTIES, ("path", "sha256"))
_LAYOUT = _string("'compact' or 'dense'", enum=["compact", "dense"])
_GRAPH = _object("a graph record {path, sha256, layout}", {**_FILE_PROPERTIES, "layout": _LAYOUT},
                 ("path", "sha256"))
_WEATHER = _string("a weather name (a non-empty string other than 'common')", minLength=1,
                   **{"not": {"const": "common"}})

_TENSOR = _object(
    "a tensor description {name, layout, dtype, ...}",
    {
        "name": _string("a tensor name (a non-empty string)", minLength=1),
        # what every gpmask graph takes and gives: other values would be ignored by the
        # runtime, a manifest then describing its graphs wrongly
        "layout": _string("'NCHW' (the layout of gpmask's graphs)", const="NCHW"),
        "dtype": _string("'float32' (the type of gpmask's graphs' inputs and outputs)",
                         const="float32"),
        "color": _string("'RGB' (the channel order of gpmask's graphs)", const="RGB"),
        "range": {"type": "array", "const": [0.0, 1.0],
                  "description": "[0, 1] (the value range of gpmask's graphs)"},
        "size_multiple": {"type": "integer", "minimum": 1, "maximum": 1024,
                          "description": "a positive integer of at most 1024"},
        "shape": {"type": "array", "minItems": 4, "maxItems": 4,
                  "items": {"type": ["integer", "null"], "minimum": 1,
                            "description": "a positive integer or null (dynamic)"},
                  "description": "an NCHW shape of four integers or nulls"},
    },
    ("name", "layout", "dtype"),
)

_SHAPE_RANGE = _object(
    "a profile {min, opt, max} of [height, width] pairs",
    {"min": _pair("[height, width]"), "opt": _pair("[height, width]"),
     "max": _pair("[height, width]"), "batch": _integer(1, "a positive integer"),
     "max_batch": _integer(1, "a positive integer")},
    ("min", "opt", "max"),
)

_ENGINE = _object(
    "an engine record {path, sha256, tensorrt_version, gpu, ...}",
    {**_FILE_PROPERTIES,
     "tensorrt_version": _string(), "gpu": _string(), "compute_capability": _string(),
     "precision": _string(), "shapes": _SHAPE_RANGE,
     "strongly_typed": {"type": "boolean", "description": "true or false"},
     "tf32": {"type": "boolean", "description": "true or false"},
     "version_compatible": {"type": "boolean", "description": "true or false"}},
    ("path", "sha256"),
)


def _per_weather(description: str, record: dict[str, Any]) -> dict[str, Any]:
    """weather (or ``common``) -> precision -> ``record``."""
    per_precision = {"type": "object", "additionalProperties": record,
                     "description": f"an object of precision -> {record['description']}"}
    return {"type": "object", "additionalProperties": per_precision,
            "description": description}


MANIFEST_SCHEMA: dict[str, Any] = _object(
    "a JSON object",
    {
        "format_version": _integer(1, "a positive integer"),
        "id": _string("a bundle id of 32 lowercase hex digits", pattern="^[0-9a-f]{32}$"),
        "weathers": {"type": "array", "items": _WEATHER, "minItems": 1, "uniqueItems": True,
                     "description": "an array of strings (distinct weather names, at least "
                                    "one)"},
        "default_weather": _WEATHER,
        "input": _TENSOR,
        "output": _TENSOR,
        "layout": _LAYOUT,
        "graphs": _per_weather("an object of weather -> precision -> {path, sha256, layout}",
                               _GRAPH),
        "weights": {"type": "array",
                    "items": _object("a weight file record {path, sha256, bytes}",
                                     {**_FILE_PROPERTIES,
                                      "bytes": _integer(0, "a byte count (an integer)")},
                                     ("path", "sha256", "bytes")),
                    "description": "an array of weight file records {path, sha256, bytes}"},
        "engines": _per_weather("an object of weather -> precision -> engine record", _ENGINE),
        "router": _object(
            "a router record {path, sha256, classes, input_size, ...}",
            {**_FILE_PROPERTIES,
             "classes": {"type": "array", "items": _string("a class name (a string)"),
                         "minItems": 1, "description": "an array of class names (strings)"},
             "input_size": _pair("[height, width] (two positive integers)"),
             "grid": _pair("[rows, cols] (two positive integers)"),
             "temperature": {"type": "number", "exclusiveMinimum": 0,
                             "description": "a positive number"},
             "accuracy": {"type": "number", "description": "a number"},
             "accuracy_per_class": {"type": "object", "description": "an object of numbers",
                                    "additionalProperties": {"type": ["number", "null"],
                                                             "description": "a number"}},
             "confusion": {"type": "array", "description": "an array of rows of frame counts",
                           "items": {"type": "array", "description": "a row of frame counts",
                                     "items": _integer(0, "a frame count (an integer)")}},
             "heldout_frames": _integer(0, "a frame count (an integer)"),
             "report": _PATH,
             "training": {"type": "object", "description": "an object"}},
            ("path", "sha256", "classes", "input_size"),
        ),
        "checkpoint": _object(
            "an object {sha256, metadata}",
            {"sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$",
                        "description": "a sha256 of 64 lowercase hex digits, or null"},
             "metadata": {"type": "object", "description": "an object"}},
        ),
        "versions": {"type": "object", "description": "an object"},
        "verification": _object(
            "an object {status, report}",
            {"status": _string(), "report": _PATH},
            ("status",),
        ),
    },
    ("format_version", "weathers", "input", "output", "graphs", "weights"),
)


def _location(path: deque) -> str:
    """``['graphs', 'rain', 'fp32', 'sha256']`` -> ``graphs.rain.fp32.sha256``;
    list indices in brackets (``weights[0].bytes``)."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validate_manifest(manifest: Any, where: str | Path) -> None:
    """Refuse ``manifest`` (parsed JSON) unless it fits :data:`MANIFEST_SCHEMA`.

    The message names the first offending field and what it must be, e.g.
    ``bundle/manifest.json: 'weathers' must be an array of strings (...)``.
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(MANIFEST_SCHEMA).iter_errors(manifest))
    if error is None:
        _check_references(manifest, where)
        return
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        field = _location(deque([*error.absolute_path, missing]))
        raise GpmaskError(f"{where}: {field!r} is missing")
    field = _location(error.absolute_path)
    expected = error.schema.get("description") if isinstance(error.schema, dict) else None
    if not field:
        raise GpmaskError(f"{where}: the manifest must be {expected or 'a JSON object'}")
    if expected is None:
        raise GpmaskError(f"{where}: {field!r}: {error.message}")
    raise GpmaskError(f"{where}: {field!r} must be {expected}")


def _check_references(manifest: dict[str, Any], where: str | Path) -> None:
    """What a schema cannot say: the default weather is one of the weathers."""
    default = manifest.get("default_weather")
    if default is not None and default not in manifest["weathers"]:
        raise GpmaskError(f"{where}: 'default_weather' {default!r} is not one of 'weathers' "
                          f"({', '.join(manifest['weathers'])})")
