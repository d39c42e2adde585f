"""The video loop and `gpmask run`: outputs read back with OpenCV, routing, clean stops."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.fileio import MARKER
from gpmask.runtime import Restorer
from gpmask.runtime.loop import run_loop
from gpmask.runtime.routing import FixedRouter, ScheduleRouter
from gpmask.runtime.sinks import ImageFolderSink, VideoFileSink
from gpmask.runtime.video import open_source
from tests.conftest import make_checkpoint

HEIGHT, WIDTH, FRAMES = 42, 58, 16  # not multiples of the network's 4: padding is exercised


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from gpmask.export import export_bundle

    path = tmp_path_factory.mktemp("loop") / "bundle"
    export_bundle(make_checkpoint(), path, progress=False)
    return path


@pytest.fixture(scope="module")
def restorer(bundle: Path) -> Restorer:
    return Restorer(bundle, backend="onnxruntime")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8), (7, 7), 0)
    return [np.roll(base, 2 * i, axis=1) for i in range(FRAMES)]


@pytest.fixture
def image_folder(tmp_path: Path, frames: list[np.ndarray]) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame)
    return folder


def _video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _read_back(path: Path) -> tuple[int, tuple[int, int], list[np.ndarray]]:
    """Frame count, (width, height) and frames, as OpenCV itself reads the video."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    decoded = []
    while (item := capture.read())[0]:
        decoded.append(item[1])
    capture.release()
    return len(decoded), size, decoded


def test_schedule_routes_each_frame_to_its_weather(
    tmp_path: Path, bundle: Path, restorer: Restorer, image_folder: Path, frames
) -> None:
    schedule = tmp_path / "schedule.csv"
    schedule.write_text("start,end,weather\n0,5,rain\n5,9,snow\n9,12,clear\n12,,raindrop\n")
    output, log = tmp_path / "restored", tmp_path / "frames.csv"
    code = main(["run", str(bundle), "-i", str(image_folder), "-o", str(output),
                 "--weather", str(schedule), "--log", str(log), "--no-progress",
                 "--backend", "onnxruntime"])  # the restorer the frames are compared with
    assert code == 0
    expected = ["rain"] * 5 + ["snow"] * 4 + ["clear"] * 3 + ["raindrop"] * 4
    rows = list(csv.DictReader(log.open()))
    assert [r["weather"] for r in rows] == expected
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))
    assert all(float(r["restore_ms"]) >= 0 and float(r["encode_ms"]) >= 0 for r in rows)
    written = sorted(p for p in output.iterdir() if p.name != MARKER)
    # a folder of images gives a folder of images of the same names
    assert [p.name for p in written] == sorted(p.name for p in image_folder.iterdir())
    for index, (path, weather) in enumerate(zip(written, expected, strict=True)):
        image = cv2.imread(str(path))
        if weather == "clear":
            np.testing.assert_array_equal(image, frames[index])  # passed through
        else:
            direct = restorer.restore(frames[index], weather, bgr=True)
            np.testing.assert_array_equal(image, direct)
    # the weathers really differ, so the comparison above tells them apart
    assert not np.array_equal(restorer.restore(frames[0], "rain", bgr=True),
                              restorer.restore(frames[0], "snow", bgr=True))


def test_video_in_video_out_and_side_by_side(
    tmp_path: Path, bundle: Path, frames: list[np.ndarray]
) -> None:
    source = _video(tmp_path / "in.avi", frames)
    for name, extra, width in [("out.avi", [], WIDTH), ("sbs.mp4", ["--side-by-side"], 2 * WIDTH)]:
        code = main(["run", str(bundle), "-i", str(source), "-o", str(tmp_path / name),
                     "--weather", "snow", "--no-progress", *extra])
        assert code == 0
        count, size, _ = _read_back(tmp_path / name)
        assert (count, size) == (FRAMES, (width, HEIGHT))


def test_clear_frames_can_use_the_common_graph(
    tmp_path: Path, restorer: Restorer, frames: list[np.ndarray], image_folder: Path
) -> None:
    sink = ImageFolderSink(tmp_path / "out")
    run_loop(open_source(str(image_folder)), restorer, FixedRouter("clear"), sink,
             clear="common", progress=False)
    first = cv2.imread(str(tmp_path / "out" / "0000.png"))
    np.testing.assert_array_equal(first, restorer.restore(frames[0], "common", bgr=True))


class _InterruptAt:
    """The real restorer, with Ctrl-C arriving while frame ``at`` is being restored."""

    def __init__(self, restorer: Restorer, at: int) -> None:
        self.restorer, self.at, self.calls = restorer, at, 0

    def restore(self, frame: np.ndarray, weather: str, bgr: bool = False) -> np.ndarray:
        if self.calls == self.at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.restorer.restore(frame, weather, bgr=bgr)


def test_interrupted_run_leaves_a_playable_partial_video(
    tmp_path: Path, restorer: Restorer, image_folder: Path, frames: list[np.ndarray]
) -> None:
    """The output named is left as it was (an earlier, complete one here); the frames
    done are a playable video under a name that says it is partial."""
    output, log = tmp_path / "out.avi", tmp_path / "frames.csv"
    output.write_bytes(b"an earlier, complete output")
    with pytest.raises(KeyboardInterrupt):
        run_loop(open_source(str(image_folder)), _InterruptAt(restorer, 7), FixedRouter("rain"),
                 VideoFileSink(output, 10), log_path=log, progress=False)
    assert output.read_bytes() == b"an earlier, complete output"
    count, size, decoded = _read_back(tmp_path / "out.partial.avi")
    assert (count, size) == (7, (WIDTH, HEIGHT))
    direct = restorer.restore(frames[6], "rain", bgr=True)
    assert cv2.PSNR(decoded[6], direct) > 30  # the last frame done is there (MJPG-lossy)
    assert len(list(csv.DictReader(log.open()))) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.csv", "input", "out.avi",
                                                          "out.partial.avi"]


def test_truncated_input_finalises_the_frames_done_and_fails(
    tmp_path: Path, bundle: Path, capsys
) -> None:
    rng = np.random.default_rng(0)
    noisy = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(30)]
    data = _video(tmp_path / "whole.avi", noisy).read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    output = tmp_path / "out.avi"
    code = main(["run", str(bundle), "-i", str(tmp_path / "cut.avi"), "-o", str(output),
                 "--weather", "rain", "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "truncated or damaged video" in error and "frames done were kept in" in error
    assert not output.exists()  # a stopped run never stands in for a whole one
    count, size, _ = _read_back(tmp_path / "out.partial.avi")
    assert 0 < count < 30 and size == (WIDTH, HEIGHT)
    assert f"{count} frames done were kept in {tmp_path / 'out.partial.avi'}" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["-i", "{tmp}/missing.mp4"], "missing.mp4: no such file or folder"),
        (["-i", "{tmp}/empty.avi"], "empty.avi: empty file"),
        (["-i", "{tmp}/junk.avi"], "not a video OpenCV can read"),
        (["-i", "{tmp}/input", "--weather", "fog"], "'fog': not a weather of this bundle"),
        (["-i", "{tmp}/input", "--weather", "auto"], "has no weather router"),
        (["-i", "{tmp}/input", "-o", "{tmp}/out.gif"], "unsupported output .gif"),
    ],
)
def test_bad_input_is_one_error_line(
    tmp_path: Path, bundle: Path, image_folder: Path, capsys, arguments, message
) -> None:
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "junk.avi").write_bytes(b"junk" * 100)
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    if "-o" not in arguments:
        arguments += ["-o", str(tmp_path / "out.avi")]
    if "--weather" not in arguments:
        arguments += ["--weather", "rain"]
    code = main(["run", str(bundle), *arguments, "--no-progress"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpmask: error: ") and message in lines[0]
    assert not (tmp_path / "out.avi").exists()


def test_schedule_missing_a_frame_stops_with_the_frames_done(
    tmp_path: Path, restorer: Restorer, image_folder: Path
) -> None:
    schedule = tmp_path / "s.csv"
    schedule.write_text("start,end,weather\n0,10,snow\n")
    router = ScheduleRouter.load(schedule, restorer.weathers + ["clear"])
    output = tmp_path / "out.avi"
    with pytest.raises(GpmaskError, match="no entry covers frame 10"):
        run_loop(open_source(str(image_folder)), restorer, router, VideoFileSink(output, 10),
                 progress=False)
    assert not output.exists()
    assert _read_back(tmp_path / "out.partial.avi")[:2] == (10, (WIDTH, HEIGHT))


def test_loop_routing_video_and_demo_clip_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import gpmask.runtime.loop, gpmask.runtime.routing, gpmask.runtime.video\n"
        "from gpmask.data.clips import make_clip\n"
        "import gpmask.demo.app\n"
        "make_clip(['rain', 'snow'], frames=4, size=(32, 32))\n"
        "print(sorted(m for m in ('torch', 'gpmask.masking', 'gpmask.model') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_run_right_after_export_uses_the_default_weather_without_a_router(
    tmp_path: Path, bundle: Path, restorer: Restorer, image_folder: Path,
    frames: list[np.ndarray], capsys
) -> None:
    """`gpmask run BUNDLE` needs no --weather: auto with a router, else the default weather."""
    assert "router" not in json.loads((bundle / "manifest.json").read_text())
    output = tmp_path / "out"
    assert main(["run", str(bundle), "-i", str(image_folder), "-o", str(output),
                 "--no-progress"]) == 0
    assert "routing rain (the default: the bundle has no router" in capsys.readouterr().err
    first = cv2.imread(str(output / "0000.png"))  # the input image's name
    np.testing.assert_array_equal(first, restorer.restore(frames[0], "rain", bgr=True))
