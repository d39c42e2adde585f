"""Synthetic weather, clean sample images and the synthetic pair source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpmask.data.clean import SAMPLE_MAX_SIDE, SAMPLE_SPLITS, load_image_folder, sample_images
from gpmask.data.sources import SyntheticPairs, fit_to_size
from gpmask.data.synthetic import (
    DISJOINT_RANGES,
    HELDOUT_RANGES,
    STYLES,
    TRAIN_RANGES,
    WEATHERS,
    degrade,
)
from gpmask.errors import GpmaskError


def psnr_db(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR for data range 1, written out here so the test does not trust gpmask.metrics."""
    mse = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(1.0 / mse))


@pytest.fixture(scope="module")
def heldout() -> list[np.ndarray]:
    return sample_images("heldout")


@pytest.fixture(scope="module")
def crops(heldout: list[np.ndarray]) -> list[np.ndarray]:
    """128x128 centre crops of the held-out photos: natural content, quick to degrade."""
    return [fit_to_size(image, (128, 128)) for image in heldout]


# --------------------------------------------------------------------- clean images
def test_sample_splits_are_disjoint_whole_images(heldout: list[np.ndarray]) -> None:
    train = sample_images("train")
    assert not set(SAMPLE_SPLITS["train"]) & set(SAMPLE_SPLITS["heldout"])
    assert len(train) == len(SAMPLE_SPLITS["train"]) and len(heldout) == 4
    for image in train + heldout:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert max(image.shape[:2]) <= SAMPLE_MAX_SIDE
    # No held-out picture appears in training, not even at another size.
    small = [cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA) for image in train]
    for image in heldout:
        probe = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
        assert min(np.abs(probe - other).mean() for other in small) > 0.02


def test_sample_images_are_deterministic_and_match_the_files(
    heldout: list[np.ndarray],
) -> None:
    again = sample_images("heldout")
    for first, second in zip(heldout, again, strict=True):
        np.testing.assert_array_equal(first, second)
    import skimage

    chelsea = cv2.imread(str(Path(skimage.__file__).parent / "data" / "chelsea.png"))
    np.testing.assert_allclose(heldout[0], chelsea[..., ::-1] / 255.0, atol=1e-6)  # BGR->RGB


def test_unknown_split_is_refused() -> None:
    with pytest.raises(GpmaskError, match="unknown sample split 'test'; use one of train, heldout"):
        sample_images("test")


def test_load_image_folder_reads_every_kind_of_image(tmp_path: Path) -> None:
    red_bgr = np.zeros((8, 10, 3), np.uint8)
    red_bgr[..., 2] = 255
    cv2.imwrite(str(tmp_path / "a_red.png"), red_bgr)
    cv2.imwrite(str(tmp_path / "b_gray.png"), np.full((8, 10), 51, np.uint8))
    cv2.imwrite(str(tmp_path / "c_deep.png"), np.full((8, 10, 3), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "d_alpha.png"), np.full((8, 10, 4), 102, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "e_broken.png").write_bytes(b"\x89PNG but not really")

    with pytest.warns(UserWarning, match="e_broken.png: cannot read image"):
        images = load_image_folder(tmp_path)
    assert len(images) == 4
    np.testing.assert_array_equal(images[0][0, 0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(images[1], 0.2, atol=1e-6)
    np.testing.assert_array_equal(images[2], 1.0)
    np.testing.assert_allclose(images[3], 0.4, atol=1e-6)
    assert all(image.shape == (8, 10, 3) and image.dtype == np.float32 for image in images)


def test_load_image_folder_refuses_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(GpmaskError, match=f"image folder {tmp_path / 'nope'} does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(GpmaskError, match=f"image folder {tmp_path} holds no readable image"):
        load_image_folder(tmp_path)


# --------------------------------------------------------------------- degrade
@pytest.mark.parametrize("weather", WEATHERS)
def test_same_seed_is_bit_identical_and_other_seeds_differ(crops, weather: str) -> None:
    clean = crops[0]
    first = degrade(clean, weather, seed=7)
    np.testing.assert_array_equal(first, degrade(clean.copy(), weather, seed=7))
    for other in (8, 1234):
        assert np.abs(degrade(clean, weather, seed=other) - first).mean() > 1e-3
    assert first.dtype == np.float32 and first.shape == clean.shape
    assert first.min() >= 0.0 and first.max() <= 1.0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("weather", WEATHERS)
def test_weather_costs_real_psnr(crops, weather: str, style: str) -> None:
    scores = [psnr_db(degrade(clean, weather, seed=seed, style=style), clean)
              for seed in range(3) for clean in crops]
    # Every image draws its own look, light ones included: light raindrops over the
    # rocket crop's smooth sky cost little, so single images are only asked to show
    # the weather, and the average to cost what the public sets' weather costs.
    assert all(score < 45.0 for score in scores), scores
    assert np.median(scores) < 30.0, scores
    assert 12.0 <= np.mean(scores) <= 27.0, scores


@pytest.mark.parametrize("weather", WEATHERS)
def test_every_image_draws_its_own_look(crops, weather: str) -> None:
    """The same scene under ten seeds: the weather's strength varies widely (the look is
    drawn per image), and the held-out style is another look again."""
    clean = crops[1]
    scores = [psnr_db(degrade(clean, weather, seed=seed), clean) for seed in range(10)]
    assert max(scores) - min(scores) > 4.0, scores
    heldout = degrade(clean, weather, seed=0, style="heldout")
    np.testing.assert_array_equal(heldout, degrade(clean, weather, seed=0, style="heldout"))
    assert np.abs(heldout - degrade(clean, weather, seed=0)).mean() > 1e-3


def test_heldout_ranges_lie_outside_the_training_ranges() -> None:
    for name in DISJOINT_RANGES:
        (low, high), (held_low, held_high) = TRAIN_RANGES[name], HELDOUT_RANGES[name]
        assert held_high < low or held_low > high, name
    assert set(TRAIN_RANGES) == set(HELDOUT_RANGES)


def test_look_seed_keeps_the_look_while_the_weather_is_redrawn() -> None:
    """A video's frames share one look: on a black scene the snow's veil (the darkest
    pixel) stays while the flakes move; another look seed changes the veil."""
    black = np.zeros((64, 64, 3), np.float32)
    first, second = (degrade(black, "snow", seed=s, look_seed=7) for s in (1, 2))
    np.testing.assert_allclose(first.min(axis=(0, 1)), second.min(axis=(0, 1)), atol=1e-6)
    assert np.abs(first - second).mean() > 1e-3
    other = degrade(black, "snow", seed=1, look_seed=8)
    assert np.abs(other.min(axis=(0, 1)) - first.min(axis=(0, 1))).max() > 1e-3


@pytest.mark.parametrize("weather", WEATHERS)
def test_higher_severity_costs_more(crops, weather: str) -> None:
    for i, clean in enumerate(crops):
        np.testing.assert_array_equal(degrade(clean, weather, seed=i, severity=0.0), clean)
        scores = [psnr_db(degrade(clean, weather, seed=i, severity=s), clean)
                  for s in (0.25, 0.5, 1.0, 1.5, 2.0)]
        assert scores == sorted(scores, reverse=True), scores
        assert scores[0] - scores[-1] > 3.0, scores


def test_rain_haze_is_thicker_far_away() -> None:
    """On a black scene only airlight shows: everywhere, and most at the (far) top.
    Haze thickness is drawn per image, down to a thin haze, so every look is checked
    for the shape of the haze rather than one look for an amount."""
    for seed in range(6):
        hazy = degrade(np.zeros((96, 96, 3), np.float32), "rain", seed=seed)
        assert hazy.min() > 0.01, seed
        assert hazy[:16].mean() > hazy[-16:].mean() + 0.02, seed


def test_raindrops_show_a_flipped_view_and_leave_the_rest_alone() -> None:
    """On a top-to-bottom ramp a lens-like drop inverts the ramp inside the drop."""
    ramp = np.repeat(np.linspace(0.0, 1.0, 128, dtype=np.float32)[:, None, None], 128, axis=1)
    ramp = np.repeat(ramp, 3, axis=2)
    assert (np.diff(ramp[..., 1], axis=0) < 0).sum() == 0
    # Drop density and defocus are drawn per image; the densest, most blurred looks
    # leave about a quarter of a small frame untouched.
    for seed in range(4):
        dropped = degrade(ramp, "raindrop", seed=seed)
        unchanged = np.all(dropped == ramp, axis=2).mean()
        assert 0.15 < unchanged < 0.97, seed
        inverted = (np.diff(dropped[..., 1], axis=0) < -1e-3).mean()
        assert inverted > 0.01, seed


def test_snow_has_flakes_of_several_sizes() -> None:
    """Flake layers, and so flake sizes, are drawn per image: pooled over a few images the
    flakes span a wide range of sizes, and the largest flake differs from image to image."""
    areas, largest = [], []
    for seed in range(6):
        snowy = degrade(np.zeros((128, 128, 3), np.float32), "snow", seed=seed, severity=1.5)
        flakes = (snowy[..., 0] > snowy[..., 0].min() + 0.2).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(flakes, connectivity=8)
        assert count > 1, seed  # some flakes in every image
        areas.extend(stats[1:, cv2.CC_STAT_AREA])
        largest.append(stats[1:, cv2.CC_STAT_AREA].max())
    assert len(areas) > 50
    assert max(areas) >= 10 * np.median(areas)
    assert max(largest) >= 1.5 * min(largest)


def test_degrade_refuses_bad_input(crops) -> None:
    with pytest.raises(GpmaskError, match="unknown synthetic weather 'fog'; known weathers: "
                                          "rain, raindrop, snow"):
        degrade(crops[0], "fog", seed=0)
    with pytest.raises(GpmaskError, match="severity must be a finite number >= 0, got -1"):
        degrade(crops[0], "snow", seed=0, severity=-1)
    with pytest.raises(GpmaskError, match=r"must be HxWx3 RGB, got shape \(128, 128\)"):
        degrade(crops[0][..., 0], "snow", seed=0)
    with pytest.raises(GpmaskError, match="must be float in \\[0, 1\\], got dtype uint8"):
        degrade((crops[0] * 255).astype(np.uint8), "snow", seed=0)
    with pytest.raises(GpmaskError, match="seed must be a non-negative integer, got -3"):
        degrade(crops[0], "snow", seed=-3)
    with pytest.raises(GpmaskError, match="look seed must be a non-negative integer, got -1"):
        degrade(crops[0], "snow", seed=3, look_seed=-1)
    with pytest.raises(GpmaskError,
                       match="unknown weather style 'test'; use one of train, heldout"):
        degrade(crops[0], "snow", seed=0, style="test")


# --------------------------------------------------------------------- SyntheticPairs
def test_batches_are_deterministic_per_seed_weather_and_step(crops) -> None:
    source = SyntheticPairs(crops, seed=11, pool_size=2)
    again = SyntheticPairs(crops, seed=11, pool_size=2)
    degraded, clean = source.batch("snow", batch_size=5, crop=48, step=3)
    assert degraded.shape == clean.shape == (5, 3, 48, 48)
    assert degraded.dtype == clean.dtype == np.float32
    assert degraded.flags.c_contiguous and clean.flags.c_contiguous
    assert 0.0 <= degraded.min() and degraded.max() <= 1.0
    again.batch("rain", 4, 32, 0)  # drawing other batches first changes nothing
    for first, second in zip((degraded, clean), again.batch("snow", 5, 48, 3), strict=True):
        np.testing.assert_array_equal(first, second)
    assert not np.array_equal(clean, source.batch("snow", 5, 48, 4)[1])
    assert not np.array_equal(clean, SyntheticPairs(crops, seed=12).batch("snow", 5, 48, 3)[1])
    assert not np.array_equal(degraded, source.batch("rain", 5, 48, 3)[0])


def test_batch_crops_are_aligned_and_flipped(crops) -> None:
    """Each clean crop is a window of a clean image (or its mirror), and the degraded
    crop is the same window: away from the drops, raindrop pixels equal the clean ones."""
    source = SyntheticPairs(crops, seed=0, severity=0.1, pool_size=1)  # a drop or two
    degraded, clean = source.batch("raindrop", batch_size=24, crop=32, step=0)
    references = [np.round(image * 255).astype(np.uint8) for image in crops]

    def found_in(reference: np.ndarray, probe: np.ndarray) -> bool:
        """Best match by OpenCV, then confirmed pixel for pixel."""
        scores = cv2.matchTemplate(reference, probe, cv2.TM_SQDIFF)
        top, left = np.unravel_index(np.argmin(scores), scores.shape)
        return np.array_equal(reference[top: top + 32, left: left + 32], probe)

    orientations, untouched = set(), []
    for noisy, target in zip(degraded, clean, strict=True):
        patch = np.round(target.transpose(1, 2, 0) * 255).astype(np.uint8)
        for flipped in (False, True):
            probe = np.ascontiguousarray(patch[:, ::-1] if flipped else patch)
            if any(found_in(reference, probe) for reference in references):
                orientations.add(flipped)
                break
        else:
            pytest.fail("a clean crop is no window of any clean image")
        untouched.append(np.mean(np.all(noisy == target, axis=0)))
    assert orientations == {False, True}
    assert min(untouched) > 0.05 and np.median(untouched) > 0.8, untouched


def test_eval_pairs_cycle_images_with_fresh_weather(crops) -> None:
    source = SyntheticPairs(crops, weathers=("rain", "snow"), seed=4)
    pairs = source.eval_pairs("rain", count=6, size=(64, 80))
    assert len(pairs) == 6
    for i, (degraded, clean) in enumerate(pairs):
        assert degraded.shape == clean.shape == (64, 80, 3)
        np.testing.assert_array_equal(clean, crops[i % 4][32:96, 24:104])
    assert not np.array_equal(pairs[0][0], pairs[4][0])  # same image, other weather draw
    for first, second in zip(pairs, source.eval_pairs("rain", count=6, size=(64, 80)),
                             strict=True):
        np.testing.assert_array_equal(first[0], second[0])
    big = source.eval_pairs("snow", count=1, size=(200, 256))[0][1]
    assert big.shape == (200, 256, 3)  # smaller images are scaled up, then cropped


def test_synthetic_pairs_refuse_bad_requests(crops) -> None:
    with pytest.raises(GpmaskError, match="unknown synthetic weather 'fog'"):
        SyntheticPairs(crops, weathers=("rain", "fog"))
    with pytest.raises(GpmaskError, match="needs at least one clean image"):
        SyntheticPairs([])
    source = SyntheticPairs(crops, weathers=("rain",))
    with pytest.raises(GpmaskError, match="no data for weather 'snow'; this source has rain"):
        source.batch("snow", 2, 32, 0)
    with pytest.raises(GpmaskError, match="128x128 image is smaller than the 200 px crop"):
        source.batch("rain", 2, 200, 0)



def test_data_package_does_not_import_torch() -> None:
    """The runtime's demo renders weather on devices that have no torch."""
    code = ("import sys, gpmask.data.clean, gpmask.data.synthetic, gpmask.data.paired_folders, "
            "gpmask.data.sources; print(sorted(m for m in ('torch', 'gpmask.masking') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1], timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
