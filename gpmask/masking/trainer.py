"""The GGPM training loop: an all-weather base model, then gradient-guided masked training.

Read top to bottom:

1. **Stage 1** trains the network on mixed batches (one batch of every weather per
   step). Its weights become the common values C.
2. **Stage 2** keeps C, and per weather w a dense tensor S_w of specific values plus a
   mask M_w (:mod:`gpmask.masking.masks`). It starts with the selection window:

   - ``evidence`` selection (default): ``selection_steps`` steps that only measure.
     Each runs one batch of every weather through the common network, and the
     gradient g_w scores the elements; nothing trains, so every gradient is taken at
     C, where the specific values start. Then each tensor's top ``density`` per
     weather becomes M_w, fixed from then on, and ``masked_steps`` training steps follow.
   - ``consecutive`` selection: masks grow during the first ``selection_steps`` of
     the ``masked_steps`` training steps, from the gradients of those steps.

   Each training step, for each weather, the network runs with W_w = where(M_w, S_w, C);
   the gradient g_w of that weather's loss with respect to W_w

   - updates S_w where M_w is set (g_w only: no other weather touches S_w),
   - adds to C's gradient where M_w is not set, weighted per weather (equal weights,
     or learned uncertainty weights), unless C is frozen.

   The gradient is read from the network's own parameters after backward, so under
   DistributedDataParallel it is already averaged over ranks and every rank selects
   the same masks.
3. The result is a :class:`~gpmask.masking.checkpoint.MaskedCheckpoint`.

Training state is saved every ``checkpoint_every`` steps; a run restarted with the
same output resumes from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from gpmask.data.sources import PairSource
from gpmask.errors import GpmaskError
from gpmask.fileio import atomic_path
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.masking.distributed import DistributedContext, barrier
from gpmask.masking.losses import RestorationLoss
from gpmask.masking.masks import SELECTIONS, ConsecutiveMaskSelector, EvidenceMaskSelector
from gpmask.model import build_model, size_multiple

COMMON_UPDATES = ("mean", "uncertainty", "frozen")
#: Layouts of the network's 4-D parameters and of the training images. Channels-last
#: (NHWC) lets oneDNN's convolutions, forward and backward, skip the reorders the
#: NCHW layout costs: the demo recipe's steps run 1.1x (stage 1) and 1.2x (stage 2)
#: as fast on 2 Zen 3 cores (``benchmarks/bench_train_step.py``). ``contiguous`` is there
#: for a user's network that calls ``view`` on feature maps in a way NHWC strides do
#: not allow.
MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


@dataclass
class TrainConfig:
    """Every setting of a training run; recorded in the checkpoint's provenance."""

    arch: str = "tiny"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    weathers: list[str] = field(default_factory=lambda: ["rain", "raindrop", "snow"])
    base_steps: int = 2000
    masked_steps: int = 1000
    #: Stage-2 steps of the named weathers, where they differ from ``masked_steps``.
    #: Only with ``common_update="frozen"``: then each weather's specific values train
    #: on their own, and a weather that restores slowly can take more steps than the
    #: others without changing them.
    weather_steps: dict[str, int] = field(default_factory=dict)
    selection_steps: int = 200
    #: ``evidence`` (exactly ``density`` of each tensor per weather, chosen from gradients
    #: measured at the common model) or ``consecutive`` (masks grow from streaks of
    #: top-``top_fraction`` selections while training; ``density`` is then unused).
    selection: str = "evidence"
    density: float = 0.1
    #: Disjoint masks (``evidence`` only): an element goes to one weather at most.
    exclusive: bool = False
    batch_size: int = 8
    crop: int = 64
    base_lr: float = 5e-4
    masked_lr: float = 5e-4
    top_fraction: float = 0.4
    consecutive: int = 3
    common_update: str = "mean"
    loss: str = "charbonnier"
    perceptual_weights: str | None = None
    seed: int = 0
    #: Layout of the network and its inputs while training (:data:`MEMORY_FORMATS`).
    memory_format: str = "channels_last"
    checkpoint_every: int = 250
    report_every: int = 50

    def steps_of(self, weather: str) -> int:
        """Stage-2 training steps of ``weather``."""
        return self.weather_steps.get(weather, self.masked_steps)

    @property
    def measuring_steps(self) -> int:
        """Stage-2 steps before training starts: the evidence window, which only measures."""
        return self.selection_steps if self.selection == "evidence" else 0

    def validate(self) -> None:
        if self.common_update not in COMMON_UPDATES:
            raise GpmaskError(
                f"unknown common update {self.common_update!r}; use {', '.join(COMMON_UPDATES)}"
            )
        if len(set(self.weathers)) != len(self.weathers) or not self.weathers:
            raise GpmaskError(f"weathers must be distinct and non-empty, got {self.weathers}")
        if min(self.base_steps, self.masked_steps, *self.weather_steps.values()) < 0 or (
                self.selection_steps < 0):
            raise GpmaskError("step counts must not be negative")
        unknown = sorted(set(self.weather_steps) - set(self.weathers))
        if unknown:
            raise GpmaskError(f"weather steps name {', '.join(map(repr, unknown))}, not one of "
                              f"the weathers {self.weathers}")
        if self.weather_steps and self.common_update != "frozen":
            raise GpmaskError("per-weather stage-2 steps need --common frozen: a shared common "
                              "update takes a step of every weather at once")
        if self.batch_size < 1 or self.crop < 8:
            raise GpmaskError("batch size must be >= 1 and crop >= 8")
        for name in ("base_lr", "masked_lr"):
            rate = getattr(self, name)
            if not (math.isfinite(rate) and rate > 0):
                raise GpmaskError(f"--{name.replace('_', '-')} must be a finite number > 0, "
                                  f"got {rate}")
        if self.seed < 0:
            raise GpmaskError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise GpmaskError(f"--top-fraction must be in (0, 1], got {self.top_fraction}")
        if self.consecutive < 1:
            raise GpmaskError(f"--consecutive must be at least 1, got {self.consecutive}")
        if self.memory_format not in MEMORY_FORMATS:
            raise GpmaskError(f"unknown memory format {self.memory_format!r}; use "
                              f"{', '.join(MEMORY_FORMATS)}")
        if self.selection not in SELECTIONS:
            raise GpmaskError(
                f"unknown mask selection {self.selection!r}; use {', '.join(SELECTIONS)}"
            )
        if not 0.0 < self.density <= 1.0:
            raise GpmaskError(f"density must be in (0, 1], got {self.density}")
        if self.selection == "evidence" and self.density < 1.0 and self.selection_steps < 1:
            raise GpmaskError("evidence selection needs at least 1 selection step "
                              "(or density 1: every element specific)")
        if self.exclusive and self.selection != "evidence":
            raise GpmaskError("--exclusive needs --selection evidence")
        if self.exclusive and self.density * len(self.weathers) > 1.0:
            raise GpmaskError(
                f"--exclusive needs density x weathers <= 1, got {self.density} x "
                f"{len(self.weathers)}: disjoint masks cannot hold more than every element"
            )


@dataclass
class TrainResult:
    checkpoint: MaskedCheckpoint
    history: dict[str, Any]


class _MultiScaleForward(nn.Module):
    """Calls ``forward_multiscale`` when the network has it (for a multi-scale loss).

    DistributedDataParallel hooks only the wrapped module's ``forward``, so this
    wrapper is what gets wrapped.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        if hasattr(self.network, "forward_multiscale"):
            return list(self.network.forward_multiscale(image))
        return [self.network(image)]


def _cosine(step: int, total: int, peak: float) -> float:
    """Cosine decay from ``peak`` to 1% of it over ``total`` steps."""
    progress = min(step / max(total, 1), 1.0)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class Trainer:
    """Runs both GGPM stages on one process or one rank of a torchrun job.

    ``common_weights`` (a state dict) skips stage 1: stage 2 starts from those common
    values. Several stage-2 runs from one stage-1 model (:meth:`train_common`) compare
    settings on the same common model.
    """

    def __init__(
        self,
        config: TrainConfig,
        source: PairSource,
        state_path: str | os.PathLike | None = None,
        context: DistributedContext | None = None,
        progress: bool = True,
        common_weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        config.validate()
        missing = [w for w in config.weathers if w not in source.weathers]
        if missing:
            raise GpmaskError(
                f"the data has no {missing[0]!r} weather (has {list(source.weathers)})"
            )
        self.config = config
        self.source = source
        self.context = context or DistributedContext()
        self.state_path = Path(state_path) if state_path else None
        self.progress = progress and self.context.is_main

        torch.manual_seed(config.seed)
        self.layout = MEMORY_FORMATS[config.memory_format]
        self.network = build_model(config.arch, config.arch_kwargs).to(
            self.context.device, memory_format=self.layout
        )
        multiple = size_multiple(self.network)
        if config.crop % multiple:
            raise GpmaskError(f"--crop {config.crop}: {config.arch} needs crops whose side is "
                              f"a multiple of {multiple}")
        self.criterion = RestorationLoss(config.loss, config.perceptual_weights).to(
            self.context.device
        )
        wrapped = _MultiScaleForward(self.network)
        if self.context.enabled:
            wrapped = nn.parallel.DistributedDataParallel(wrapped)
        self.forward = wrapped
        self.names = [name for name, _ in self.network.named_parameters()]
        self.common_weights = common_weights
        self.stage = 1
        self.step = 0
        self.history: dict[str, Any] = {"base_loss": [], "masked_loss": {}, "mask_growth": []}

    # ----------------------------------------------------------------- helpers
    def _batch(self, weather: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = step * self.context.world_size + self.context.rank
        degraded, clean = self.source.batch(
            weather, self.config.batch_size, self.config.crop, index
        )
        degraded, clean = (
            torch.from_numpy(x).to(self.context.device, memory_format=self.layout)
            for x in (degraded, clean)
        )
        return degraded, clean

    def _loss(self, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.forward(degraded), clean)

    def _params(self) -> dict[str, nn.Parameter]:
        return dict(self.network.named_parameters())

    # ----------------------------------------------------------------- stage 1
    def _train_base(self, optimizer: torch.optim.Optimizer) -> None:
        config = self.config
        bar = tqdm(
            total=config.base_steps,
            initial=self.step,
            desc="stage 1: base model",
            disable=not self.progress,
            unit="step",
        )
        while self.step < config.base_steps:
            _set_lr(optimizer, _cosine(self.step, config.base_steps, config.base_lr))
            batches = [self._batch(w, self.step) for w in config.weathers]
            degraded = torch.cat([b[0] for b in batches])
            clean = torch.cat([b[1] for b in batches])
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(degraded, clean)
            loss.backward()
            optimizer.step()
            self.step += 1
            self.history["base_loss"].append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
            bar.update()
            self._maybe_save(optimizer=optimizer)
        bar.close()

    # ----------------------------------------------------------------- stage 2
    def _start_masked(self) -> None:
        """Seed C from the base model and every S_w from C; fresh optimizers."""
        config = self.config
        params = self._params()
        self.common = {n: nn.Parameter(p.detach().clone()) for n, p in params.items()}
        self.specific = {
            w: {n: nn.Parameter(p.detach().clone()) for n, p in params.items()}
            for w in config.weathers
        }
        shapes = {n: p.shape for n, p in params.items()}
        if config.selection == "evidence":
            self.selector = EvidenceMaskSelector(
                shapes, config.weathers, config.density, config.exclusive
            )
        else:
            self.selector = ConsecutiveMaskSelector(
                shapes, config.weathers, config.top_fraction, config.consecutive
            )
        self.log_variance = nn.Parameter(torch.zeros(len(config.weathers)))
        self.common_optimizer = torch.optim.Adam(
            [*self.common.values(), self.log_variance], lr=config.masked_lr
        )
        self.specific_optimizers = {
            w: torch.optim.Adam(list(self.specific[w].values()), lr=config.masked_lr)
            for w in config.weathers
        }
        self.history["masked_loss"] = {w: [] for w in config.weathers}

    def _measure_step(self) -> None:
        """One step of the evidence window: each weather's gradient at C, nothing trains."""
        params = self._params()
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(self.common[name])
        for weather in self.config.weathers:
            self.network.zero_grad(set_to_none=True)
            self._loss(*self._batch(weather, self.step)).backward()
            self.selector.update(weather, {n: p.grad.detach() for n, p in params.items()})

    def _fix_masks(self) -> None:
        """End the selection window; specific values start from C wherever they are new."""
        masks = self.selector.freeze()
        if self.selector.trains_during_window:
            return  # consecutive: each element was seeded when it joined
        with torch.no_grad():
            for weather, by_name in masks.items():
                for name, mask in by_name.items():
                    self.specific[weather][name][mask] = self.common[name][mask]

    def _masked_step(self, train_step: int) -> None:
        config = self.config
        params = self._params()
        common_grad = {n: torch.zeros_like(p) for n, p in self.common.items()}
        losses = []
        for index, weather in enumerate(config.weathers):
            if train_step >= config.steps_of(weather):
                continue
            masks, specific = self.selector.masks[weather], self.specific[weather]
            with torch.no_grad():
                for name, param in params.items():
                    param.copy_(torch.where(masks[name], specific[name], self.common[name]))
            self.network.zero_grad(set_to_none=True)
            loss = self._loss(*self._batch(weather, self.step))
            loss.backward()
            gradients = {n: p.grad.detach() for n, p in params.items()}
            for name, joined in self.selector.update(weather, gradients).items():
                with torch.no_grad():
                    specific[name][joined] = self.common[name][joined]
            if config.common_update == "uncertainty":
                weight = torch.exp(-self.log_variance[index].detach())
            else:
                weight = 1.0 / len(config.weathers)
            for name, gradient in gradients.items():
                specific[name].grad = gradient * masks[name]
                common_grad[name] += weight * gradient * ~masks[name]
            losses.append(loss.detach())
            self.history["masked_loss"][weather].append(loss.item())
        for weather, optimizer in self.specific_optimizers.items():
            if train_step < config.steps_of(weather):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if config.common_update != "frozen":
            for name, param in self.common.items():
                param.grad = common_grad[name]
            if config.common_update == "uncertainty":
                # d/ds of sum_w exp(-s_w) L_w + s_w (Kendall et al.'s task weighting).
                self.log_variance.grad = 1 - torch.exp(-self.log_variance.detach()) * torch.stack(
                    losses
                )
            self.common_optimizer.step()
            self.common_optimizer.zero_grad(set_to_none=True)

    def _train_masked(self) -> None:
        config = self.config
        measuring = config.measuring_steps
        total = measuring + max(config.steps_of(w) for w in config.weathers)
        bar = tqdm(
            total=total,
            initial=self.step,
            desc="stage 2: masks and specific values",
            disable=not self.progress,
            unit="step",
        )
        while self.step < total:
            if self.step == config.selection_steps and not self.selector.frozen:
                self._fix_masks()
            if self.step < measuring:
                self._measure_step()
            else:
                train_step = self.step - measuring
                _set_lr(self.common_optimizer,
                        _cosine(train_step, config.masked_steps, config.masked_lr))
                for weather, optimizer in self.specific_optimizers.items():
                    _set_lr(optimizer,
                            _cosine(train_step, config.steps_of(weather), config.masked_lr))
                self._masked_step(train_step)
            self.step += 1
            if self.step % config.report_every == 0 or self.step == total:
                self._record_mask_growth()
                bar.set_postfix({w[:6]: f"{e['density']:.2f}"
                                 for w, e in self.history["mask_growth"][-1].items()
                                 if w != "step"})
            bar.update()
            self._maybe_save()
        if not self.selector.frozen:  # a window as long as stage 2 (or longer)
            self._fix_masks()
        bar.close()

    def _record_mask_growth(self) -> None:
        """Append each mask's density and the fraction of elements that changed since last time
        (during an evidence window: of the masks the scores so far would give)."""
        self.history["mask_growth"].append({"step": self.step, **self.selector.record()})

    # ----------------------------------------------------------------- state
    def _state(self, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "stage": self.stage,
            "step": self.step,
            "config": asdict(self.config),
            "history": self.history,
            "network": self.network.state_dict(),
        }
        if self.stage == 1:
            state["optimizer"] = optimizer.state_dict()
        else:
            state["common"] = {n: p.detach() for n, p in self.common.items()}
            state["specific"] = {
                w: {n: p.detach() for n, p in s.items()} for w, s in self.specific.items()
            }
            state["log_variance"] = self.log_variance.detach()
            state["selector"] = self.selector.state_dict()
            state["common_optimizer"] = self.common_optimizer.state_dict()
            state["specific_optimizers"] = {
                w: o.state_dict() for w, o in self.specific_optimizers.items()
            }
        return state

    def _maybe_save(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        every = self.config.checkpoint_every
        if self.state_path is None or every <= 0 or self.step % every:
            return
        if self.context.is_main:
            with atomic_path(self.state_path) as tmp:
                torch.save(self._state(optimizer), tmp)
        barrier(self.context)

    def _resume(self, optimizer: torch.optim.Optimizer) -> None:
        if self.state_path is None or not self.state_path.is_file():
            return
        try:
            state = torch.load(self.state_path, map_location=self.context.device,
                               weights_only=True)
            written_with = state["config"]
        except Exception as exc:  # torch's unpickler raises many types for a damaged file
            raise GpmaskError(f"{self.state_path}: damaged or truncated training state "
                              f"({type(exc).__name__}); delete it to start over") from exc
        if written_with != asdict(self.config):
            raise GpmaskError(
                f"{self.state_path} was written with other settings; delete it to start over"
            )
        self.network.load_state_dict(state["network"])
        self.stage, self.step, self.history = state["stage"], state["step"], state["history"]
        if self.stage == 1:
            optimizer.load_state_dict(state["optimizer"])
            return
        self._start_masked()
        with torch.no_grad():
            for name, value in state["common"].items():
                self.common[name].copy_(value)
            for weather, values in state["specific"].items():
                for name, value in values.items():
                    self.specific[weather][name].copy_(value)
            self.log_variance.copy_(state["log_variance"])
        self.selector.load_state_dict(state["selector"])
        self.common_optimizer.load_state_dict(state["common_optimizer"])
        for weather, opt_state in state["specific_optimizers"].items():
            self.specific_optimizers[weather].load_state_dict(opt_state)

    # ----------------------------------------------------------------- entry
    def train_common(self) -> dict[str, torch.Tensor]:
        """Stage 1 (resuming if a state file exists), or ``common_weights`` if given: the
        common values as a state dict. :meth:`run` calls it first."""
        base_optimizer = torch.optim.Adam(self.network.parameters(), lr=self.config.base_lr)
        self._resume(base_optimizer)
        if self.stage == 1:
            if self.common_weights is None:
                self._train_base(base_optimizer)
            else:
                self.network.load_state_dict(self.common_weights)
        source = self.common if self.stage == 2 else dict(self.network.state_dict())
        return {n: v.detach().clone(memory_format=torch.contiguous_format)
                for n, v in source.items()}

    def run(self) -> TrainResult:
        """Train both stages (resuming if a state file exists); return the masked checkpoint."""
        started = time.perf_counter()
        self.train_common()
        if self.stage == 1:
            self.stage, self.step = 2, 0
            self._start_masked()
        self._train_masked()
        seconds = time.perf_counter() - started
        return TrainResult(self._checkpoint(seconds), self.history)

    def _checkpoint(self, seconds: float) -> MaskedCheckpoint:
        def plain(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().cpu().contiguous()

        buffers = {n: plain(b) for n, b in self.network.named_buffers()}
        common = {n: plain(p) for n, p in self.common.items()} | buffers
        masks = {
            w: {n: plain(m) for n, m in self.selector.masks[w].items()}
            for w in self.config.weathers
        }
        weights = {
            w: {
                n: torch.where(masks[w][n], plain(s), common[n])
                for n, s in self.specific[w].items()
            }
            for w in self.config.weathers
        }
        provenance = {
            "method": "ggpm",
            "settings": asdict(self.config),
            "data": getattr(self.source, "description", type(self.source).__name__),
            "world_size": self.context.world_size,
            "stage1": "given common weights" if self.common_weights is not None else "trained",
            "train_seconds": round(seconds, 1),
        }
        return MaskedCheckpoint.from_weights(
            self.config.arch, self.config.arch_kwargs, common, weights, masks, provenance
        )
