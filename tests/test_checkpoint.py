"""The masked checkpoint: round trip, baking against an independent computation, bad input."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch

from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import MaskedCheckpoint
from tests.conftest import SMALL_ARCH, make_checkpoint


def test_round_trip_and_bake_match_independent_computation(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(weathers=("rain", "snow", "fog"), seed=3)
    path = tmp_path / "m.gpmask.safetensors"
    checkpoint.save(path)
    loaded = MaskedCheckpoint.load(path)
    assert loaded.weathers == ["rain", "snow", "fog"]
    assert loaded.arch == SMALL_ARCH[0] and loaded.arch_kwargs == SMALL_ARCH[1]

    # Independent bake: read the raw file with safetensors and unpack the bits by hand.
    raw = safetensors.numpy.load_file(str(path))
    for weather in loaded.weathers:
        baked = loaded.bake(weather)
        for name in loaded.parameter_names():
            expected = raw[f"common/{name}"].copy().reshape(-1)
            key = f"mask/{weather}/{name}"
            if key in raw:
                bits = np.unpackbits(raw[key])[: expected.size].astype(bool)
                expected[np.flatnonzero(bits)] = raw[f"specific/{weather}/{name}"]
            np.testing.assert_array_equal(baked[name].numpy().reshape(-1), expected)
    np.testing.assert_array_equal(
        loaded.bake("common")["head.weight"].numpy(), raw["common/head.weight"]
    )


def test_baked_weather_differs_only_at_its_mask() -> None:
    checkpoint = make_checkpoint(seed=1)
    common, rain = checkpoint.bake_numpy("common"), checkpoint.bake_numpy("rain")
    for name, mask in checkpoint.masks["rain"].items():
        assert np.array_equal(rain[name][~mask], common[name][~mask])
        assert np.all(rain[name][mask] != common[name][mask])


def test_metadata_and_packbits_layout(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(weathers=("rain",), seed=2)
    path = tmp_path / "m.gpmask.safetensors"
    checkpoint.save(path)
    with open(path, "rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    meta = json.loads(header["__metadata__"]["gpmask"])
    assert meta["format_version"] == 1 and meta["weathers"] == ["rain"]
    assert meta["params"]["head.weight"]["shape"] == list(checkpoint.common["head.weight"].shape)
    mask = checkpoint.masks["rain"]["head.weight"]
    assert header["mask/rain/head.weight"]["dtype"] == "U8"
    assert header["mask/rain/head.weight"]["shape"] == [(mask.size + 7) // 8]
    assert header["specific/rain/head.weight"]["shape"] == [int(mask.sum())]


def test_density_and_overlap_against_numpy() -> None:
    checkpoint = make_checkpoint(weathers=("a", "b"), density=0.25, seed=4)
    none = {n: np.zeros(v.shape, bool) for n, v in checkpoint.common.items()}
    masks_a, masks_b = none | checkpoint.masks["a"], none | checkpoint.masks["b"]
    total = sum(v.size for v in checkpoint.common.values())
    assert checkpoint.density("a").overall == pytest.approx(
        sum(m.sum() for m in masks_a.values()) / total
    )
    inter = sum((masks_a[n] & masks_b[n]).sum() for n in masks_a)
    union = sum((masks_a[n] | masks_b[n]).sum() for n in masks_a)
    assert checkpoint.overlap("a", "b") == pytest.approx(inter / union)
    per = checkpoint.density("b").per_parameter
    assert per["head.weight"] == pytest.approx(masks_b["head.weight"].mean())


def test_build_model_runs_with_baked_weights() -> None:
    checkpoint = make_checkpoint(seed=5)
    x = torch.rand(1, 3, 16, 16)
    outputs = {w: checkpoint.build_model(w)(x) for w in ("common", "rain", "snow")}
    assert outputs["rain"].shape == x.shape
    assert not torch.allclose(outputs["rain"], outputs["common"])
    model = checkpoint.build_model("snow")
    for name, value in model.state_dict().items():
        assert torch.equal(value, checkpoint.bake("snow")[name])


def test_parameter_without_specific_elements_omits_entries(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(weathers=("rain",))
    checkpoint.masks["rain"].pop("head.bias", None)
    checkpoint.specific["rain"].pop("head.bias", None)
    path = tmp_path / "m.gpmask.safetensors"
    checkpoint.save(path)
    raw = safetensors.numpy.load_file(str(path))
    assert "mask/rain/head.bias" not in raw and "specific/rain/head.bias" not in raw
    loaded = MaskedCheckpoint.load(path)
    np.testing.assert_array_equal(loaded.bake_numpy("rain")["head.bias"], raw["common/head.bias"])


# ---------------------------------------------------------------------- bad input
def _rewrite(path: Path, edit) -> None:
    """Load the raw tensors and metadata, apply ``edit``, save with safetensors."""
    with open(path, "rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    tensors = safetensors.numpy.load_file(str(path))
    metadata = header["__metadata__"]
    edit(tensors, metadata)
    safetensors.numpy.save_file(tensors, str(path), metadata=metadata)


def test_mask_shape_mismatch_is_refused(checkpoint_path: Path) -> None:
    _rewrite(
        checkpoint_path,
        lambda t, m: t.__setitem__("mask/rain/head.weight", t["mask/rain/head.weight"][:-1]),
    )
    with pytest.raises(GpmaskError, match=r"mask/rain/head\.weight: packed mask of"):
        MaskedCheckpoint.load(checkpoint_path)


def test_specific_length_mismatch_is_refused(checkpoint_path: Path) -> None:
    _rewrite(
        checkpoint_path,
        lambda t, m: t.__setitem__(
            "specific/snow/head.weight", t["specific/snow/head.weight"][:-1]
        ),
    )
    with pytest.raises(
        GpmaskError, match=r"specific/snow/head\.weight: \d+ values for a mask with"
    ):
        MaskedCheckpoint.load(checkpoint_path)


def test_nan_values_are_refused(checkpoint_path: Path) -> None:
    def poison(tensors, _meta):
        tensors["specific/raindrop/head.weight"][0] = np.nan

    _rewrite(checkpoint_path, poison)
    with pytest.raises(GpmaskError, match=r"specific/raindrop/head\.weight: 1 NaN or Inf"):
        MaskedCheckpoint.load(checkpoint_path)


def test_inf_in_common_is_refused() -> None:
    checkpoint = make_checkpoint()
    checkpoint.common["head.bias"][0] = np.inf
    with pytest.raises(GpmaskError, match=r"common/head\.bias: 1 NaN or Inf"):
        checkpoint._validate()


def test_mask_shape_mismatch_in_memory_is_refused() -> None:
    checkpoint = make_checkpoint()
    with pytest.raises(GpmaskError, match=r"mask/rain/head\.weight: shape"):
        MaskedCheckpoint(
            checkpoint.arch,
            {},
            checkpoint.common,
            {"rain": {"head.weight": np.ones((2, 2), bool)}},
            {"rain": {"head.weight": np.ones(4, np.float32)}},
        )


def test_unknown_weather_is_refused() -> None:
    checkpoint = make_checkpoint()
    with pytest.raises(
        GpmaskError,
        match=r"unknown weather 'hail'; this checkpoint has: "
        r"common, rain, raindrop, snow",
    ):
        checkpoint.bake("hail")


def test_duplicate_weather_names_are_refused() -> None:
    checkpoint = make_checkpoint(weathers=("rain",))
    with pytest.raises(GpmaskError, match="duplicate weather names: rain"):
        MaskedCheckpoint(
            checkpoint.arch,
            {},
            checkpoint.common,
            checkpoint.masks,
            checkpoint.specific,
            weathers=["rain", "rain"],
        )


def test_duplicate_weathers_in_file_metadata_are_refused(checkpoint_path: Path) -> None:
    def duplicate(_tensors, metadata):
        meta = json.loads(metadata["gpmask"])
        meta["weathers"] = ["rain", "raindrop", "snow", "snow"]
        metadata["gpmask"] = json.dumps(meta)

    _rewrite(checkpoint_path, duplicate)
    with pytest.raises(GpmaskError, match="duplicate weather names: snow"):
        MaskedCheckpoint.load(checkpoint_path)


def test_truncated_file_is_refused(checkpoint_path: Path) -> None:
    data = checkpoint_path.read_bytes()
    checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(GpmaskError, match="is not a readable safetensors file"):
        MaskedCheckpoint.load(checkpoint_path)


def test_non_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a checkpoint")
    with pytest.raises(GpmaskError, match="is not a readable safetensors file"):
        MaskedCheckpoint.load(path)


def test_safetensors_without_gpmask_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(GpmaskError, match="is not a gpmask checkpoint"):
        MaskedCheckpoint.load(path)


def test_failed_save_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.gpmask.safetensors"
    make_checkpoint(seed=1).save(path)
    before = path.read_bytes()

    def explode(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        make_checkpoint(seed=2).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ---------------------------------------------------------------------- import from .pth
def _write_pth_set(tmp_path: Path) -> tuple[MaskedCheckpoint, list[str]]:
    checkpoint = make_checkpoint(weathers=("rain", "snow"), seed=7)
    torch.save({n: torch.from_numpy(v) for n, v in checkpoint.common.items()}, tmp_path / "b.pth")
    args = []
    for weather in checkpoint.weathers:
        baked = checkpoint.bake(weather)
        torch.save(baked, tmp_path / f"{weather}.pth")
        masks = {n: torch.from_numpy(m) for n, m in checkpoint.masks[weather].items()}
        torch.save(masks, tmp_path / f"{weather}_mask.pth")
        args += ["--weather", f"{weather}={tmp_path / weather}.pth:{tmp_path / weather}_mask.pth"]
    return checkpoint, args


def _gpmask(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpmask.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_import_command_round_trip(tmp_path: Path) -> None:
    original, weather_args = _write_pth_set(tmp_path)
    out = tmp_path / "imported.gpmask.safetensors"
    result = _gpmask(
        "import",
        "--arch",
        SMALL_ARCH[0],
        "--arch-kwargs",
        json.dumps(SMALL_ARCH[1]),
        "--base",
        str(tmp_path / "b.pth"),
        *weather_args,
        "-o",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    imported = MaskedCheckpoint.load(out)
    assert imported.weathers == ["rain", "snow"]
    for weather in ("common", "rain", "snow"):
        for name, value in original.bake_numpy(weather).items():
            np.testing.assert_array_equal(imported.bake_numpy(weather)[name], value)


def test_import_refuses_mask_of_wrong_shape(tmp_path: Path) -> None:
    _, weather_args = _write_pth_set(tmp_path)
    masks = torch.load(tmp_path / "rain_mask.pth", weights_only=True)
    masks["head.weight"] = torch.ones(3, 3, dtype=torch.bool)
    torch.save(masks, tmp_path / "rain_mask.pth")
    out = tmp_path / "x.gpmask.safetensors"
    result = _gpmask(
        "import",
        "--arch",
        SMALL_ARCH[0],
        "--arch-kwargs",
        json.dumps(SMALL_ARCH[1]),
        "--base",
        str(tmp_path / "b.pth"),
        *weather_args,
        "-o",
        str(out),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"gpmask: error: mask/rain/head.weight: shape (3, 3) does not match the parameter's "
        f"{tuple(torch.load(tmp_path / 'b.pth', weights_only=True)['head.weight'].shape)}"
    ]
    assert not out.exists()


def test_import_refuses_duplicate_weather(tmp_path: Path) -> None:
    _, weather_args = _write_pth_set(tmp_path)
    result = _gpmask(
        "import",
        "--arch",
        "tiny",
        "--base",
        str(tmp_path / "b.pth"),
        *weather_args[:2],
        *weather_args[:2],
        "-o",
        str(tmp_path / "x.safetensors"),
    )
    assert result.returncode == 2
    assert "duplicate weather names: rain" in result.stderr


def test_inspect_prints_density_and_overlap(checkpoint_path: Path) -> None:
    result = _gpmask("inspect", str(checkpoint_path), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    checkpoint = MaskedCheckpoint.load(checkpoint_path)
    assert summary["parameters"] == checkpoint.num_parameters()
    assert summary["density"]["snow"] == pytest.approx(checkpoint.density("snow").overall)
    assert summary["overlap"]["rain/snow"] == pytest.approx(checkpoint.overlap("rain", "snow"))
    for name, mask in checkpoint.masks["rain"].items():
        other = checkpoint.masks["snow"].get(name, np.zeros_like(mask))  # none set: omitted
        expected = (mask & other).sum() / (mask | other).sum()
        assert summary["overlap_per_layer"]["rain/snow"][name] == pytest.approx(expected)
        assert summary["density_per_layer"]["rain"][name] == pytest.approx(mask.mean())
    # Storage: float32 common values once; per weather one bit per element of every
    # masked tensor (rounded up to bytes) and four bytes per specific value.
    storage = summary["storage_bytes"]
    assert storage["dense_per_weather"] == 4 * checkpoint.num_parameters()
    assert storage["dense_all_weathers"] == 3 * 4 * checkpoint.num_parameters()
    for weather in checkpoint.weathers:
        masks = checkpoint.masks[weather].values()
        assert storage["masks"][weather] == sum(-(-m.size // 8) for m in masks)
        assert storage["specific"][weather] == 4 * sum(int(m.sum()) for m in masks)
    assert storage["compact_all_weathers"] == storage["common"] + sum(
        storage["masks"].values()) + sum(storage["specific"].values())
    text = _gpmask("inspect", str(checkpoint_path)).stdout
    assert "overlap rain/raindrop" in text and f"{checkpoint.num_parameters():,}" in text
    assert f"{storage['dense_all_weathers'] / 2**20:.2f} MiB" in text
    layers = _gpmask("inspect", str(checkpoint_path), "--layers").stdout.splitlines()
    row = next(line.split() for line in layers if line.split()[:1] == ["head.weight"])
    assert row[1:4] == [f"{checkpoint.density(w).per_parameter['head.weight']:.1%}"
                        for w in checkpoint.weathers]
    assert row[5] == f"{summary['overlap_per_layer']['rain/snow']['head.weight']:.1%}"


def test_mask_report_files(tmp_path: Path) -> None:
    from gpmask.masking.mask_report import mask_report, write_mask_report

    checkpoint = make_checkpoint(weathers=("rain", "snow"), seed=6)
    history = {"mask_growth": [{"step": 5, "rain": {"density": 0.3, "changed": 0.3},
                                "snow": {"density": 0.3, "changed": 0.3}}]}
    report = mask_report(checkpoint, history)
    write_mask_report(report, tmp_path / "m.json", tmp_path / "m.png")
    assert json.loads((tmp_path / "m.json").read_text())["overlap_per_layer"]["rain/snow"] == (
        pytest.approx(checkpoint.overlap_per_parameter("rain", "snow")))
    import cv2

    image = cv2.imread(str(tmp_path / "m.png"))
    assert image is not None and image.shape[1] > 2 * image.shape[0]


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    result = _gpmask("inspect", str(tmp_path / "missing.gpmask.safetensors"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"gpmask: error: checkpoint {tmp_path / 'missing.gpmask.safetensors'} does not exist"
    )
