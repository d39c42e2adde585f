"""Mask selection rules on hand-made gradients, checked against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gpmask.masking.masks import (
    EvidenceMaskSelector,
    exclusive_masks,
    specific_count,
    top_count_mask,
)


def _numpy_top(scores: np.ndarray, count: int) -> np.ndarray:
    """Top ``count`` by score, ties to the lower flat index, written without torch."""
    flat = scores.reshape(-1)
    order = sorted(range(flat.size), key=lambda i: (-flat[i], i))
    mask = np.zeros(flat.size, bool)
    mask[order[:count]] = True
    return mask.reshape(scores.shape)


def test_top_count_keeps_exactly_count_with_ties_to_the_lower_index() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0], [0.0, 3.0, 2.0]])
    assert top_count_mask(scores, 2).tolist() == [[False, True, True], [False, False, False]]
    assert top_count_mask(scores, 0).sum() == 0
    assert top_count_mask(scores, 6).all()
    random = torch.rand(7, 5, 3, generator=torch.Generator().manual_seed(1)).round(decimals=1)
    for count in (1, 10, 52):
        mask = top_count_mask(random, count)
        assert int(mask.sum()) == count
        np.testing.assert_array_equal(mask.numpy(), _numpy_top(random.numpy(), count))


@pytest.mark.parametrize(("numel", "density", "expected"), [
    (1000, 0.1, 100), (12, 0.1, 1), (12, 0.05, 1), (5, 0.05, 0), (7, 1.0, 7), (3, 0.5, 2),
])
def test_specific_count_is_density_times_size_rounded(numel, density, expected) -> None:
    assert specific_count(numel, density) == expected


def test_exclusive_masks_are_disjoint_full_and_give_contested_elements_to_most_evidence() -> None:
    rng = np.random.default_rng(3)
    scores = {w: torch.from_numpy(rng.random((40, 9)).astype(np.float32))
              for w in ("rain", "raindrop", "snow")}
    count = 60
    masks = exclusive_masks(scores, count)
    stacked = np.stack([m.numpy() for m in masks.values()])
    assert stacked.sum(axis=(1, 2)).tolist() == [count] * 3
    assert stacked.sum(axis=0).max() == 1  # disjoint
    # An element in several weathers' own top-60 goes to the highest score among them.
    own_top = {w: _numpy_top(s.numpy(), count) for w, s in scores.items()}
    contested = 0
    for index in np.ndindex(40, 9):
        wanting = [w for w in scores if own_top[w][index]]
        if len(wanting) > 1:
            contested += 1
            best = max(wanting, key=lambda w: float(scores[w][index]))
            assert masks[best][index], (index, wanting)
    assert contested > 5
    # Without contest each weather simply keeps its own top elements.
    for weather, mask in masks.items():
        uncontested = own_top[weather] & ~np.any(
            [own_top[w] for w in scores if w != weather], axis=0
        )
        assert mask.numpy()[uncontested].all()


def test_exclusive_masks_break_equal_scores_by_weather_order_and_fit_small_tensors() -> None:
    same = torch.tensor([1.0, 2.0, 3.0, 4.0])
    masks = exclusive_masks({"a": same, "b": same.clone()}, 2)
    assert masks["a"].tolist() == [False, False, True, True]  # first weather wins ties
    assert masks["b"].tolist() == [True, True, False, False]  # the other refills
    tiny = exclusive_masks({"a": same[:3], "b": same[:3], "c": same[:3]}, 2)
    assert [int(m.sum()) for m in tiny.values()] == [1, 1, 1]  # numel // weathers


def test_evidence_selector_keeps_top_density_of_average_normalised_magnitude() -> None:
    shapes = {"w": torch.Size([6, 5]), "b": torch.Size([6])}
    selector = EvidenceMaskSelector(shapes, ["rain", "snow"], density=0.2)
    generator = torch.Generator().manual_seed(0)
    seen = {w: {n: [] for n in shapes} for w in ("rain", "snow")}
    for _ in range(4):
        for weather in ("rain", "snow"):
            gradients = {n: torch.randn(s, generator=generator) for n, s in shapes.items()}
            assert selector.update(weather, gradients) == {}
            for name, gradient in gradients.items():
                seen[weather][name].append(gradient.numpy())
    assert not selector.masks["rain"]["w"].any()  # nothing is specific before the window ends
    masks = selector.freeze()
    for weather in ("rain", "snow"):
        for name, grads in seen[weather].items():
            average = np.mean([np.abs(g) / np.abs(g).mean() for g in grads], axis=0)
            expected = _numpy_top(average.astype(np.float32), round(0.2 * average.size))
            np.testing.assert_array_equal(masks[weather][name].numpy(), expected)
    assert [int(masks["rain"][n].sum()) for n in shapes] == [6, 1]
    assert selector.density("snow") == pytest.approx(7 / 36)
    before = {n: m.clone() for n, m in masks["rain"].items()}
    selector.update("rain", {n: torch.ones(s) for n, s in shapes.items()})
    assert all(torch.equal(before[n], selector.masks["rain"][n]) for n in shapes)  # fixed


def test_evidence_selector_resumes_from_its_state() -> None:
    shapes = {"w": torch.Size([8, 3])}
    generator = torch.Generator().manual_seed(5)
    steps = [{"w": torch.randn(8, 3, generator=generator)} for _ in range(6)]
    whole = EvidenceMaskSelector(shapes, ["a", "b"], density=0.25, exclusive=True)
    first = EvidenceMaskSelector(shapes, ["a", "b"], density=0.25, exclusive=True)
    for i, gradients in enumerate(steps):
        if i == 3:
            whole.record()
        whole.update("a" if i % 2 else "b", gradients)
        if i < 3:
            first.update("a" if i % 2 else "b", gradients)
    first.record()
    resumed = EvidenceMaskSelector(shapes, ["a", "b"], density=0.25, exclusive=True)
    resumed.load_state_dict(first.state_dict())
    for i, gradients in enumerate(steps[3:], start=3):
        resumed.update("a" if i % 2 else "b", gradients)
    record = whole.record()
    assert resumed.record() == record
    assert 0 < record["a"]["changed"] < 1  # the top quarter moved with the later steps
    for weather, masks in whole.freeze().items():
        assert torch.equal(masks["w"], resumed.freeze()[weather]["w"])
        assert int(masks["w"].sum()) == 6
    assert not (whole.masks["a"]["w"] & whole.masks["b"]["w"]).any()
