"""The router shipped beside a shipped checkpoint, attached to the bundles exported from it.

``gpmask export demo`` gives a bundle whose ``--weather auto`` works at once: the
package ships the router ``gpmask train-router`` made for the demo model, and the export
copies it in with its manifest record, checking its sha256 on the way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from gpmask.bundle import CLEAR, Bundle
from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path, sha256_file

#: The router graph's name inside a bundle.
ROUTER_FILE = "router.onnx"
#: Routers shipped with a shipped checkpoint (gpmask.masking.checkpoint.SHIPPED_CHECKPOINTS):
#: name -> the router graph; its manifest record (classes, tile size and grid,
#: temperature, held-out accuracy and confusion, training settings and the graph's
#: sha256) lies beside it as ``.json``. They
#: are the output of ``gpmask train-router`` with default settings on a bundle of that
#: checkpoint (router.onnx and the manifest's ``router`` entry), so exporting the shipped
#: model needs no training before ``--weather auto`` works.
SHIPPED_ROUTERS = {"demo": Path(__file__).resolve().parent.parent / "assets" / "demo.router.onnx"}


def shipped_router(name: str, weathers: list[str]) -> tuple[Path, dict] | None:
    """The router shipped for the shipped checkpoint ``name`` and its manifest record,
    when there is one whose classes are exactly ``clear`` and ``weathers``."""
    graph = SHIPPED_ROUTERS.get(name)
    if graph is None or not graph.is_file():
        return None
    record = json.loads(graph.with_suffix(".json").read_text())
    if sorted(record["classes"]) != sorted([CLEAR, *weathers]):
        return None
    return graph, record


def attach_router(bundle: Bundle, graph: Path, record: dict) -> None:
    """Copy a trained router graph into ``bundle`` and record it (the manifest is not saved).

    ``record`` is a manifest ``router`` entry from another bundle; its sha256 must be the
    graph's, so a damaged asset is refused here rather than at run time. The record's
    confusion picture stays behind with the bundle that drew it.
    """
    target = bundle.root / ROUTER_FILE
    with atomic_path(target, suffix=".onnx") as tmp:
        shutil.copyfile(graph, tmp)
    if sha256_file(target) != record.get("sha256"):
        target.unlink()
        raise GpmaskError(f"{graph} does not match the sha256 its record gives; reinstall gpmask")
    details = {k: v for k, v in record.items()
               if k not in ("path", "sha256", "classes", "input_size", "grid", "report")}
    bundle.set_router(ROUTER_FILE, record["classes"], record["input_size"], record["grid"],
                      **details)
