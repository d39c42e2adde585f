"""Gradient-guided mask selection (GGPM stage 2).

For each weather w and each parameter tensor, the elements whose |gradient| on a
batch of w lies in the tensor's top ``top_fraction`` are *candidates* for w. An
element joins w's mask once it has been a candidate in each of the last
``consecutive`` steps: a single noisy batch cannot move an element, a persistent
one does. Masks only grow, so an element's specific value, once it exists, is
never silently dropped back to the common one. Growth stops when the selection
window ends (:meth:`GradientMaskSelector.freeze`), after which the masks are fixed
and only the values train.
"""

from __future__ import annotations

import torch


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


class GradientMaskSelector:
    """Per-weather masks grown from consistent top-|gradient| selections.

    Args:
        shapes: parameter name -> shape of the tensors that can be masked.
        weathers: weather names.
        top_fraction: fraction of each tensor that is a candidate at each step.
        consecutive: steps in a row an element must be a candidate to join a mask.
    """

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
        self.top_fraction = top_fraction
        self.consecutive = consecutive
        self.frozen = False
        self.masks = {
            w: {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()} for w in weathers
        }
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

    def freeze(self) -> None:
        """End the selection window: masks stay as they are from now on."""
        self.frozen = True
        self.streaks = {}

    def density(self, weather: str) -> float:
        """Fraction of all maskable elements in ``weather``'s mask."""
        masks = self.masks[weather].values()
        total = sum(m.numel() for m in masks)
        return sum(int(m.sum()) for m in masks) / max(total, 1)

    def state_dict(self) -> dict[str, torch.Tensor | bool]:
        """Tensors to resume from (masks and streaks), flat for ``torch.save``."""
        state: dict[str, torch.Tensor | bool] = {"frozen": self.frozen}
        for weather, masks in self.masks.items():
            for name, mask in masks.items():
                state[f"mask/{weather}/{name}"] = mask.clone()
        for weather, streaks in self.streaks.items():
            for name, streak in streaks.items():
                state[f"streak/{weather}/{name}"] = streak.clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor | bool]) -> None:
        self.frozen = bool(state["frozen"])
        for key, value in state.items():
            kind, _, rest = key.partition("/")
            weather, _, name = rest.partition("/")
            if kind == "mask":
                self.masks[weather][name] = value.clone()
            elif kind == "streak":
                self.streaks[weather][name] = value.clone()
        if self.frozen:
            self.streaks = {}
