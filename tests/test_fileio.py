"""The output rule (gpmask.fileio): what may be replaced, what never is, and atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.bundle import is_bundle
from gpmask.demo.app import is_demo_output
from gpmask.errors import GpmaskError
from gpmask.fileio import (
    MARKER,
    atomic_directory,
    atomic_path,
    check_file_output,
    check_outputs,
    install_folder,
    keep_partial,
    marked_by,
    write_marker,
    write_text_atomic,
)
from gpmask.runtime.sinks import RUN_OUTPUT, ImageFolderSink


def _is_mine(folder: Path) -> bool:
    return (folder / "MINE").is_file()


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*")
            if p.is_file()}


def test_atomic_directory_replaces_a_recognised_folder_only_once_complete(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "MINE").write_text("old")
    (target / "stale.txt").write_text("old")
    with atomic_directory(target, True, _is_mine, "a test folder") as folder:
        (folder / "MINE").write_text("new")
        assert _tree(target) == {"MINE": "old", "stale.txt": "old"}  # untouched until done
    assert _tree(target) == {"MINE": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_replaces_an_empty_folder(tmp_path) -> None:
    (tmp_path / "out").mkdir()
    with atomic_directory(tmp_path / "out", True, _is_mine, "a test folder") as folder:
        (folder / "a").write_text("a")
    assert _tree(tmp_path / "out") == {"a": "a"}


@pytest.mark.parametrize(("make", "force", "message"), [
    (lambda p: (p.mkdir(), (p / "MINE").write_text("x")), False,
     r"out exists; pass --force to replace it"),
    (lambda p: (p.mkdir(), (p / "b.txt").write_text("x"), (p / "a.txt").write_text("x")), True,
     r"out is not a test folder \(it holds a.txt, b.txt\); only a test folder or an empty "
     r"folder is replaced, so it was left as it is"),
    (lambda p: p.write_text("x"), True, r"out is a file, not a folder"),
    (lambda p: p.symlink_to(p.parent), True, r"out is a symbolic link, not a folder"),
])
def test_anything_else_is_refused_and_left_as_it_is(tmp_path, make, force, message) -> None:
    target = tmp_path / "out"
    make(target)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(GpmaskError, match=message):
        with atomic_directory(target, force, _is_mine, "a test folder"):
            pytest.fail("the body must not run")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_failure_inside_leaves_the_old_folder(tmp_path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "MINE").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target, True, _is_mine, "x") as folder:
        (folder / "MINE").write_text("half")
        raise RuntimeError("crash")
    assert _tree(target) == {"MINE": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_file_outputs_are_never_folders_and_need_a_writable_folder(tmp_path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(GpmaskError, match=r"cannot write .*dir: it is a folder"):
        write_text_atomic(tmp_path / "dir", "x")
    with pytest.raises(GpmaskError, match=r"cannot write .*x.json: folder .*missing does not"):
        check_file_output(tmp_path / "missing" / "x.json")
    with pytest.raises(GpmaskError, match=r"cannot write /proc/x.json: "):
        check_file_output("/proc/x.json")
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(ValueError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.write_text("half")
        raise ValueError
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "dir"]


def test_outputs_never_overwrite_inputs(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_text("x")
    (tmp_path / "video.avi").write_text("x")
    (tmp_path / "hard.avi").hardlink_to(tmp_path / "video.avi")
    inputs = [tmp_path / "in", tmp_path / "video.avi", None, "0"]
    check_outputs([tmp_path / "out.avi", tmp_path / "in" / "new.csv", None], inputs)  # fine
    for output, message in [
        (tmp_path / "hard.avi", r"hard.avi is the input .*video.avi"),
        (tmp_path / "in", r"output .*in is the input .*in;"),
        (tmp_path, r"would hold the input"),
        (tmp_path / "in" / "a.png", r"a.png is a file of the input folder .*in;"),
    ]:
        with pytest.raises(GpmaskError, match=message):
            check_outputs([output], inputs)


def test_recognisers_know_gpmask_folders(tmp_path) -> None:
    bundle, demo, frames, other = (tmp_path / n for n in ("bundle", "demo", "frames", "other"))
    for folder in (bundle, demo, frames, other):
        folder.mkdir()
    (bundle / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "weathers": ["rain"], "graphs": {}}))
    (demo / "psnr.json").write_text(json.dumps({"psnr": {}, "routing_accuracy": 1.0}))
    (frames / "frame_000000.png").write_text("x")
    write_marker(frames, RUN_OUTPUT, ["frame_000000.png"])
    (other / "manifest.json").write_text(json.dumps({"name": "a web app"}))
    (other / "psnr.json").write_text("[]")
    (other / "frame_000000.png").write_text("x")  # gpmask's names are not proof
    is_run_output = marked_by(RUN_OUTPUT)
    assert [is_bundle(bundle), is_demo_output(demo), is_run_output(frames)] == [True] * 3
    assert [is_bundle(other), is_demo_output(other), is_run_output(other)] == [False] * 3
    (frames / "notes.txt").write_text("x")  # a file the user added makes the folder theirs
    assert not is_run_output(frames)


def test_image_folder_sink_replaces_an_earlier_runs_frames_whole(tmp_path) -> None:
    target = tmp_path / "restored"
    earlier = ImageFolderSink(target)
    for _ in range(5):  # an earlier, longer run
        earlier.write(np.zeros((4, 6, 3), np.uint8))
    earlier.close()
    sink = ImageFolderSink(target)
    frame = np.full((4, 6, 3), 7, np.uint8)
    for _ in range(2):
        sink.write(frame)
    assert len(list(target.iterdir())) == 6  # nothing replaced before close
    sink.close()
    assert sorted(p.name for p in target.iterdir()) == ["frame_000000.png", "frame_000001.png",
                                                        MARKER]
    np.testing.assert_array_equal(cv2.imread(str(target / "frame_000001.png")), frame)
    assert [p.name for p in tmp_path.iterdir()] == ["restored"]


@pytest.mark.parametrize("sibling", ["folder", "file"])
def test_replacing_a_folder_never_touches_a_hidden_sibling(tmp_path, sibling) -> None:
    """The old folder goes aside under a name of its own: a user's ``.out.old`` (a folder
    or a file) is neither deleted nor in the way."""
    target, hidden = tmp_path / "out", tmp_path / ".out.old"
    target.mkdir()
    (target / "MINE").write_text("old")
    if sibling == "folder":
        hidden.mkdir()
        (hidden / "important.txt").write_text("keep")
    else:
        hidden.write_text("keep")
    for round_ in ("new", "newer"):
        with atomic_directory(target, True, _is_mine, "a test folder") as folder:
            (folder / "MINE").write_text(round_)
        assert _tree(target) == {"MINE": round_}
    assert (hidden / "important.txt" if sibling == "folder" else hidden).read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.old", "out"]


def test_an_interrupt_between_the_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    import gpmask.fileio as fileio

    target, new = tmp_path / "out", tmp_path / "new"
    target.mkdir()
    (target / "MINE").write_text("old")
    new.mkdir()
    real = fileio.os.replace

    def interrupted(source, destination):
        if Path(source) == new:
            raise KeyboardInterrupt
        real(source, destination)

    monkeypatch.setattr(fileio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        install_folder(new, target)
    assert _tree(target) == {"MINE": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]


def test_partial_outputs_take_a_free_name_or_nothing(tmp_path) -> None:
    first = tmp_path / ".tmp1.avi"
    first.write_text("7 frames")
    assert keep_partial(first, tmp_path / "out.avi") == tmp_path / "out.partial.avi"
    second = tmp_path / ".tmp2.avi"
    second.write_text("3 frames")
    assert keep_partial(second, tmp_path / "out.avi") is None  # never replaces
    assert (tmp_path / "out.partial.avi").read_text() == "7 frames"
    folder = tmp_path / ".tmp3"
    folder.mkdir()
    assert keep_partial(folder, tmp_path / "restored") == tmp_path / "restored.partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.partial.avi", "restored.partial"]


def test_a_marker_names_what_gpmask_wrote(tmp_path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.png").write_text("x")
    write_marker(folder, "gpmask run", ["a.png"])
    assert json.loads((folder / MARKER).read_text()) == {"written_by": "gpmask run",
                                                          "files": ["a.png"]}
    assert marked_by("gpmask run")(folder) and not marked_by("gpmask demo")(folder)
    (folder / "b.png").write_text("the user's")
    assert not marked_by("gpmask run")(folder)
