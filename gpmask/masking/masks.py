"""Gradient-guided mask selection (GGPM stage 2): which elements are specific to which weather.

Two rules, both per weather and per parameter tensor, both fed the gradient g_w of one
batch of weather w at a time (under DistributedDataParallel, the rank-averaged one):

- ``evidence`` (default, :class:`EvidenceMaskSelector`): during a selection window the
  network of every weather is the common one and nothing trains; each step adds the
  *normalised magnitude* |g_w| / mean(|g_w|) of every tensor to a per-element score.
  When the window ends each tensor keeps exactly round(D * numel) elements with the
  highest average score (ties: the lower flat index), and the masks never change
  again. A user sets D, the density: the size of the weather-specific part is a
  budget, not an outcome.
- ``consecutive`` (:class:`ConsecutiveMaskSelector`, gpmask's first rule): an element
  joins a mask once its |g_w| was in the tensor's top ``top_fraction`` for
  ``consecutive`` steps in a row; masks only grow while the values train, and over a
  long window most elements get in (the first demo model ended 75 % dense).

Why this evidence. A weather-specific element is one whose value the weather's loss
wants moved away from the common value more than the others do; the paper's code reads
that from |gradient| (the top 40 % per tensor per step). Averaging |g| over many
batches, instead of requiring a streak, turns the per-step vote into a ranking that
does not depend on luck of a single batch and has practically no ties, so "exactly
the top D" is well defined; it is the mean-|gradient| form of the sensitivity scores
used to pick fixed sparse fine-tuning masks (e.g. FISH masks, Sung et al. 2021, which
rank by the squared gradient). Dividing each step's |g| by the tensor's mean weighs
every step equally whatever the loss scale of its batch, and makes scores of different
weathers comparable, which the exclusive rule needs. All gradients are taken at the
same point, the common model C, which is also where the specific values start: no
element trains provisionally and is then dropped, and a resumed or distributed run
sees exactly the gradients an uninterrupted single run sees.

``exclusive`` makes the weathers' masks disjoint (the paper's code experimented with
removing overlaps): an element in the top D of several weathers goes to the one with
the highest average score (the earlier weather on a tie); a weather that lost elements
refills from the elements no weather holds, in its own score order, and this repeats
until every weather holds exactly round(D * numel) elements. A tensor too small to give
each of the W weathers that many distinct elements gives each numel // W.
"""

from __future__ import annotations

import torch

SELECTIONS = ("evidence", "consecutive")


def top_fraction_candidates(gradient: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """Boolean tensor: elements whose |gradient| is in the top ``top_fraction`` of the tensor.

    Elements with zero gradient are never candidates (a parameter the batch does not
    touch carries no evidence of being weather-specific).
    """
    magnitude = gradient.detach().abs().reshape(-1)
    count = magnitude.numel()
    keep = int(round(top_fraction * count))
    if keep <= 0:
        return torch.zeros_like(gradient, dtype=torch.bool)
    # kthvalue finds the threshold without torch.quantile's size limit.
    threshold = magnitude.kthvalue(count - keep + 1).values if keep < count else magnitude.min()
    return (gradient.detach().abs() >= threshold) & (gradient.detach() != 0)


def normalised_magnitude(gradient: torch.Tensor) -> torch.Tensor:
    """|gradient| divided by its mean over the tensor (zeros for an all-zero gradient)."""
    magnitude = gradient.detach().abs().float()
    mean = magnitude.mean()
    return magnitude / mean if mean > 0 else torch.zeros_like(magnitude)


def specific_count(numel: int, density: float) -> int:
    """Elements of a ``numel``-element tensor specific to one weather at ``density``."""
    return min(numel, int(round(density * numel)))


def _score_order(scores: torch.Tensor) -> torch.Tensor:
    """Flat indices from the highest score down; equal scores in increasing index order."""
    return torch.sort(scores.reshape(-1), descending=True, stable=True).indices


def top_count_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean tensor with exactly ``count`` elements set: the highest ``scores``.

    Ties go to the lower flat index, so the result is a pure function of the scores.
    """
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[_score_order(scores)[:count]] = True
    return flat.reshape(scores.shape)


def exclusive_masks(scores: dict[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """Disjoint masks of ``count`` elements each (``numel // len(scores)`` if fewer fit).

    Each round, every weather short of its count claims its best elements among those
    nobody holds; an element claimed by several goes to the highest score (the earlier
    weather in ``scores`` on a tie). Every claimed element is assigned, so each round
    makes progress, and the result depends on nothing but the scores.
    """
    weathers = list(scores)
    shape = next(iter(scores.values())).shape
    numel = next(iter(scores.values())).numel()
    count = min(count, numel // len(weathers))
    stacked = torch.stack([scores[w].reshape(-1).float() for w in weathers])
    owner = torch.full((numel,), -1, dtype=torch.long)
    orders = [_score_order(stacked[i]) for i in range(len(weathers))]
    while True:
        short = [i for i in range(len(weathers)) if int((owner == i).sum()) < count]
        if not short:
            break
        claims = torch.zeros((len(weathers), numel), dtype=torch.bool)
        for i in short:
            free = orders[i][owner[orders[i]] < 0]
            claims[i, free[: count - int((owner == i).sum())]] = True
        claimed = claims.any(dim=0)
        # Highest score wins; argmax returns the first (earliest weather) of equal maxima.
        contest = torch.where(claims, stacked, torch.full_like(stacked, -torch.inf))
        winners = contest.argmax(dim=0)
        owner[claimed] = winners[claimed]
    return {w: (owner == i).reshape(shape) for i, w in enumerate(weathers)}


def _density(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(total, 1)


class _MaskSelector:
    """What both rules share: per-weather masks, freezing, density and change records."""

    #: Whether the specific values train while the masks are being chosen.
    trains_during_window: bool

    def __init__(self, shapes: dict[str, torch.Size], weathers: list[str]) -> None:
        self.weathers = list(weathers)
        self.frozen = False
        self.masks = {
            w: {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()} for w in weathers
        }
        self._recorded = {w: {n: m.clone() for n, m in ms.items()} for w, ms in self.masks.items()}

    def current_masks(self) -> dict[str, dict[str, torch.Tensor]]:
        """Every weather's masks as they would be if the window ended now."""
        return self.masks

    def density(self, weather: str) -> float:
        """Fraction of all maskable elements in ``weather``'s current mask."""
        return _density(self.current_masks()[weather])

    def record(self) -> dict[str, dict[str, float]]:
        """Per weather: density of the current masks and the fraction of all elements that
        entered or left them since the previous record (0 once they have settled)."""
        entry = {}
        for weather, current in self.current_masks().items():
            flipped = sum(int((m ^ self._recorded[weather][n]).sum()) for n, m in current.items())
            total = sum(m.numel() for m in current.values())
            entry[weather] = {"density": _density(current), "changed": flipped / max(total, 1)}
            self._recorded[weather] = {n: m.clone() for n, m in current.items()}
        return entry

    def _tensors(self) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        """Resumable tensors by kind (``mask``, ``recorded``, ...) then weather then name."""
        return {"mask": self.masks, "recorded": self._recorded}

    def state_dict(self) -> dict[str, torch.Tensor | bool]:
        """Everything needed to resume, flat (``kind/weather/name``) for ``torch.save``."""
        state: dict[str, torch.Tensor | bool] = {"frozen": self.frozen}
        for kind, by_weather in self._tensors().items():
            for weather, tensors in by_weather.items():
                for name, tensor in tensors.items():
                    state[f"{kind}/{weather}/{name}"] = tensor.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor | bool]) -> None:
        self.frozen = bool(state["frozen"])
        tensors = self._tensors()
        for key, value in state.items():
            kind, _, rest = key.partition("/")
            weather, _, name = rest.partition("/")
            if kind in tensors:
                tensors[kind].setdefault(weather, {})[name] = value.clone()


class ConsecutiveMaskSelector(_MaskSelector):
    """Masks grown from consistent top-|gradient| selections while the values train.

    Args:
        shapes: parameter name -> shape of the tensors that can be masked.
        weathers: weather names.
        top_fraction: fraction of each tensor that is a candidate at each step.
        consecutive: steps in a row an element must be a candidate to join a mask.
    """

    trains_during_window = True

    def __init__(
        self,
        shapes: dict[str, torch.Size],
        weathers: list[str],
        top_fraction: float = 0.4,
        consecutive: int = 3,
    ) -> None:
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        if consecutive < 1:
            raise ValueError(f"consecutive must be at least 1, got {consecutive}")
        super().__init__(shapes, weathers)
        self.top_fraction = top_fraction
        self.consecutive = consecutive
        self.streaks = {
            w: {n: torch.zeros(s, dtype=torch.int16) for n, s in shapes.items()} for w in weathers
        }

    def update(self, weather: str, gradients: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Record one step's gradients of ``weather``; return the elements that just joined.

        The returned dict maps parameter names to boolean tensors of newly set mask
        elements, so the caller can seed their specific values from the common ones.
        Once frozen, nothing joins and the result is empty.
        """
        if self.frozen:
            return {}
        joined = {}
        for name, gradient in gradients.items():
            candidates = top_fraction_candidates(gradient, self.top_fraction)
            streak = self.streaks[weather][name]
            streak.add_(1).mul_(candidates)
            new = (streak >= self.consecutive) & ~self.masks[weather][name]
            if new.any():
                self.masks[weather][name] |= new
                joined[name] = new
        return joined

    def freeze(self) -> dict[str, dict[str, torch.Tensor]]:
        """End the selection window: masks stay as they are from now on. Returns them."""
        self.frozen = True
        self.streaks = {}
        return self.masks

    def _tensors(self) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        return super()._tensors() | {"streak": self.streaks}

    def load_state_dict(self, state: dict[str, torch.Tensor | bool]) -> None:
        super().load_state_dict(state)
        if self.frozen:
            self.streaks = {}


class EvidenceMaskSelector(_MaskSelector):
    """Exactly the top ``density`` of every tensor by average normalised |gradient|.

    Args:
        shapes: parameter name -> shape of the tensors that can be masked.
        weathers: weather names (their order breaks exclusive ties).
        density: fraction of each tensor specific to each weather, in (0, 1].
        exclusive: make the weathers' masks disjoint (see the module docstring).
    """

    trains_during_window = False

    def __init__(
        self,
        shapes: dict[str, torch.Size],
        weathers: list[str],
        density: float = 0.1,
        exclusive: bool = False,
    ) -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        super().__init__(shapes, weathers)
        self.density_target = density
        self.exclusive = exclusive
        self.evidence = {
            w: {n: torch.zeros(s, dtype=torch.float32) for n, s in shapes.items()}
            for w in weathers
        }
        self.measured = {w: {"steps": torch.zeros((), dtype=torch.long)} for w in weathers}

    def update(self, weather: str, gradients: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add one batch's gradients of ``weather`` (taken at the common model) to its scores.

        Nothing joins a mask before :meth:`freeze`, so the result is always empty; it
        has :class:`ConsecutiveMaskSelector`'s signature so the trainer drives both alike.
        """
        if self.frozen:
            return {}
        for name, gradient in gradients.items():
            self.evidence[weather][name] += normalised_magnitude(gradient)
        self.measured[weather]["steps"] += 1
        return {}

    def _select(self) -> dict[str, dict[str, torch.Tensor]]:
        """The masks the scores gathered so far give."""
        average = {
            w: {n: e / max(int(self.measured[w]["steps"]), 1) for n, e in by_name.items()}
            for w, by_name in self.evidence.items()
        }
        masks: dict[str, dict[str, torch.Tensor]] = {w: {} for w in self.weathers}
        for name, first in average[self.weathers[0]].items():
            count = specific_count(first.numel(), self.density_target)
            if self.exclusive:
                chosen = exclusive_masks({w: average[w][name] for w in self.weathers}, count)
                for weather, mask in chosen.items():
                    masks[weather][name] = mask
            else:
                for weather in self.weathers:
                    masks[weather][name] = top_count_mask(average[weather][name], count)
        return masks

    def current_masks(self) -> dict[str, dict[str, torch.Tensor]]:
        return self.masks if self.frozen else self._select()

    def freeze(self) -> dict[str, dict[str, torch.Tensor]]:
        """End the window: fix the masks at the top ``density`` of the scores; return them."""
        if not self.frozen:
            self.masks = self._select()
            self.frozen = True
            self.evidence = {}
        return self.masks

    def _tensors(self) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
        return super()._tensors() | {"evidence": self.evidence, "measured": self.measured}

    def load_state_dict(self, state: dict[str, torch.Tensor | bool]) -> None:
        super().load_state_dict(state)
        if self.frozen:
            self.evidence = {}
