"""How much memory a network's activations take per input pixel, measured by running it once.

The runtime estimates a frame's working memory from the ONNX graph
(:mod:`gpmask.graph.memory`); evaluation and training run the PyTorch module itself, so
their estimate comes from the module: one forward pass on a small input, with hooks that
record every submodule's output. A submodule's own intermediate outputs are counted as
freed when it returns (only its output lives on, in its parent), which approximates
what PyTorch frees without autograd; the sum of every output is what a training step
keeps for its backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Side of the square input the module is run on to measure it.
PROBE_SIDE = 64
#: What to allow beyond the measured activations (the allocator's slack, gradients
#: beside saved tensors): PyTorch's peak stayed within the measurement on the networks
#: gpmask ships, inference and training alike.
HEADROOM = 1.5


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes per input pixel (batch 1): the most alive at once without autograd, and all
    of them (what a training step saves for backward)."""

    peak: float
    total: float


def _bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_bytes(item) for item in value)
    if isinstance(value, dict):
        return sum(_bytes(item) for item in value.values())
    return 0


def activation_bytes_per_pixel(model: nn.Module, multiple: int = 1) -> ActivationBytes:
    """Run ``model`` once on a 1x3xSxS input (S a multiple of ``multiple``) and measure."""
    side = -(-PROBE_SIDE // multiple) * multiple
    image = torch.zeros(1, 3, side, side)
    scopes = [[_bytes(image)]]
    peak, total = [scopes[0][0]], [0]

    def enter(module: nn.Module, inputs: object) -> None:
        scopes.append([0])

    def leave(module: nn.Module, inputs: object, output: object) -> None:
        size = _bytes(output)
        scopes.pop()
        scopes[-1][0] += size
        total[0] += size
        peak[0] = max(peak[0], sum(scope[0] for scope in scopes))

    hooks = [handle for module in model.modules() if module is not model
             for handle in (module.register_forward_pre_hook(enter),
                            module.register_forward_hook(leave))]
    try:
        with torch.no_grad():
            model(image)
    finally:
        for handle in hooks:
            handle.remove()
    pixels = side * side
    return ActivationBytes(peak[0] / pixels, total[0] / pixels)


def measured(model: nn.Module) -> ActivationBytes:
    """:func:`activation_bytes_per_pixel` of ``model`` at its size multiple, with
    :data:`HEADROOM` included."""
    from gpmask.model.registry import size_multiple

    raw = activation_bytes_per_pixel(model.eval(), size_multiple(model))
    return ActivationBytes(HEADROOM * raw.peak, HEADROOM * raw.total)
