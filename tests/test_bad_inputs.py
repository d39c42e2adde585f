"""Every bad input a new user might give ends in one clear line and destroys nothing.

One table, one row per bad input: the command line, what the one ``gpmask: error:``
line must say, and the single output the command may leave (most may leave nothing).
For each row the test copies the same inputs (a checkpoint, a bundle, a static-shape
bundle, a video, a folder of images) into a fresh folder, lets the row damage them,
hashes every file there, runs ``gpmask.cli.main`` in this process, and checks: exit
code 2 (130 for Ctrl-C), exactly one ``gpmask: error:`` line, which is the last line
on stderr, no traceback, and every file as it was (only the row's named output may
appear). Rows are grouped by what went wrong in issue 9 (data loss, tracebacks,
silent wrong results, TensorRT) and by cases that already behaved well.

Beside the table: the Restorer's refusal of float frames outside [0, 1] or with
NaN/Inf (Python API, no exit code), and ``| head`` closing the pipe (a subprocess).
"""

from __future__ import annotations

import json
import re
import shutil
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


# ----------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` ({tmp} is the row's folder), a regex the error line must
    match, what to do to the inputs first, and the one output allowed to appear."""

    id: str
    argv: str
    message: str
    setup: Callable[[Path, pytest.MonkeyPatch], None] | None = None
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
         r"cut.avi: truncated or damaged video: decoded \d of the 6 frames .* \(\d frames "
         r"done were written to .*out.avi\)",
         lambda tmp, mp: write(tmp / "cut.avi", (tmp / "clip.avi").read_bytes()[:6000]),
         output="out.avi"),
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
         output="out.avi", code=130),
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

    code = main(case.argv.format(tmp=tmp_path).split())

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert "Traceback" not in err
    if case.code == 2:
        assert [line for line in lines if line.startswith("gpmask: error:")] == [lines[-1]], err
        assert _matches(case.message, lines[-1].removeprefix("gpmask: error: ")), lines[-1]
    else:
        assert _matches(case.message, lines[-1]), err
    after = snapshot(tmp_path)
    if case.output is None:
        assert after == before
    else:
        assert {k: v for k, v in after.items() if k != case.output} == before
        assert case.output in after
    leftovers = [p.name for p in tmp_path.rglob(".*")]  # temporary files and folders
    assert leftovers == []


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


def test_float64_frames_are_restored_like_float32(restorer) -> None:
    frame = np.random.default_rng(4).random((13, 17, 3))
    restored = restorer.restore(frame, "snow")
    assert restored.dtype == np.float64 and restored.shape == frame.shape
    np.testing.assert_allclose(restored, restorer.restore(frame.astype(np.float32), "snow"),
                               atol=1e-7)
    edge = np.clip(frame + 5e-4, 0, 1 + 5e-4)  # within the tolerance: rounding, not a range
    assert restorer.restore(edge, "snow").dtype == np.float64


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
