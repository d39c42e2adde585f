"""What pyproject.toml promises: one ONNX Runtime per install, a Polygraphy that finds
CUDA from pip wheels, the lean runtime for the TensorRT API test."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tests.media import smooth_image, write_mjpg_avi

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
ONNX_RUNTIMES = {"onnxruntime", "onnxruntime-gpu"}


def _requirements(names: list[str]) -> list[Requirement]:
    return [Requirement(line) for line in names]


def _expanded(extra: str) -> set[str]:
    """Distribution names an extra installs, following ``gpmask[...]`` references."""
    names = set()
    for requirement in _requirements(PYPROJECT["project"]["optional-dependencies"][extra]):
        if requirement.name == "gpmask":
            for inner in requirement.extras:
                names |= _expanded(inner)
        else:
            names.add(requirement.name)
    return names


def test_no_install_gets_two_onnx_runtimes() -> None:
    """onnxruntime and onnxruntime-gpu overwrite each other: the base dependencies name
    neither, each extra at most one, and the GPU extras never meet the CPU one."""
    base = {r.name for r in _requirements(PYPROJECT["project"]["dependencies"])}
    assert not base & ONNX_RUNTIMES
    extras = PYPROJECT["project"]["optional-dependencies"]
    runtimes = {extra: _expanded(extra) & ONNX_RUNTIMES for extra in extras}
    assert runtimes["cpu"] == {"onnxruntime"} and runtimes["gpu"] == {"onnxruntime-gpu"}
    assert runtimes["dev"] == {"onnxruntime"}  # CI's install
    assert runtimes["test"] == set()  # what a GPU developer adds to [gpu]
    assert all(len(found) <= 1 for found in runtimes.values()), runtimes


def test_the_dev_extra_installs_the_lean_runtime_the_api_test_reads() -> None:
    lean = [r for r in _requirements(PYPROJECT["project"]["optional-dependencies"]["test"])
            if r.name == "tensorrt-lean-cu13"]
    assert len(lean) == 1 and "tensorrt-lean-cu13" in _expanded("dev")
    assert lean[0].marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64"})
    if lean[0].marker.evaluate():  # installed here by `pip install -e .[dev]`
        assert importlib.util.find_spec("tensorrt_lean") is not None


def test_polygraphy_floor_finds_cuda_in_pip_wheels(tmp_path, monkeypatch) -> None:
    """Polygraphy before 0.53.6 looked for libcudart only on LD_LIBRARY_PATH and the system
    folders; pyproject's floor is the release that also searches NVIDIA's wheels."""
    polygraphy = next(r for r in _requirements(PYPROJECT["project"]["dependencies"])
                      if r.name == "polygraphy")
    assert Version("0.53.5") not in polygraphy.specifier
    assert Version("0.53.6") in polygraphy.specifier
    from polygraphy import __version__
    from polygraphy.cuda import cuda

    assert Version(__version__) in polygraphy.specifier
    wheel = tmp_path / "site-packages"
    (wheel / "nvidia" / "cuda_runtime" / "lib").mkdir(parents=True)
    monkeypatch.setattr(sys, "path", [str(wheel), *sys.path])
    searched = cuda._find_cuda_lib_dirs()
    assert str(wheel / "nvidia" / "cuda_runtime" / "lib") in searched
    assert "/usr/local/cuda/lib64" in searched  # and the system folders still


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory) -> Path:
    """The shipped demo exported: a bundle with a weather router."""
    from gpmask.export import export_bundle

    return export_bundle("demo", tmp_path_factory.mktemp("packaging") / "bundle",
                         verify=False, progress=False).root


def test_without_onnx_runtime_each_verb_says_which_extra_to_install(demo_bundle, tmp_path,
                                                                    monkeypatch, capsys) -> None:
    """Where neither ONNX Runtime is installed: `check` reports it and goes on, a backend
    choice names it for each ONNX Runtime backend, and a verb that cannot do without it
    (the weather router runs on ONNX Runtime) ends in one line saying what to install."""
    from gpmask.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    install = "install one build: pip install 'gpmask[cpu]' (onnxruntime) or 'gpmask[gpu]'"
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "ONNX Runtime  none: ONNX Runtime is not installed" in out and install in out
    write_mjpg_avi(tmp_path / "in.avi", [smooth_image(32, 32, seed) for seed in range(2)])
    run = ["run", str(demo_bundle), "-i", str(tmp_path / "in.avi"), "-o",
           str(tmp_path / "out.avi")]
    assert main([*run, "--weather", "rain", "--backend", "onnxruntime-cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpmask: error: backend onnxruntime-cpu: ONNX Runtime is not "
                          "installed") and install in err and len(err.splitlines()) == 1
    assert main([*run, "--weather", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpmask: error: ONNX Runtime is not installed") and install in err
    assert not (tmp_path / "out.avi").exists()


def test_the_jetson_guide_installs_every_runtime_dependency_and_is_linked() -> None:
    """docs/jetson.md installs gpmask without its dependencies (JetPack's OpenCV and
    TensorRT must stay visible) and then every base dependency but those the device
    does not use or must not shadow; the README's set-up section links it."""
    root = Path(__file__).parents[1]
    guide = (root / "docs" / "jetson.md").read_text()
    line = next(line.strip() for line in guide.splitlines()
                if line.strip().startswith("pip install \"numpy"))
    listed = {Requirement(part.strip('"')).name for part in line.split()[2:]}
    base = {r.name for r in _requirements(PYPROJECT["project"]["dependencies"])}
    left_out = {"torch", "onnxscript", "opencv-python-headless", "openvino"}
    assert listed == base - left_out
    assert "numpy>=1.24,<2" in line  # JetPack's cv2 and tensorrt are built against NumPy 1.x
    assert "pip install --no-deps gpmask" in guide
    assert "python3 -m venv --system-site-packages" in guide
    readme = (root / "README.md").read_text()
    setup = readme[readme.index("## Install"):readme.index("## Quickstart")]
    assert "[docs/jetson.md](docs/jetson.md)" in setup
