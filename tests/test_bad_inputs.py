"""Every bad input a new user might give ends in one clear line and destroys nothing.

One table, one row per bad input: the command line, what the one ``gpmask: error:``
line must say, and the single output the command may leave (most may leave nothing).
For each row the test copies the same inputs (a checkpoint, a bundle, a static-shape
bundle, a video, a folder of images) into a fresh folder, lets the row damage them,
hashes every file there, runs ``gpmask.cli.main`` in this process, and checks: exit
code 2 (130 for Ctrl-C), exactly one ``gpmask: error:`` line, which is the last line
on stderr, no traceback, and every file as it was (only the row's named output may
appear or change, and no new hidden file may be left). Rows are grouped by what went
wrong in issue 9 (data loss, tracebacks, silent wrong results, TensorRT), by issue 19's
findings (a row each, which failed before its fix), and by cases that already behaved
well. A few rows of issue 19 succeed (exit 0): what they check is that a file nobody
named survives.

Beside the table: the Restorer's refusal of float frames outside [0, 1] or with
NaN/Inf and after ``close()`` (Python API, no exit code), ``| head`` closing the pipe,
SIGTERM (subprocesses), and a read-only bundle.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.fileio import sha256_file
from gpmask.precision import NAMES as PRECISIONS
from tests.conftest import make_checkpoint
from tests.media import smooth_image, truncated_jpeg, write_mjpg_avi

CHECKPOINT = "model.gpmask.safetensors"
HEIGHT, WIDTH, FRAMES = 24, 32, 6


# ----------------------------------------------------------------- shared inputs
@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs every row starts from (copied per row, never modified here)."""
    from gpmask.export import export_bundle

    folder = tmp_path_factory.mktemp("assets")
    checkpoint = make_checkpoint()
    checkpoint.save(folder / CHECKPOINT)
    export_bundle(checkpoint, folder / "bundle", verify=False, progress=False)
    export_bundle(checkpoint, folder / "static", weathers=["rain"],
                  static_shape=(1, 3, 32, 32), verify=False, progress=False)
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(folder / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (WIDTH, HEIGHT))
    (folder / "frames").mkdir()
    for index in range(FRAMES):
        frame = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        writer.write(frame)
        if index < 3:
            cv2.imwrite(str(folder / "frames" / f"img{index}.png"), frame)
    writer.release()
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (links as their target)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------- damage helpers
def edit_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def user_folder(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    write(tmp / "mine" / "notes.txt", "a user's notes")


def interrupt_after(calls: int, target: str, mp: pytest.MonkeyPatch) -> None:
    """Make ``module:Class.method`` raise Ctrl-C on call number ``calls`` + 1."""
    module_name, _, attribute = target.partition(":")
    module = __import__(module_name, fromlist=["_"])
    owner_name, _, method = attribute.rpartition(".")
    owner = getattr(module, owner_name) if owner_name else module
    original = getattr(owner, method)
    count = {"n": 0}

    def wrapped(*args, **kwargs):
        if count["n"] == calls:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(*args, **kwargs)

    mp.setattr(owner, method, wrapped)


def fail_mid_export(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    import gpmask.export.exporter as exporter

    def fail(*args, **kwargs):
        raise GpmaskError("injected failure while verifying the graphs")

    mp.setattr(exporter, "verify_graphs", fail)


def calibrated_then_interrupted(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """The bundle has fp16 graphs; the next calibration is interrupted as it records its
    own (after its files have replaced the old ones)."""
    assert main(["calibrate", str(tmp / "bundle"), "--precision", "fp16", "--eval-size",
                 "32x32", "--no-progress"]) == 0
    interrupt_after(0, "gpmask.bundle:Bundle.save", mp)


def schedule(text: str, name: str = "s.csv") -> Callable[[Path, pytest.MonkeyPatch], None]:
    return lambda tmp, mp: write(tmp / name, text)



# ----------------------------------------------------------------- issue 19's set-ups
def earlier_run_output(tmp: Path, mp: pytest.MonkeyPatch, name: str = "restored") -> None:
    """A folder an earlier ``gpmask run`` wrote (with its marker)."""
    from gpmask.runtime.sinks import ImageFolderSink

    sink = ImageFolderSink(tmp / name)
    for _ in range(2):
        sink.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    sink.close()


def beside_the_output(name: str, folder: bool) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """An earlier output, and a user's hidden ``.NAME.old`` (a folder or a file) beside it."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        if name == "restored":
            earlier_run_output(tmp, mp)
        write(tmp / f".{name}.old" / "important.txt" if folder else tmp / f".{name}.old",
              "a user's file")

    return setup


def fail_in_backend(target: str, at: int) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """The backend ``module:Class`` raises its library's RuntimeError at run call ``at``."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        module_name, _, owner = target.partition(":")
        cls = getattr(__import__(module_name, fromlist=["_"]), owner)
        original, calls = cls.run, {"n": 0}

        def run(self, weather, batch):
            calls["n"] += 1
            if calls["n"] > at:
                raise RuntimeError("Non-zero status code returned while running Conv node. "
                                   "Name:'/conv1/Conv' Status Message: bad allocation")
            return original(self, weather, batch)

        mp.setattr(cls, "run", run)

    return setup


def complete_output_then(then: Callable[[Path, pytest.MonkeyPatch], None]
                         ) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """A complete earlier out.avi (any bytes: it must survive), then ``then``."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        shutil.copy(tmp / "clip.avi", tmp / "out.avi")
        then(tmp, mp)

    return setup


def memory_available(count: int) -> Callable[[Path, pytest.MonkeyPatch], None]:
    return lambda tmp, mp: mp.setattr("gpmask.host.available_memory", lambda: count)


def must_not_run(target: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """``module:function`` or ``module:Class.method`` fails the test if it is reached: the
    row must be refused before that work."""
    module_name, _, attribute = target.partition(":")
    owner_name, _, name = attribute.rpartition(".")

    def reached(*args, **kwargs):
        raise AssertionError(f"{target} ran: the option was not refused before the work")

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        module = __import__(module_name, fromlist=["_"])
        mp.setattr(getattr(module, owner_name) if owner_name else module, name, reached)

    return setup


def rehash(folder: Path) -> None:
    """Update every file record's sha256 to the file as it is (a damage the hashes pass)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    records = list(manifest["weights"]) + [r for per in manifest["graphs"].values()
                                           for r in per.values()]
    records += [manifest["router"]] if "router" in manifest else []
    for record in records:
        record["sha256"] = sha256_file(folder / record["path"])
    path.write_text(json.dumps(manifest))


def swap_graph_files(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    bundle = tmp / "bundle"
    (bundle / "rain.onnx").rename(bundle / "swap")
    (bundle / "snow.onnx").rename(bundle / "rain.onnx")
    (bundle / "swap").rename(bundle / "snow.onnx")
    rehash(bundle)


def swap_graph_records(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    manifest = json.loads((tmp / "bundle" / "manifest.json").read_text())
    graphs = manifest["graphs"]
    graphs["rain"], graphs["snow"] = graphs["snow"], graphs["rain"]
    edit_manifest(tmp / "bundle", graphs=graphs)


def with_router(**changes) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """The bundle gets the shipped demo router (same weathers), then its record ``changes``."""

    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        from gpmask.bundle import Bundle
        from gpmask.export.shipped_router import SHIPPED_ROUTERS, attach_router

        bundle = Bundle.open(tmp / "bundle")
        graph = SHIPPED_ROUTERS["demo"]
        attach_router(bundle, graph, json.loads(graph.with_suffix(".json").read_text()))
        bundle.save()
        router = {**bundle.manifest["router"], **changes}
        edit_manifest(tmp / "bundle", router=router)

    return setup


def graph_not_onnx(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    write(tmp / "bundle" / "rain.onnx", b"not a graph at all")
    rehash(tmp / "bundle")


def graph_linked_out(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    shutil.copy(tmp / "bundle" / "rain.onnx", tmp / "outside.onnx")
    (tmp / "bundle" / "rain.onnx").unlink()
    (tmp / "bundle" / "rain.onnx").symlink_to(tmp / "outside.onnx")


def weights_of_another_bundle(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from gpmask.export import export_bundle

    export_bundle(make_checkpoint(seed=1), tmp / "other", verify=False, progress=False)
    shutil.copy(tmp / "other" / "weights.bin", tmp / "bundle" / "weights.bin")
    manifest = json.loads((tmp / "bundle" / "manifest.json").read_text())
    manifest["weights"][0]["bytes"] = (tmp / "bundle" / "weights.bin").stat().st_size
    (tmp / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    rehash(tmp / "bundle")


def work_in_a_subfolder(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    (tmp / "work").mkdir()
    mp.chdir(tmp / "work")


def torch_files(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """base.pth, w.pth and m.pth (masks as name -> bool tensor) of the test network."""
    import torch

    checkpoint = make_checkpoint()
    torch.save(checkpoint.bake("common"), tmp / "base.pth")
    torch.save(checkpoint.bake("rain"), tmp / "w.pth")
    torch.save({name: torch.from_numpy(mask) for name, mask in checkpoint.masks["rain"].items()},
               tmp / "m.pth")


def checkpoint_without_arch(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    path = tmp / CHECKPOINT
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    meta = json.loads(metadata["gpmask"])
    del meta["arch"]
    save_file(tensors, str(path), metadata={**metadata, "gpmask": json.dumps(meta)})


def odd_sized_frames(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    for index in range(2):
        write(tmp / "odd" / f"{index}.png",
              cv2.imencode(".png", smooth_image(241, 321, index))[1].tobytes())


def video_changing_size(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    frames = [smooth_image(HEIGHT, WIDTH, i) for i in range(3)]
    write_mjpg_avi(tmp / "joined.avi", frames + [smooth_image(48, 64, i) for i in range(3)])


def state_file(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """The training state an interrupted run left, cut short (a full disk, a killed copy)."""
    import torch

    torch.save({"config": {}, "network": {"w": torch.zeros(1000)}}, tmp / "whole.pt")
    data = (tmp / "whole.pt").read_bytes()
    (tmp / "whole.pt").unlink()
    write(tmp / "t.gpmask.safetensors.train-state.pt", data[: len(data) // 2])


def deep_image(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(3).integers(0, 65536, (HEIGHT, WIDTH, 3)).astype(np.uint16)
    write(tmp / "deep.png", cv2.imencode(".png", pixels)[1].tobytes())


def junk_calibration_cache(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """An earlier int8 calibration whose cached ranges were then damaged."""
    from gpmask.calibration.options import CalibrationOptions
    from gpmask.calibration.pipeline import calibrate_bundle

    calibrate_bundle(tmp / "bundle", "int8", CalibrationOptions(
        synthetic=2, calibration_size=(32, 32), eval_size=(32, 32), progress=False))
    for cache in (tmp / "bundle" / "calibration").iterdir():
        cache.write_text("{cut short")


def replace_router_graph(tmp: Path, mp: pytest.MonkeyPatch) -> None:
    """A restoration graph where the router was (hash updated): a graph, not a router."""
    with_router()(tmp, mp)
    shutil.copy(tmp / "bundle" / "common.onnx", tmp / "bundle" / "router.onnx")
    rehash(tmp / "bundle")


def manifest_input(**changes) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(tmp: Path, mp: pytest.MonkeyPatch) -> None:
        spec = json.loads((tmp / "bundle" / "manifest.json").read_text())["input"]
        edit_manifest(tmp / "bundle", input={**spec, **changes})

    return setup


# ----------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` ({tmp} is the row's folder), a regex the error line must
    match, what to do to the inputs first, and the one output allowed to appear."""

    id: str
    argv: str
    message: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
    #: the file or folder (with everything under it) the row may create or replace
    output: str | None = None
    code: int = 2


RUN = "run {tmp}/bundle --no-progress --weather rain"
BAD_MANIFEST = {"weathers": "rain"}

CASES = [
    # --- data loss: never overwrite an input, never delete what gpmask did not write
    Case("run-output-is-the-input-video", RUN + " -i {tmp}/clip.avi -o {tmp}/clip.avi",
         r"output .*clip.avi is the input .*clip.avi; write the output elsewhere"),
    Case("run-output-is-a-link-to-the-input", RUN + " -i {tmp}/clip.avi -o {tmp}/link.avi",
         r"output .*link.avi is the input .*clip.avi",
         lambda tmp, mp: (tmp / "link.avi").symlink_to(tmp / "clip.avi")),
    Case("run-output-folder-is-the-input-folder", RUN + " -i {tmp}/frames -o {tmp}/frames",
         r"output .*frames is the input .*frames"),
    Case("run-output-folder-holds-the-input", RUN + " -i {tmp}/clip.avi -o {tmp}",
         r"output .* would hold the input .*clip.avi"),
    Case("run-log-is-the-input", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi --log {tmp}/clip.avi",
         r"output .*clip.avi is the input"),
    Case("run-log-overwrites-the-manifest",
         RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi --log {tmp}/bundle/manifest.json",
         r"output .*manifest.json is a file of the input folder .*bundle"),
    Case("run-log-and-output-are-one-file",
         RUN + " -i {tmp}/clip.avi -o {tmp}/o.avi --log {tmp}/o.avi",
         r"o.avi is named as two outputs"),
    Case("run-output-folder-of-user-files", RUN + " -i {tmp}/clip.avi -o {tmp}/mine",
         r"mine is not an earlier run's frame folder \(it holds notes.txt\); only an earlier "
         r"run's frame folder or an empty folder is replaced, so it was left as it is",
         user_folder),
    Case("run-output-video-is-a-folder", RUN + " -i {tmp}/clip.avi -o {tmp}/dir.avi",
         r"cannot write .*dir.avi: it is a folder",
         lambda tmp, mp: write(tmp / "dir.avi" / "keep.txt", "keep")),
    Case("export-force-onto-a-file", "export {tmp}/" + CHECKPOINT + " -o {tmp}/notes.txt --force",
         r"notes.txt is a file, not a folder; only a gpmask bundle or an empty folder is "
         r"replaced, so it was left as it is",
         lambda tmp, mp: write(tmp / "notes.txt", "notes")),
    Case("export-force-onto-a-user-folder", "export {tmp}/" + CHECKPOINT + " -o {tmp}/mine --force",
         r"mine is not a gpmask bundle \(it holds notes.txt\); only a gpmask bundle or",
         user_folder),
    Case("export-force-onto-a-link", "export {tmp}/" + CHECKPOINT + " -o {tmp}/link --force",
         r"link is a symbolic link, not a folder",
         lambda tmp, mp: (tmp / "link").symlink_to(tmp / "bundle")),
    Case("export-onto-a-bundle-without-force", "export {tmp}/" + CHECKPOINT + " -o {tmp}/bundle",
         r"bundle exists; pass --force to replace it"),
    Case("export-force-onto-the-bundle-holding-the-checkpoint",
         "export {tmp}/bundle/" + CHECKPOINT + " -o {tmp}/bundle --force",
         r"output .*bundle would hold the input .*bundle/model.gpmask.safetensors",
         lambda tmp, mp: shutil.copy(tmp / CHECKPOINT, tmp / "bundle")),
    Case("demo-force-onto-a-user-folder", "demo --bundle {tmp}/bundle -o {tmp}/mine --force",
         r"mine is not a gpmask demo folder \(it holds notes.txt\)", user_folder),
    Case("demo-output-is-its-bundle", "demo --bundle {tmp}/bundle -o {tmp}/bundle --force",
         r"output .*bundle is the input .*bundle"),
    Case("eval-output-is-the-checkpoint", "eval {tmp}/" + CHECKPOINT + " -o {tmp}/" + CHECKPOINT,
         r"output .*model.gpmask.safetensors is the input"),
    Case("import-output-is-the-base",
         "import --arch msunet --base {tmp}/base.pth --weather rain={tmp}/w.pth:{tmp}/m.pth "
         "-o {tmp}/base.pth", r"output .*base.pth is the input .*base.pth",
         lambda tmp, mp: [write(tmp / n, b"x") for n in ("base.pth", "w.pth", "m.pth")]),
    Case("train-output-is-a-folder", "train --preset demo -o {tmp}/mine --no-progress",
         r"cannot write .*mine: it is a folder", user_folder),
    Case("bench-output-is-a-file", "bench {tmp}/bundle -o {tmp}/notes.txt --no-progress",
         r"cannot write into .*notes.txt: it is a file, not a folder",
         lambda tmp, mp: write(tmp / "notes.txt", "notes")),
    Case("bench-output-is-the-bundle", "bench {tmp}/bundle -o {tmp}/bundle --no-progress",
         r"output .*bundle is the input .*bundle"),
    # --- tracebacks that became one line
    Case("run-output-in-proc", RUN + " -i {tmp}/clip.avi -o /proc/gpmask-x.avi",
         r"cannot write /proc/gpmask-x.avi: No such file or directory"),
    Case("run-output-in-sys", RUN + " -i {tmp}/clip.avi -o /sys/gpmask-x.avi",
         r"cannot write /sys/gpmask-x.avi: Permission denied"),
    Case("run-output-folder-in-proc", RUN + " -i {tmp}/clip.avi -o /proc/gpmask-frames",
         r"cannot write /proc/gpmask-frames: No such file or directory"),
    Case("inspect-manifest-weathers-a-string", "inspect {tmp}/bundle",
         r"manifest.json: 'weathers' must be an array of strings",
         lambda tmp, mp: edit_manifest(tmp / "bundle", **BAD_MANIFEST)),
    Case("calibrate-manifest-graphs-a-list", "calibrate {tmp}/bundle --precision fp16",
         r"manifest.json: 'graphs' must be an object of weather -> precision",
         lambda tmp, mp: edit_manifest(tmp / "bundle", graphs=[])),
    Case("bench-manifest-weathers-a-string", "bench {tmp}/bundle -o {tmp}/b --no-progress",
         r"manifest.json: 'weathers' must be an array of strings",
         lambda tmp, mp: edit_manifest(tmp / "bundle", **BAD_MANIFEST)),
    Case("run-manifest-weathers-a-string", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"manifest.json: 'weathers' must be an array of strings",
         lambda tmp, mp: edit_manifest(tmp / "bundle", **BAD_MANIFEST)),
    Case("build-manifest-input-a-string", "build {tmp}/bundle --precision fp32",
         r"manifest.json: 'input' must be a tensor description",
         lambda tmp, mp: edit_manifest(tmp / "bundle", input="image")),
    Case("train-router-manifest-weights-an-object", "train-router {tmp}/bundle --no-progress",
         r"manifest.json: 'weights' must be an array of weight file records",
         lambda tmp, mp: edit_manifest(tmp / "bundle", weights={})),
    Case("run-manifest-router-classes-a-string",
         "run {tmp}/bundle --no-progress --weather auto -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"manifest.json: 'router.classes' must be an array of class names",
         lambda tmp, mp: edit_manifest(tmp / "bundle", router={
             "path": "router.onnx", "sha256": "0" * 64, "classes": "clear",
             "input_size": [96, 96]})),
    Case("calibrate-weights-missing", "calibrate {tmp}/bundle --precision fp16",
         r"bundle file weights.bin is missing from",
         lambda tmp, mp: (tmp / "bundle" / "weights.bin").unlink()),
    # --- silent wrong results that became errors
    Case("inspect-flipped-weights-byte", "inspect {tmp}/bundle",
         r"bundle file weights.bin does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "weights.bin")),
    Case("inspect-flipped-graph-byte", "inspect {tmp}/bundle",
         r"bundle file rain.onnx does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "rain.onnx")),
    Case("inspect-weights-missing", "inspect {tmp}/bundle",
         r"bundle file weights.bin is missing from",
         lambda tmp, mp: (tmp / "bundle" / "weights.bin").unlink()),
    Case("calibrate-tampered-weights", "calibrate {tmp}/bundle --precision fp16",
         r"weights.bin does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "weights.bin")),
    Case("build-tampered-weights", "build {tmp}/bundle --precision fp32",
         r"weights.bin does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "weights.bin")),
    Case("bench-tampered-weights", "bench {tmp}/bundle -o {tmp}/b --no-progress",
         r"weights.bin does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "weights.bin")),
    Case("train-router-tampered-graph", "train-router {tmp}/bundle --no-progress",
         r"snow.onnx does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "snow.onnx")),
    Case("demo-tampered-weights", "demo --bundle {tmp}/bundle -o {tmp}/demo --no-progress",
         r"weights.bin does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "weights.bin")),
    Case("schedule-overlapping-entries", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"s.csv: entry 1 \(0-4 rain\) and entry 2 \(2-6 snow\) overlap",
         schedule("start,end,weather\n0,4,rain\n2,6,snow\n")),
    Case("schedule-repeated-entry", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"entry 1 \(0- snow\) and entry 2 \(0- snow\) overlap",
         schedule("start,end,weather\n0,,snow\n0,,snow\n")),
    Case("schedule-json-overlap-in-seconds", RUN.replace("rain", "{tmp}/s.json")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"entry 1 \(0s-1s rain\) and entry 2 \(0.5s- snow\) overlap",
         schedule(json.dumps([{"start": "0s", "end": "1s", "weather": "rain"},
                              {"start": "0.5s", "weather": "snow"}]), "s.json")),
    Case("schedule-short-row", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"s.csv line 3: the row has too few fields; expected start,end,weather",
         schedule("start,end,weather\n0,3,rain\n3\n")),
    Case("schedule-long-row", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"s.csv line 2: the row has too many fields",
         schedule("start,end,weather\n0,3,rain,snow\n")),
    Case("bench-unknown-precision", "bench {tmp}/bundle --precisions fp32,int4 -o {tmp}/b "
         "--no-progress", r"--precisions: unknown precision 'int4'; known precisions: "
         + re.escape(", ".join(PRECISIONS)) + "$"),
    Case("run-unknown-precision", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi --precision int4",
         r"argument --precision: invalid choice: 'int4' \(choose from 'auto', "
         + re.escape(", ".join(f"'{p}'" for p in PRECISIONS)) + r"\)"),
    # --- TensorRT paths reachable without TensorRT
    Case("build-static-bundle-with-contradicting-sizes",
         "build {tmp}/static --precision fp32 --min-size 32x32 --max-size 128x128",
         r"the profile \(min 32x32, opt 720x1280, max 128x128\) contradicts the bundle's "
         r"static input shape 1x3x32x32"),
    Case("build-bad-size", "build {tmp}/bundle --precision fp32 --max-size 256",
         r"gpmask build: argument --max-size: size '256' is not HxW"),
    Case("build-size-not-a-multiple", "build {tmp}/bundle --precision fp32 --max-size 250x250",
         r"--max-size 250x250: height and width must be multiples of 4"),
    Case("build-missing-precision", "build {tmp}/bundle --precision int8",
         r"has no int8 graph for rain, raindrop, snow, common; run: gpmask calibrate"),
    # --- issue 19, finding 1: replacing an output never deletes a sibling nobody named
    Case("run-replace-keeps-a-hidden-old-folder", RUN + " -i {tmp}/frames -o {tmp}/restored",
         "", beside_the_output("restored", folder=True), output="restored", code=0),
    Case("run-replace-with-a-hidden-old-file", RUN + " -i {tmp}/frames -o {tmp}/restored",
         "", beside_the_output("restored", folder=False), output="restored", code=0),
    Case("export-force-keeps-a-hidden-old-folder",
         "export {tmp}/" + CHECKPOINT + " -o {tmp}/bundle --force --no-verify --no-progress",
         "", beside_the_output("bundle", folder=True), output="bundle", code=0),
    # --- finding 2: a run stopped short never replaces a complete output
    Case("run-interrupted-keeps-the-complete-output", RUN + " -i {tmp}/clip.avi -o "
         "{tmp}/out.avi", r"^gpmask: interrupted$", complete_output_then(
             lambda tmp, mp: interrupt_after(3, "gpmask.runtime.restorer:Restorer.restore", mp)),
         output="out.partial.avi", code=130),
    Case("run-failing-input-keeps-the-complete-output", RUN + " -i {tmp}/cut.avi -o "
         "{tmp}/out.avi", r"truncated or damaged video: .* (were|was) kept in .*out.partial.avi",
         complete_output_then(lambda tmp, mp: write(
             tmp / "cut.avi", (tmp / "clip.avi").read_bytes()[:6000])),
         output="out.partial.avi"),
    Case("run-onnxruntime-fails-at-run-time", RUN + " --backend onnxruntime-cpu -i {tmp}/clip.avi"
         " -o {tmp}/out.avi", r"^frame 2: onnxruntime-cpu failed to restore a 1x3x24x32 batch "
         r"with the rain network: Non-zero status code .* \(2 frames done were kept in "
         r".*out.partial.avi; .*out.avi was left as it was\)$",
         complete_output_then(fail_in_backend(
             "gpmask.runtime.backends.onnxruntime:OnnxRuntimeBackend", 2)),
         output="out.partial.avi"),
    Case("run-openvino-fails-at-run-time", RUN + " --backend openvino -i {tmp}/clip.avi -o "
         "{tmp}/out.avi", r"^frame 0: openvino failed to restore a 1x3x24x32 batch with the rain "
         r"network: Non-zero status code",
         fail_in_backend("gpmask.runtime.backends.openvino:OpenVinoBackend", 0)),
    # --- finding 3: a user's folder is never replaced, even holding gpmask's names
    Case("run-output-folder-of-user-frames", RUN + " -i {tmp}/clip.avi -o {tmp}/myframes",
         r"myframes is not an earlier run's frame folder \(it holds frame_000001.png\)",
         lambda tmp, mp: write(tmp / "myframes" / "frame_000001.png",
                               cv2.imencode(".png", smooth_image(8, 8))[1].tobytes())),
    Case("run-output-folder-a-user-added-to", RUN + " -i {tmp}/clip.avi -o {tmp}/restored",
         r"restored is not an earlier run's frame folder \(it holds",
         lambda tmp, mp: (earlier_run_output(tmp, mp),
                          write(tmp / "restored" / "notes.txt", "mine"))),
    # --- finding 5: frames and sizes beyond the memory there is are refused up front
    Case("run-frame-beyond-memory", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"^frame 0: (openvino|onnxruntime-cpu): a 24x32 frame \(\d+ bytes per pixel of "
         r"working memory, estimated from .*network\) needs about .* of memory, and .* is "
         r"available; frames up to about \d+x\d+ pixels \(.* megapixels\) fit here: resize the "
         r"frames, or restore them in tiles$", memory_available(100_000)),
    Case("bench-size-beyond-memory", "bench {tmp}/bundle --sizes 100000x100000 -o {tmp}/b "
         "--no-progress", r"^--sizes: a 100000x100000 frame \(\d+ bytes per pixel of working "
         r"memory, .*\) needs about .* GiB of memory"),
    Case("train-router-no-members", "train-router {tmp}/bundle --members 0 --no-progress",
         r"--members must be at least 1, got 0",
         must_not_run("gpmask.router.training:train_router")),
    # --- finding 6: graphs and router carry their identity, checked on load
    Case("run-graph-files-swapped", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file rain.onnx is the snow network, but the manifest records it as rain's "
         r"fp32 graph", swap_graph_files),
    Case("run-graph-records-swapped", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file snow.onnx is the snow network, but the manifest records it as rain's",
         swap_graph_records),
    Case("run-weights-of-another-bundle", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"was written with other weight files than those the manifest records",
         weights_of_another_bundle),
    Case("run-router-classes-reordered", RUN.replace("rain", "auto") + " -i {tmp}/clip.avi "
         "-o {tmp}/out.avi", r"router.onnx was trained for the classes \['clear', 'rain', "
         r"'raindrop', 'snow'\] \(in that order\), but the manifest lists \['clear', 'snow'",
         with_router(classes=["clear", "snow", "raindrop", "rain"])),
    Case("run-router-classes-clear-only", RUN.replace("rain", "auto") + " -i {tmp}/clip.avi "
         "-o {tmp}/out.avi", r"router.onnx was trained for the classes .* but the manifest "
         r"lists \['clear'\]", with_router(classes=["clear"])),
    Case("run-router-input-size-5x5", RUN.replace("rain", "auto") + " -i {tmp}/clip.avi "
         "-o {tmp}/out.avi", r"router input_size \[5, 5\] is not the 64x64 input of router.onnx",
         with_router(input_size=[5, 5])),
    Case("run-size-multiple-3", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"input size_multiple 3 does not fit the network in .*onnx, which needs multiples of 4",
         lambda tmp, mp: edit_manifest(tmp / "bundle", input={
             **json.loads((tmp / "bundle" / "manifest.json").read_text())["input"],
             "size_multiple": 3})),
    Case("run-graph-not-onnx", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file rain.onnx is not a readable ONNX graph", graph_not_onnx),
    Case("inspect-graph-not-onnx", "inspect {tmp}/bundle --layers",
         r"rain.onnx is not a readable ONNX graph", graph_not_onnx),
    Case("run-graph-linked-out-of-the-bundle", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file rain.onnx is a link to .*outside.onnx, outside the bundle folder",
         graph_linked_out),
    # --- finding 7: options that reached tracebacks
    Case("run-camera-index-beyond-int", RUN + " -i 2147483648 -o {tmp}/out.avi",
         r"camera 2147483648: no such camera"),
    Case("run-output-empty", RUN + " -i {tmp}/clip.avi -o ''",
         r"argument -o/--output: an empty path"),
    Case("run-output-current-folder", RUN + " -i {tmp}/clip.avi -o .",
         r"-o \.: name the output folder itself", work_in_a_subfolder),
    Case("train-crop-not-a-multiple", "train --preset demo -o {tmp}/t.gpmask.safetensors "
         "--crop 30 --no-progress", r"--crop 30: tiny needs crops whose side is a multiple of",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-base-lr-nan", "train --preset demo -o {tmp}/t.gpmask.safetensors --base-lr nan "
         "--no-progress", r"--base-lr must be a finite number > 0, got nan",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-masked-lr-negative", "train --preset demo -o {tmp}/t.gpmask.safetensors "
         "--masked-lr -1 --no-progress", r"--masked-lr must be a finite number > 0, got -1",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-top-fraction-zero", "train --preset demo --selection consecutive -o "
         "{tmp}/t.gpmask.safetensors --top-fraction 0 --no-progress",
         r"--top-fraction must be in \(0, 1\], got 0", must_not_run(
             "gpmask.masking.trainer:Trainer.run")),
    Case("train-consecutive-zero", "train --preset demo --selection consecutive -o "
         "{tmp}/t.gpmask.safetensors --consecutive 0 --no-progress",
         r"--consecutive must be at least 1, got 0",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-truncated-state", "train --preset demo -o {tmp}/t.gpmask.safetensors "
         "--no-progress", r"t.gpmask.safetensors.train-state.pt: damaged or truncated training "
         r"state \(.*\); delete it to start over", state_file),
    Case("import-arch-kwargs-that-do-not-fit",
         "import --arch msunet --arch-kwargs '{{\"base_channels\": 8, \"num_res_blocks\": 1}}' "
         "--base {tmp}/base.pth --weather rain={tmp}/w.pth:{tmp}/m.pth -o {tmp}/i.safetensors",
         r"(does not fit|shape)", torch_files),
    Case("eval-size-too-small", "eval {tmp}/" + CHECKPOINT + " --size 4x4 --no-progress",
         r"--size 4x4: eval needs images of at least 32x32"),
    Case("demo-odd-size", "demo --bundle {tmp}/bundle --size 63x65 -o {tmp}/demo --no-progress",
         r"--size 63x65: the demo writes videos, whose height and width must be even"),
    Case("export-checkpoint-without-arch", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out",
         r"damaged gpmask metadata \(no 'arch'\)", checkpoint_without_arch),
    # --- finding 8: options that were silently accepted
    Case("eval-count-zero", "eval {tmp}/" + CHECKPOINT + " --count 0 --no-progress",
         r"--count must be at least 1, got 0"),
    Case("eval-count-negative", "eval {tmp}/" + CHECKPOINT + " --count -2 --no-progress",
         r"--count must be at least 1, got -2"),
    Case("bench-backends-empty", "bench {tmp}/bundle --backends '' -o {tmp}/b --no-progress",
         r"argument --backends: '' names nothing"),
    Case("calibrate-fp16-io-with-int8", "calibrate {tmp}/bundle --precision int8 --fp16-io",
         r"--fp16-io applies to --precision fp16 only, not int8"),
    Case("run-input-empty", RUN + " -i '' -o {tmp}/out.avi",
         r"argument -i/--input: an empty path"),
    # --- finding 9: what OpenCV's readers and writers let through
    Case("run-odd-sized-frames-to-a-video", RUN + " -i {tmp}/odd -o {tmp}/out.avi",
         r"out.avi: frames of 321x241 cannot be stored in a .avi video, whose encoders need an "
         r"even width and height", odd_sized_frames),
    Case("run-video-changing-size", RUN + " -i {tmp}/joined.avi -o {tmp}/out.avi",
         r"joined.avi: frame 3 is 64x48, the frames before it 32x24; .* \(3 frames done were "
         r"kept in .*out.partial.avi", video_changing_size, output="out.partial.avi"),
    Case("run-truncated-jpeg", RUN + " -i {tmp}/cut.jpg -o {tmp}/out.jpg",
         r"cut.jpg: cannot read image: truncated or damaged JPEG",
         lambda tmp, mp: truncated_jpeg(tmp / "cut.jpg", smooth_image(48, 64))),
    # --- issue 23: an image output keeps what the image was, or refuses
    Case("run-16-bit-image-to-jpeg", RUN + " -i {tmp}/deep.png -o {tmp}/out.jpg",
         r"out.jpg: the input has 16-bit pixels and .jpg stores 8 bits; write .png, .tif",
         deep_image),
    Case("run-16-bit-image-to-video", RUN + " -i {tmp}/deep.png -o {tmp}/out.avi",
         r"out.avi: the input has 16-bit pixels and videos store 8 bits", deep_image),
    Case("run-video-to-an-image", RUN + " -i {tmp}/clip.avi -o {tmp}/out.png",
         r"out.png: an image output takes one image as input"),
    # --- found by the second sweep (issue 19's closing note)
    Case("run-switch-after-zero-with-a-fixed-weather", RUN + " -i {tmp}/clip.avi -o "
         "{tmp}/out.avi --switch-after 0", r"--switch-after must be at least 1, got 0"),
    Case("run-log-in-a-missing-folder", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi --log "
         "{tmp}/none/log.csv", r"cannot write .*none/log.csv: folder .*none does not exist"),
    Case("run-hidden-resource-forks-in-a-folder", RUN + " -i {tmp}/frames -o {tmp}/restored",
         "", lambda tmp, mp: write(tmp / "frames" / "._img0.png", b"\0\5\x16\7 a Mac's fork"),
         output="restored", code=0),
    Case("eval-seed-negative", "eval {tmp}/" + CHECKPOINT + " --seed -1 --count 1 "
         "--no-progress", r"--seed must be >= 0, got -1"),
    Case("eval-size-beyond-memory", "eval {tmp}/" + CHECKPOINT + " --size 40000x40000 --count 1 "
         "--no-progress", r"--size 40000x40000 --count 1: .* needs about .* GiB of memory, and "
         r".* is available; lower --size or --count"),
    Case("eval-count-beyond-memory", "eval {tmp}/" + CHECKPOINT + " --count 100000000 "
         "--no-progress", r"--count 100000000: .* needs about .* of memory",
         must_not_run("gpmask.data.sources:SyntheticPairs.eval_pairs")),
    Case("train-seed-negative", "train --preset demo -o {tmp}/t.gpmask.safetensors --seed -1 "
         "--no-progress", r"--seed must be >= 0, got -1",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-batch-beyond-memory", "train --preset demo -o {tmp}/t.gpmask.safetensors "
         "--batch-size 10000000 --no-progress", r"a training step of 30000000 crops of 64x64 "
         r"\(\d+ bytes per pixel kept for backward, measured on tiny\) needs about .* GiB of "
         r"memory, .*; lower --batch-size or --crop",
         must_not_run("gpmask.masking.trainer:Trainer.run")),
    Case("train-router-seed-negative", "train-router {tmp}/bundle --seed -1 --no-progress",
         r"--seed must be >= 0, got -1", must_not_run("gpmask.router.training:train_router")),
    Case("bench-checkpoint-of-another-network", "bench {tmp}/bundle --backends torch "
         "--checkpoint demo --sizes 32x32 -o {tmp}/b --no-progress",
         r"checkpoint .*demo.gpmask.safetensors is not the one bundle .* was exported from "
         r"\(its network is \{'arch': 'tiny'"),
    Case("bench-output-a-users-folder", "bench {tmp}/bundle --backends onnxruntime-cpu "
         "--precisions fp32 --sizes 32x32 --iters 1 --warmup 0 -o {tmp}/mine --no-progress",
         r"mine is not an earlier bench report \(it holds bench.md\)",
         lambda tmp, mp: write(tmp / "mine" / "bench.md", "my own notes")),
    Case("demo-frames-beyond-memory", "demo --bundle {tmp}/bundle -o {tmp}/demo --frames "
         "100000000 --no-progress", r"--frames 100000000 --size 192x192: .* needs about .* of "
         r"memory", must_not_run("gpmask.demo.app:make_clip")),
    Case("demo-size-beyond-memory", "demo -o {tmp}/demo --size 40000x40000 --no-progress",
         r"--frames 96 --size 40000x40000: .* needs about .* of memory",
         must_not_run("gpmask.demo.app:make_clip")),
    Case("export-verifying-a-size-beyond-memory", "export {tmp}/" + CHECKPOINT + " -o "
         "{tmp}/out --size 40000x40000 --no-progress", r"verifying the graphs at "
         r"1x3x40000x40000 needs about .* of memory, .*; export with --no-verify",
         must_not_run("gpmask.export.exporter:trace_graph")),
    Case("calibrate-data-missing-a-weather", "calibrate {tmp}/bundle --precision int8 --data "
         "{tmp}/cal --no-progress", r"calibration folder .*cal/raindrop does not exist",
         lambda tmp, mp: [write(tmp / "cal" / "rain" / f"{i}.png", (tmp / "frames" /
                                f"img{i}.png").read_bytes()) for i in range(3)]),
    Case("calibrate-eval-size-beyond-the-images", "calibrate {tmp}/bundle --precision fp16 "
         "--eval-size 4000x4000 --no-progress", r"--eval-size 4000x4000: the held-out images "
         r"are \d+x\d+ at the smallest"),
    Case("calibrate-damaged-cache", "calibrate {tmp}/bundle --precision int8 --synthetic 2 "
         "--calibration-size 32x32 --eval-size 32x32 --no-progress", "",
         junk_calibration_cache, output="bundle", code=0),
    Case("calibrate-damaged-report", "calibrate {tmp}/bundle --precision fp16 --eval-size "
         "32x32 --no-progress", "",
         lambda tmp, mp: write(tmp / "bundle" / "reports" / "calibration.json", "[1,"),
         output="bundle", code=0),
    Case("run-router-replaced-by-a-restoration-graph", RUN.replace("rain", "auto")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"bundle file router.onnx is not a router",
         replace_router_graph),
    Case("run-manifest-input-dtype", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"'input.dtype' must be 'float32'", manifest_input(dtype="float16")),
    Case("run-manifest-input-range", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"'input.range' must be \[0, 1\]", manifest_input(range=[0, 255])),
    Case("run-manifest-input-color", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"'input.color' must be 'RGB'", manifest_input(color="BGR")),
    Case("run-manifest-input-layout", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"'input.layout' must be 'NCHW'", manifest_input(layout="NHWC")),
    # --- cases that already behaved well
    Case("export-truncated-checkpoint", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out",
         r"model.gpmask.safetensors is not a readable safetensors file",
         lambda tmp, mp: write(tmp / CHECKPOINT, (tmp / CHECKPOINT).read_bytes()[:1000])),
    Case("export-empty-checkpoint", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out",
         r"model.gpmask.safetensors is not a readable safetensors file",
         lambda tmp, mp: write(tmp / CHECKPOINT, b"")),
    Case("export-random-bytes-checkpoint", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out",
         r"model.gpmask.safetensors is not a readable safetensors file",
         lambda tmp, mp: write(tmp / CHECKPOINT, np.random.default_rng(0).bytes(4096))),
    Case("inspect-random-bytes-checkpoint", "inspect {tmp}/" + CHECKPOINT,
         r"is not a readable safetensors file",
         lambda tmp, mp: write(tmp / CHECKPOINT, np.random.default_rng(1).bytes(4096))),
    Case("export-missing-checkpoint", "export {tmp}/none.gpmask.safetensors -o {tmp}/out",
         r"checkpoint .*none.gpmask.safetensors does not exist"),
    Case("export-unknown-weather", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --weathers "
         "rain,hail", r"unknown weather 'hail'; this checkpoint has: rain, raindrop, snow"),
    Case("export-size-one-side", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --size 720",
         r"gpmask export: argument --size: size '720' is not HxW"),
    Case("export-batch-without-size", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --batch 2",
         r"--batch needs --size"),
    Case("export-size-not-a-multiple", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --size "
         "30x40", r"bad shape 1x3x30x40: height and width must be multiples of 4"),
    Case("export-fails-midway", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --no-progress",
         r"injected failure while verifying the graphs", fail_mid_export),
    Case("export-interrupted", "export {tmp}/" + CHECKPOINT + " -o {tmp}/out --no-progress",
         r"^gpmask: interrupted$",
         lambda tmp, mp: interrupt_after(0, "gpmask.export.exporter:verify_graphs", mp),
         code=130),
    Case("calibrate-interrupted-while-recording", "calibrate {tmp}/bundle --precision fp16 "
         "--fp16-io --eval-size 32x32 --no-progress", r"^gpmask: interrupted$",
         calibrated_then_interrupted, code=130),
    Case("run-not-a-bundle", "run {tmp}/frames -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"frames is not a gpmask bundle \(no manifest.json\)"),
    Case("run-manifest-not-json", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"manifest.json: unreadable manifest",
         lambda tmp, mp: write(tmp / "bundle" / "manifest.json", "{not json")),
    Case("run-manifest-newer-format", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle format 99 is newer than this gpmask reads \(1\); upgrade gpmask",
         lambda tmp, mp: edit_manifest(tmp / "bundle", format_version=99)),
    Case("run-graph-missing", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file snow.onnx is missing from",
         lambda tmp, mp: (tmp / "bundle" / "snow.onnx").unlink()),
    Case("run-flipped-graph-byte", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"bundle file common.onnx does not match its manifest sha256",
         lambda tmp, mp: flip_byte(tmp / "bundle" / "common.onnx")),
    Case("run-truncated-video", RUN + " -i {tmp}/cut.avi -o {tmp}/out.avi",
         r"cut.avi: truncated or damaged video: decoded \d of the 6 frames .* \(\d frames? "
         r"done (were|was) kept in .*out.partial.avi; .*out.avi was left as it was\)",
         lambda tmp, mp: write(tmp / "cut.avi", (tmp / "clip.avi").read_bytes()[:6000]),
         output="out.partial.avi"),
    Case("run-empty-video", RUN + " -i {tmp}/empty.avi -o {tmp}/out.avi",
         r"empty.avi: empty file", lambda tmp, mp: write(tmp / "empty.avi", b"")),
    Case("run-junk-video", RUN + " -i {tmp}/junk.avi -o {tmp}/out.avi",
         r"junk.avi: not a video OpenCV can read",
         lambda tmp, mp: write(tmp / "junk.avi", b"junk" * 100)),
    Case("run-missing-input", RUN + " -i {tmp}/missing.mp4 -o {tmp}/out.avi",
         r"missing.mp4: no such file or folder"),
    Case("run-empty-folder", RUN + " -i {tmp}/nothing -o {tmp}/out.avi",
         r"nothing: no images \(.png", lambda tmp, mp: (tmp / "nothing").mkdir()),
    Case("run-camera-that-does-not-exist", RUN + " -i 57 -o {tmp}/out.avi",
         r"camera 57: cannot be opened \(no such camera or it is busy\)"),
    Case("run-unknown-weather", RUN.replace("rain", "fog") + " -i {tmp}/clip.avi -o "
         "{tmp}/out.avi", r"--weather 'fog': not a weather of this bundle"),
    Case("run-auto-without-router", RUN.replace("rain", "auto") + " -i {tmp}/clip.avi -o "
         "{tmp}/out.avi", r"has no weather router; train one with"),
    Case("run-unsupported-output", RUN + " -i {tmp}/clip.avi -o {tmp}/out.gif",
         r"out.gif: unsupported output .gif"),
    Case("run-output-folder-missing", RUN + " -i {tmp}/clip.avi -o {tmp}/no/such/out.avi",
         r"cannot write .*out.avi: folder .*no/such does not exist"),
    Case("run-unknown-backend", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi --backend onnx",
         r"argument --backend: invalid choice: 'onnx' \(choose from 'auto', 'onnxruntime', "
         r"'tensorrt'"),
    Case("run-static-bundle-wrong-frame-size",
         "run {tmp}/static --no-progress --weather rain -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"was exported for input 1x3x32x32 only, and these frames make 1x3x24x32"),
    Case("run-interrupted", RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"^gpmask: interrupted$",
         lambda tmp, mp: interrupt_after(3, "gpmask.runtime.restorer:Restorer.restore", mp),
         output="out.partial.avi", code=130),
    Case("schedule-not-json", RUN.replace("rain", "{tmp}/s.json")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"s.json: not valid JSON",
         schedule("{not json", "s.json")),
    Case("schedule-without-header", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"expected a CSV header start,end,weather",
         schedule("from,to,weather\n0,5,rain\n")),
    Case("schedule-bad-bound", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"bound 'soon' is neither a frame index",
         schedule("start,end,weather\nsoon,5,rain\n")),
    Case("schedule-end-before-start", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"'end' must be after 'start'",
         schedule("start,end,weather\n5,2,rain\n")),
    Case("schedule-unknown-weather", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi",
         r"entry 1: weather 'fog' is not one of rain, raindrop, snow",
         schedule("start,end,weather\n0,5,fog\n")),
    Case("schedule-empty", RUN.replace("rain", "{tmp}/s.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"the schedule has no entries",
         schedule("start,end,weather\n")),
    Case("schedule-missing", RUN.replace("rain", "{tmp}/none.csv")
         + " -i {tmp}/clip.avi -o {tmp}/out.avi", r"none.csv: no such schedule file"),
    Case("inspect-damaged-manifest-default-weather", "inspect {tmp}/bundle",
         r"'default_weather' 'fog' is not one of 'weathers'",
         lambda tmp, mp: edit_manifest(tmp / "bundle", default_weather="fog")),
    Case("calibrate-bad-size", "calibrate {tmp}/bundle --precision int8 --eval-size 30x30",
         r"--eval-size 30x30: height and width must be multiples of 4"),
    Case("bench-bad-size", "bench {tmp}/bundle --sizes 720 -o {tmp}/b --no-progress",
         r"gpmask bench: argument --sizes: size '720' is not HxW"),
    Case("demo-bad-size", "demo -o {tmp}/demo --size 30", r"argument --size: size '30' is not HxW"),
    Case("demo-too-small", "demo -o {tmp}/demo --size 30x30",
         r"the demo needs frames of at least 32x32"),
    Case("run-output-folder-missing", RUN + " -i {tmp}/clip.avi -o {tmp}/none/out.avi",
         r"cannot write .*none/out.avi: folder .*none does not exist"),
    Case("export-output-folder-missing", "export {tmp}/" + CHECKPOINT + " -o {tmp}/none/b",
         r"cannot write .*none/b: folder .*none does not exist"),
    Case("bench-output-folder-missing", "bench {tmp}/bundle -o {tmp}/none/b --no-progress",
         r"cannot write .*none/b: folder .*none does not exist"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_ends_in_one_line_and_changes_nothing(
    case: Case, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for item in assets.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    monkeypatch.chdir(tmp_path)
    if case.setup:
        case.setup(tmp_path, monkeypatch)
    before = snapshot(tmp_path)

    hidden = _hidden(tmp_path)
    code = main(shlex.split(case.argv.format(tmp=tmp_path)))

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert "Traceback" not in err
    if case.code == 2:
        assert [line for line in lines if line.startswith("gpmask: error:")] == [lines[-1]], err
        assert _matches(case.message, lines[-1].removeprefix("gpmask: error: ")), lines[-1]
    elif case.code == 0:
        assert "gpmask: error:" not in err
    else:
        assert _matches(case.message, lines[-1]), err
    after = snapshot(tmp_path)
    if case.output is None:
        assert after == before
    else:
        inside = f"{case.output}/"
        kept = {k: v for k, v in after.items() if k != case.output and not k.startswith(inside)}
        assert kept == {k: v for k, v in before.items()
                        if k != case.output and not k.startswith(inside)}
        assert any(k == case.output or k.startswith(inside) for k in after)
    assert _hidden(tmp_path) == hidden  # no temporary file or folder left


def _hidden(folder: Path) -> list[str]:
    """Hidden files and folders under ``folder``: a command's temporary outputs."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*"))


def _matches(pattern: str, line: str) -> bool:
    return re.search(pattern, line) is not None


# ----------------------------------------------------------------- Restorer (Python API)
@pytest.fixture(scope="module")
def restorer(assets: Path):
    from gpmask.runtime import Restorer

    with Restorer(assets / "bundle", backend="onnxruntime-cpu") as loaded:
        yield loaded


@pytest.mark.parametrize(("frame", "message"), [
    (np.full((8, 8, 3), 200.0, np.float32),
     r"float32 frame has values in \[200, 200\]; float frames must be in \[0, 1\] \(divide "
     r"0-255 values by 255, or pass uint8 frames, which are accepted as they are\)"),
    (np.linspace(0, 255, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3),
     r"values in \[0, 255\]; float frames must be in \[0, 1\]"),
    (np.full((8, 8, 3), -0.5, np.float64), r"float64 frame has values in \[-0.5, -0.5\]"),
    (np.where(np.eye(8, dtype=bool)[..., None], np.nan, 0.5).astype(np.float32).repeat(3, 2),
     r"float32 frame has NaN or infinite values; float frames must hold finite values in "
     r"\[0, 1\] \(uint8 frames are accepted as they are\)"),
    (np.full((8, 8), np.inf, np.float64), r"float64 frame has NaN or infinite values"),
    (np.zeros((8, 8, 3), np.float16), r"frame dtype float16 is not supported; give uint8 "
                                      r"\(0-255\) or float32/float64 \(0-1\) pixels"),
])
def test_restorer_refuses_frames_outside_the_float_range(restorer, frame, message) -> None:
    with pytest.raises(GpmaskError, match=message):
        restorer.restore(frame, "rain")


def test_a_closed_restorer_refuses_frames(assets: Path) -> None:
    from gpmask.runtime import Restorer

    restorer = Restorer(assets / "bundle", backend="onnxruntime-cpu")
    restorer.close()
    with pytest.raises(GpmaskError, match=r"^this Restorer is closed; make a new one"):
        restorer.restore(np.zeros((8, 8, 3), np.uint8), "rain")


def test_float64_frames_are_restored_like_float32(restorer) -> None:
    frame = np.random.default_rng(4).random((13, 17, 3))
    restored = restorer.restore(frame, "snow")
    assert restored.dtype == np.float64 and restored.shape == frame.shape
    np.testing.assert_allclose(restored, restorer.restore(frame.astype(np.float32), "snow"),
                               atol=1e-7)
    edge = np.clip(frame + 5e-4, 0, 1 + 5e-4)  # within the tolerance: rounding, not a range
    assert restorer.restore(edge, "snow").dtype == np.float64


# ----------------------------------------------------------------- read-only, preset steps
@pytest.fixture
def read_only_bundle(assets: Path, tmp_path: Path):
    """A copy of the bundle no one may write into: by its modes, or, for root (whom modes
    do not stop), a read-only bind mount; skipped where neither can be made."""
    folder = tmp_path / "bundle"
    shutil.copytree(assets / "bundle", folder)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("running as root without the right to mount: no read-only folder here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_calibrate_refuses_a_read_only_bundle_before_any_work(read_only_bundle, monkeypatch,
                                                              capsys) -> None:
    must_not_run("gpmask.calibration.pipeline:heldout_frames")(read_only_bundle, monkeypatch)
    code = main(["calibrate", str(read_only_bundle), "--precision", "fp16", "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert re.fullmatch(r"gpmask: error: cannot write .*bundle/manifest.json: (Read-only file "
                        r"system|Permission denied)", lines[0]), lines


def test_masked_steps_replace_a_presets_per_weather_steps() -> None:
    """``--preset demo --masked-steps 40``: 40 stage-2 steps for every weather, not the
    preset's 800/1,200/4,000."""
    from gpmask.cli import build_parser
    from gpmask.commands.train import _config

    args = build_parser().parse_args(["train", "--preset", "demo", "-o", "x.safetensors",
                                      "--masked-steps", "40"])
    config = _config(args)
    assert [config.steps_of(w) for w in config.weathers] == [40, 40, 40]
    kept = _config(build_parser().parse_args(["train", "--preset", "demo", "-o", "x",
                                              "--masked-steps", "40", "--weather-steps",
                                              "snow=100"]))
    assert [kept.steps_of(w) for w in kept.weathers] == [40, 40, 100]


# ----------------------------------------------------------------- SIGTERM
#: A gpmask process that sends itself a signal when ``target`` (``module:Class.method``) is
#: called for the ``at``-th time and something lies in its temporary folder (so the signal
#: lands while temporary files exist), as ``docker stop`` or systemd would.
SIGNALLING_GPMASK = """
import os, signal, sys
module_name, _, attribute = sys.argv[1].partition(":")
owner_name, _, name = attribute.rpartition(".")
module = __import__(module_name, fromlist=["_"])
owner = getattr(module, owner_name) if owner_name else module
original, calls = getattr(owner, name), [0]
def hooked(*args, **kwargs):
    calls[0] += 1
    if calls[0] >= int(sys.argv[2]) and (os.listdir(os.environ["TMPDIR"]) or sys.argv[3] == "any"):
        os.kill(os.getpid(), getattr(signal, sys.argv[4]))
    return original(*args, **kwargs)
setattr(owner, name, hooked)
from gpmask.cli import main
sys.exit(main(sys.argv[5:]))
"""


@pytest.mark.parametrize(("argv", "target", "at", "when", "kept"), [
    (RUN + " -i {tmp}/clip.avi -o {tmp}/out.avi", "gpmask.runtime.restorer:Restorer.restore",
     3, "any", "out.partial.avi"),
    ("export {tmp}/" + CHECKPOINT + " -o {tmp}/bundle --force --no-progress",
     "gpmask.export.exporter:verify_graphs", 1, "any", None),
    ("calibrate {tmp}/bundle --precision int8 --synthetic 2 --calibration-size 32x32 "
     "--eval-size 32x32 --no-progress",
     "onnxruntime.capi.onnxruntime_inference_collection:InferenceSession.run", 1, "temp", None),
    (RUN + " -i {tmp}/frames -o {tmp}/restored", "gpmask.fileio:install_folder", 1, "any",
     None),
], ids=["run", "export", "calibrate", "run-at-its-last-rename"])
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_unwinds_like_ctrl_c(assets: Path, tmp_path: Path, argv: str, target: str,
                                     at: int, when: str, kept: str | None, name: str) -> None:
    """SIGTERM (and SIGHUP) mid-command: one line, exit 128 + the signal, every earlier
    output as it was, no temporary file left beside the outputs or in the system's
    temporary folder (where calibration's quantizer works), the frames done kept."""
    for item in assets.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp_path / item.name)
    shutil.copy(tmp_path / "clip.avi", tmp_path / "out.avi")  # an earlier, complete output
    temporary = tmp_path.parent / f"{tmp_path.name}-tmp"
    temporary.mkdir()
    before, hidden = snapshot(tmp_path), _hidden(tmp_path)
    process = subprocess.run(
        [sys.executable, "-c", SIGNALLING_GPMASK, target, str(at), when, name,
         *shlex.split(argv.format(tmp=tmp_path))],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "TMPDIR": str(temporary)})
    signum = getattr(signal, name)
    assert process.returncode == 128 + signum, process.stderr
    assert process.stderr.strip().splitlines()[-1] == f"gpmask: terminated ({name})"
    assert "Traceback" not in process.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != kept} == before
    assert kept is None or kept in after
    assert _hidden(tmp_path) == hidden
    # ONNX Runtime's native library keeps a session-id file ``.ses`` there from import on
    left = [p.name for p in temporary.iterdir() if p.name != ".ses"]
    assert left == []


# ----------------------------------------------------------------- | head
def test_a_closed_pipe_ends_quietly() -> None:
    """``gpmask inspect demo --json | head -1``: the reader is gone before gpmask writes."""
    process = subprocess.Popen([sys.executable, "-m", "gpmask.cli", "inspect", "demo", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # like head after its line: every write now fails with EPIPE
    _, err = process.communicate(timeout=300)
    assert err.decode() == ""
    assert process.returncode == 141


def test_a_multi_line_message_is_printed_as_one_line(monkeypatch, capsys) -> None:
    import gpmask.commands.inspect as inspect_command

    def fail(args) -> int:
        raise GpmaskError("TensorRT could not build rain.engine:\n  [E] parser error\n\n")

    monkeypatch.setattr(inspect_command, "run", fail)
    assert main(["inspect", "anything"]) == 2
    assert capsys.readouterr().err == ("gpmask: error: TensorRT could not build rain.engine: "
                                       "[E] parser error\n")
