"""Paired folder data sets in every layout, their errors, and the folder pair source."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.data.paired_folders import PairedFolder, parse_data_spec
from gpmask.data.sources import FolderPairs
from gpmask.errors import GpmaskError


def write_image(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    """Write a random BGR image with OpenCV; return it as float RGB in [0, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)
    return pixels[..., ::-1].astype(np.float32) / 255.0


def make_pairs(root: Path, inputs: list[str], gts: list[str]) -> dict[str, np.ndarray]:
    """Write the named input and gt files (relative to ``root``); return path -> pixels."""
    return {name: write_image(root / name, seed) for seed, name in enumerate(inputs + gts)}


def pair_names(folder: PairedFolder) -> list[tuple[str, str]]:
    return [(str(i.relative_to(folder.root)), str(g.relative_to(folder.root)))
            for i, g in folder.pairs]


# --------------------------------------------------------------------- layouts
def test_raindrop_layout(tmp_path: Path) -> None:
    written = make_pairs(tmp_path, ["data/0_rain.png", "data/1_rain.png"],
                         ["gt/0_clean.png", "gt/1_clean.png"])
    folder = PairedFolder(tmp_path, progress=False)
    assert folder.layout == "raindrop" and len(folder) == 2
    assert pair_names(folder) == [("data/0_rain.png", "gt/0_clean.png"),
                                  ("data/1_rain.png", "gt/1_clean.png")]
    degraded, clean = folder.load(1)
    np.testing.assert_array_equal(degraded, written["data/1_rain.png"])
    np.testing.assert_array_equal(clean, written["gt/1_clean.png"])
    assert degraded.dtype == np.float32 and degraded.shape == (24, 32, 3)


def test_outdoor_rain_layout_shares_one_gt_between_inputs(tmp_path: Path) -> None:
    written = make_pairs(
        tmp_path,
        ["input/im_0001_s80_a04.png", "input/im_0001_s95_a06.png", "input/im_0002_s80_a05.png"],
        ["gt/im_0001.png", "gt/im_0002.png"],
    )
    folder = PairedFolder(tmp_path, progress=False)
    assert folder.layout == "outdoor-rain"
    assert pair_names(folder) == [("input/im_0001_s80_a04.png", "gt/im_0001.png"),
                                  ("input/im_0001_s95_a06.png", "gt/im_0001.png"),
                                  ("input/im_0002_s80_a05.png", "gt/im_0002.png")]
    np.testing.assert_array_equal(folder.load(1)[1], written["gt/im_0001.png"])


def test_snow100k_layout_pairs_identical_names(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["synthetic/beautiful_1.jpg", "synthetic/beautiful_2.jpg"],
               ["gt/beautiful_1.jpg", "gt/beautiful_2.jpg"])
    folder = PairedFolder(tmp_path, progress=False)
    assert folder.layout == "snow100k"
    assert pair_names(folder) == [("synthetic/beautiful_1.jpg", "gt/beautiful_1.jpg"),
                                  ("synthetic/beautiful_2.jpg", "gt/beautiful_2.jpg")]


def test_stem_layout_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    written = make_pairs(tmp_path, ["LQ/a.png", "LQ/b.png"], ["HQ/a.bmp", "HQ/b.png"])
    (tmp_path / "LQ" / "notes.txt").write_text("ignored")
    folder = PairedFolder(tmp_path, progress=False)
    assert folder.layout == "stem"
    assert pair_names(folder) == [("LQ/a.png", "HQ/a.bmp"), ("LQ/b.png", "HQ/b.png")]
    np.testing.assert_array_equal(folder.load(0)[1], written["HQ/a.bmp"])


def test_data_and_gt_with_plain_names_fall_back_to_stem(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["data/x.png"], ["gt/x.png"])
    assert PairedFolder(tmp_path, progress=False).layout == "stem"


def test_list_file_layout(tmp_path: Path) -> None:
    written = make_pairs(tmp_path, ["rainy/one.png", "rainy/two.png"],
                         ["clean/uno.png", "clean/dos.png"])
    listing = tmp_path / "pairs.txt"
    listing.write_text("# input gt\nrainy/two.png clean/dos.png\n\nrainy/one.png clean/uno.png\n")
    folder = PairedFolder(tmp_path, list_file=listing, progress=False)
    assert folder.layout == "list"
    assert pair_names(folder) == [("rainy/two.png", "clean/dos.png"),
                                  ("rainy/one.png", "clean/uno.png")]
    np.testing.assert_array_equal(folder.load(1)[0], written["rainy/one.png"])


def test_explicit_layout_overrides_detection_and_checks_its_folders(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["input/a.png"], ["gt/a.png"])
    assert PairedFolder(tmp_path, layout="stem", progress=False).layout == "stem"
    with pytest.raises(GpmaskError, match=f"{tmp_path} has no synthetic folder for layout "
                                          "'snow100k'"):
        PairedFolder(tmp_path, layout="snow100k", progress=False)
    with pytest.raises(GpmaskError, match="unpaired input, its name does not fit the "
                                          "outdoor-rain layout"):
        PairedFolder(tmp_path, layout="outdoor-rain", progress=False)
    with pytest.raises(GpmaskError, match="unknown data layout 'rain100'; use one of auto, "
                                          "raindrop, outdoor-rain, snow100k, stem, list"):
        PairedFolder(tmp_path, layout="rain100")


def test_unknown_folder_shape_names_what_it_found(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["photos/a.png"], ["refs/a.png"])
    with pytest.raises(GpmaskError, match=r"cannot tell the layout of .* \(folders: photos/, "
                                          r"refs/\)"):
        PairedFolder(tmp_path)
    with pytest.raises(GpmaskError, match=f"data folder {tmp_path / 'missing'} does not exist"):
        PairedFolder(tmp_path / "missing")


# --------------------------------------------------------------------- bad pairs
def _bad_raindrop_set(root: Path) -> None:
    """Two good pairs and one of each kind of bad pair, in the raindrop layout."""
    make_pairs(root, ["data/0_rain.png", "data/5_rain.png"], ["gt/0_clean.png", "gt/5_clean.png"])
    write_image(root / "data" / "1_rain.png", 10)  # no gt/1_clean
    write_image(root / "data" / "2_rain.png", 11)
    write_image(root / "gt" / "2_clean.png", 12, size=(24, 30))  # size mismatch
    (root / "data" / "3_rain.png").write_bytes(b"truncated")  # unreadable input
    write_image(root / "gt" / "3_clean.png", 13)
    write_image(root / "data" / "photo.png", 14)  # does not follow N_rain


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ([], "data/1_rain.png: missing ground truth .*gt/1_clean.* \\(unpaired input\\)"),
        (["data/1_rain.png"], "data/2_rain.png: size 32x24 differs from its ground truth "
                              ".*gt/2_clean.png \\(30x24\\)"),
        (["data/1_rain.png", "data/2_rain.png"], "data/3_rain.png: cannot read image"),
        (["data/1_rain.png", "data/2_rain.png", "data/3_rain.png"],
         "data/photo.png: unpaired input, its name does not fit the raindrop layout "
         "\\(N_rain.png paired with gt/N_clean.png\\)"),
    ],
)
def test_each_bad_pair_is_an_error_naming_the_file(
    tmp_path: Path, remove: list[str], message: str
) -> None:
    _bad_raindrop_set(tmp_path)
    for name in remove:
        (tmp_path / name).unlink()
    with pytest.raises(GpmaskError, match=message):
        PairedFolder(tmp_path, layout="raindrop", progress=False)


def test_skip_bad_warns_for_each_bad_pair_and_keeps_the_good_ones(tmp_path: Path) -> None:
    _bad_raindrop_set(tmp_path)
    with pytest.warns(UserWarning) as caught:
        folder = PairedFolder(tmp_path, skip_bad=True, progress=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 4
    for name in ("1_rain.png", "2_rain.png", "3_rain.png", "photo.png"):
        assert sum(name in m and m.startswith("skipping ") for m in messages) == 1, messages
    assert pair_names(folder) == [("data/0_rain.png", "gt/0_clean.png"),
                                  ("data/5_rain.png", "gt/5_clean.png")]
    assert len(folder.skipped) == 4


def test_empty_data_sets_are_errors_even_when_skipping(tmp_path: Path) -> None:
    (tmp_path / "input").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(GpmaskError, match=re.escape(
            f"data set {tmp_path} is empty: no input images in {tmp_path / 'input'}")):
        PairedFolder(tmp_path, layout="stem", skip_bad=True)
    write_image(tmp_path / "input" / "a.png", 0)
    with (pytest.warns(UserWarning, match="a.png: missing ground truth"),
          pytest.raises(GpmaskError, match="is empty: all 1 pairs were skipped")):
        PairedFolder(tmp_path, layout="stem", skip_bad=True, progress=False)


def test_list_file_errors_name_the_line_and_file(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["in/a.png"], ["gt/a.png"])
    listing = tmp_path / "list.txt"
    listing.write_text("in/a.png gt/a.png\nin/a.png\n")
    with pytest.raises(GpmaskError, match="list.txt:2: expected 'input_path gt_path', "
                                          "got 'in/a.png'"):
        PairedFolder(tmp_path, list_file=listing)
    listing.write_text("in/a.png gt/a.png\nin/b.png gt/a.png\nin/a.png gt/c.png\n")
    with pytest.raises(GpmaskError, match=r"in/b.png: missing input \(listed in .*list.txt:2\)"):
        PairedFolder(tmp_path, list_file=listing, progress=False)
    with pytest.warns(UserWarning) as caught:
        folder = PairedFolder(tmp_path, list_file=listing, skip_bad=True, progress=False)
    assert [re.sub(r"/\S*/", "", str(w.message)) for w in caught] == [
        "skipping b.png: missing input (listed in list.txt:2)",
        "skipping c.png: missing ground truth for a.png (listed in list.txt:3)",
    ]
    assert pair_names(folder) == [("in/a.png", "gt/a.png")]
    listing.write_text("# nothing\n")
    with pytest.raises(GpmaskError, match="list file .*list.txt names no pair"):
        PairedFolder(tmp_path, list_file=listing)
    with pytest.raises(GpmaskError, match="layout 'list' needs a list file"):
        PairedFolder(tmp_path, layout="list")


def test_load_refuses_an_image_that_changed_since_it_was_checked(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["input/a.png"], ["gt/a.png"])
    folder = PairedFolder(tmp_path, progress=False)
    (tmp_path / "gt" / "a.png").write_bytes(b"")
    with pytest.raises(GpmaskError, match="gt/a.png: cannot read image"):
        folder.load(0)


# --------------------------------------------------------------------- --data specs
def test_parse_data_spec_forms(tmp_path: Path) -> None:
    root = tmp_path / "outdoor:rain"  # a ':' inside the path itself
    make_pairs(root, ["input/im_0001_s80_a04.png"], ["gt/im_0001.png"])
    weather, folder = parse_data_spec(f"rain={root}:outdoor-rain")
    assert (weather, folder.layout, folder.root, len(folder)) == ("rain", "outdoor-rain", root, 1)
    assert parse_data_spec(f"haze={root}")[1].layout == "outdoor-rain"
    with pytest.raises(GpmaskError, match="im_0001_s80_a04.png: missing ground truth"):
        parse_data_spec(f"haze={root}:stem")  # the layout suffix is honoured
    listing = root / "pairs.txt"
    listing.write_text("input/im_0001_s80_a04.png gt/im_0001.png\n")
    weather, folder = parse_data_spec(f"snow={listing}")
    assert (weather, folder.layout, folder.root) == ("snow", "list", root)


@pytest.mark.parametrize("spec", ["rain", "=dir", "rain="])
def test_parse_data_spec_refuses_malformed_specs(spec: str) -> None:
    with pytest.raises(GpmaskError, match=re.escape(f"--data {spec!r}: expected "
                                                    "WEATHER=DIR[:LAYOUT]")):
        parse_data_spec(spec)


def test_parse_data_spec_refuses_unknown_layout(tmp_path: Path) -> None:
    make_pairs(tmp_path, ["input/a.png"], ["gt/a.png"])
    with pytest.raises(GpmaskError, match="unknown data layout 'outdoorrain'"):
        parse_data_spec(f"rain={tmp_path}:outdoorrain")


# --------------------------------------------------------------------- FolderPairs
@pytest.fixture
def inverted_pairs(tmp_path: Path) -> dict[str, PairedFolder]:
    """Two weathers whose inputs are the photographic negative of their gt: an aligned
    crop of (input, gt) sums to exactly one everywhere."""
    folders = {}
    for weather, count in (("rain", 3), ("snow", 2)):
        root = tmp_path / weather
        for i in range(count):
            gt = write_image(root / "gt" / f"{i}.png", seed=i + 10 * len(weather),
                             size=(40 + 8 * i, 48))
            negative = np.round((1.0 - gt[..., ::-1]) * 255).astype(np.uint8)
            (root / "input").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "input" / f"{i}.png"), negative)
        folders[weather] = PairedFolder(root, progress=False)
    return folders


def test_folder_batches_are_aligned_deterministic_crops(inverted_pairs) -> None:
    source = FolderPairs(inverted_pairs, seed=3)
    assert source.weathers == ("rain", "snow")
    degraded, clean = source.batch("rain", batch_size=8, crop=32, step=5)
    assert degraded.shape == clean.shape == (8, 3, 32, 32) and degraded.dtype == np.float32
    np.testing.assert_allclose(degraded + clean, 1.0, atol=1e-6)
    again = FolderPairs(inverted_pairs, seed=3).batch("rain", 8, 32, 5)
    np.testing.assert_array_equal(again[1], clean)
    assert not np.array_equal(source.batch("rain", 8, 32, 6)[1], clean)
    assert not np.array_equal(FolderPairs(inverted_pairs, seed=4).batch("rain", 8, 32, 5)[1],
                              clean)


def test_folder_eval_pairs_are_the_first_pairs_fitted(inverted_pairs) -> None:
    source = FolderPairs(inverted_pairs)
    pairs = source.eval_pairs("snow", count=5)
    assert len(pairs) == 2  # no more than the folder holds
    for i, (degraded, clean) in enumerate(pairs):
        expected = inverted_pairs["snow"].load(i)
        np.testing.assert_array_equal(degraded, expected[0])
        np.testing.assert_array_equal(clean, expected[1])
    degraded, clean = source.eval_pairs("rain", count=1, size=(20, 24))[0]
    full = inverted_pairs["rain"].load(0)[1]
    np.testing.assert_array_equal(clean, full[10:30, 12:36])
    np.testing.assert_allclose(degraded + clean, 1.0, atol=1e-6)


def test_folder_pairs_refuse_bad_requests(inverted_pairs) -> None:
    source = FolderPairs(inverted_pairs)
    with pytest.raises(GpmaskError, match="no data for weather 'raindrop'; this source has "
                                          "rain, snow"):
        source.batch("raindrop", 2, 16, 0)
    with pytest.raises(GpmaskError, match=r"input/\d.png: 48x\d+ image is smaller than the "
                                          "64 px crop"):
        source.batch("rain", 2, 64, 0)
    with pytest.raises(GpmaskError, match="needs at least one WEATHER=DIR folder"):
        FolderPairs({})
