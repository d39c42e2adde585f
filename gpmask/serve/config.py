"""Triton model configurations (``config.pbtxt``) as text, and the batching settings.

The text is Triton's ``ModelConfig`` protobuf in text format, written here by hand so
that writing a repository needs no Triton package; the tests parse every file gpmask
writes with Triton's own ``model_config_pb2`` (from ``tritonclient``), so a field that
is misspelt or misplaced fails there, as it would fail in the server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpmask.errors import GpmaskError


@dataclass(frozen=True)
class Batching:
    """How Triton batches requests for a model.

    Attributes:
        max_batch: the most frames one model execution takes (``max_batch_size``).
        dynamic: let Triton's dynamic batcher merge concurrent requests.
        queue_delay_us: how long the batcher may hold a request to fill a batch.
    """

    max_batch: int = 8
    dynamic: bool = True
    queue_delay_us: int = 1000

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise GpmaskError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise GpmaskError(f"--queue-delay-us must be 0 or more, got {self.queue_delay_us}")


@dataclass(frozen=True)
class Tensor:
    """One input or output of a model: name, Triton data type, dims without the batch."""

    name: str
    data_type: str
    dims: Sequence[int]
    label_filename: str | None = None
    allow_ragged_batch: bool = False

    def text(self) -> str:
        fields = [f"name: {_quote(self.name)}", f"data_type: {self.data_type}",
                  f"dims: [ {', '.join(str(d) for d in self.dims)} ]"]
        if self.label_filename:
            fields.append(f"label_filename: {_quote(self.label_filename)}")
        if self.allow_ragged_batch:
            fields.append("allow_ragged_batch: true")
        return "  {\n    " + "\n    ".join(fields) + "\n  }"


def model_config(
    name: str,
    platform_or_backend: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    batching: Batching | None,
    instances: int,
    kind: str = "KIND_CPU",
    parameters: Mapping[str, str] | None = None,
    extra: str = "",
) -> str:
    """A ``config.pbtxt``. ``batching`` None: no batch dimension (``max_batch_size: 0``),
    for graphs and engines with a fixed batch."""
    if instances < 1:
        raise GpmaskError(f"--instances must be at least 1, got {instances}")
    key = "platform" if platform_or_backend.endswith(("_plan", "_onnx")) else "backend"
    lines = [f"name: {_quote(name)}", f"{key}: {_quote(platform_or_backend)}",
             f"max_batch_size: {batching.max_batch if batching else 0}",
             "input [\n" + ",\n".join(t.text() for t in inputs) + "\n]",
             "output [\n" + ",\n".join(t.text() for t in outputs) + "\n]",
             f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]"]
    if batching and batching.dynamic:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: "
                     f"{batching.queue_delay_us}\n}}")
    for key_, value in (parameters or {}).items():
        lines.append(f"parameters {{\n  key: {_quote(key_)}\n  value {{ string_value: "
                     f"{_quote(value)} }}\n}}")
    if extra:
        lines.append(extra.strip())
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string (JSON's escapes of quotes, backslashes and control
    characters are ones it reads; other characters stay as they are, in UTF-8)."""
    return json.dumps(text, ensure_ascii=False)
