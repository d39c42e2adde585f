"""Which backend x precision pairs a benchmark can run here, and why the others cannot.

A user asks for backends and precisions; the bundle and the machine decide what
exists. The deployment backends are the runtime's registry
(:data:`gpmask.runtime.backends.REGISTRY`): their specs say what cannot run here and
why. Everything that cannot run becomes a :class:`Skip` with a one-line reason the
report lists (a missing runtime, a precision the bundle was not calibrated or built
for, an engine built for another GPU, a CPU without bfloat16), never an exception. A
name that is not a backend at all is a typo, and refused.

Three backends are references, not deployment targets, and run the fp32 network
only: ``torch`` (eager, rebuilt from the checkpoint: the latency and quality
reference), ``torch-compile`` (the same modules through ``torch.compile``), and
``openvino-default`` (OpenVINO's ``compile_model`` with no options on the bundle's fp32
graphs: what an x86 user gets without gpmask; on a CPU with bfloat16 OpenVINO then
runs it in bf16, which its PSNR shows). They are specs of the same kind, made here
(:func:`reference_specs`) because torch lives in the benchmark, never in the runtime.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.precision import AUTO
from gpmask.runtime.backends import REGISTRY, runnable_precision
from gpmask.runtime.backends.base import BackendSpec

if TYPE_CHECKING:
    from gpmask.masking.checkpoint import MaskedCheckpoint

#: The references (fp32 only), torch eager first.
REFERENCE_BACKENDS = ("torch", "torch-compile", "openvino-default")
#: Backends ``gpmask bench`` knows: the references, then the runtime's registry.
BENCH_BACKENDS = (*REFERENCE_BACKENDS, *(spec.name for spec in REGISTRY))
#: The precision the references run at: they are fp32 references, not deployment targets.
REFERENCE_PRECISION = "fp32"


@dataclass(frozen=True)
class Target:
    """One backend at one precision (``auto``: the precision ``--precision auto`` chose)."""

    spec: BackendSpec
    precision: str
    auto: bool = False

    @property
    def backend(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass(frozen=True)
class Skip:
    """A backend, a precision, or a pair of them that is not benchmarked, and why."""

    backend: str | None
    precision: str | None
    reason: str

    def line(self) -> str:
        """``backend precision: reason``, naming only what the reason is about."""
        subject = " ".join(part for part in (self.backend, self.precision) if part)
        return f"{subject}: {self.reason}"


def reference_specs(checkpoint: MaskedCheckpoint | None, torch_reason: str | None,
                    threads: int) -> dict[str, BackendSpec]:
    """The references as specs: torch eager and torch.compile on ``checkpoint`` (or not,
    for ``torch_reason``), OpenVINO's defaults on the fp32 graphs."""
    from gpmask.bench.torch_reference import (
        TorchCompileBackend,
        TorchEagerBackend,
        torch_compile_refusal,
        torch_device,
    )
    from gpmask.runtime.backends.openvino import OPENVINO_DEFAULTS, OpenVinoBackend
    from gpmask.runtime.backends.openvino import SPEC as OPENVINO

    device = "cpu" if torch_device() == "cpu" else "gpu"
    fp32_only = _only(REFERENCE_PRECISION)

    def torch_spec(name: str, kind: type[TorchEagerBackend], refusal) -> BackendSpec:
        return BackendSpec(
            name, device, (REFERENCE_PRECISION,),
            unavailable=lambda index: torch_reason or refusal(),
            refusal=fp32_only,
            load=lambda bundle, precision, index: kind(checkpoint, bundle.weathers,
                                                       torch_device(), threads))

    specs = (
        torch_spec("torch", TorchEagerBackend, lambda: None),
        torch_spec("torch-compile", TorchCompileBackend, torch_compile_refusal),
        BackendSpec("openvino-default", "cpu", (REFERENCE_PRECISION,), OPENVINO.unavailable,
                    lambda bundle, precision, index: fp32_only(bundle, precision, index)
                    or OPENVINO.refusal(bundle, precision, index),
                    lambda bundle, precision, index: OpenVinoBackend(
                        bundle, precision, settings=OPENVINO_DEFAULTS)),
    )
    return {spec.name: spec for spec in specs}


def _only(precision: str):
    def refusal(bundle: Bundle, asked: str, device: int) -> str | None:
        return None if asked == precision else f"a reference; it runs {precision} only"
    return refusal


def plan_targets(
    bundle: Bundle, backends: list[str], precisions: list[str],
    references: dict[str, BackendSpec],
) -> tuple[list[Target], list[Skip]]:
    """Targets to run, the references first (torch eager first of all), then the
    backends in the order asked, and everything skipped. A precision every asked backend
    refuses for the same reason (graphs the bundle lacks) is one skip, not one per
    backend."""
    for backend in backends:
        if backend not in BENCH_BACKENDS:
            raise GpmaskError(f"unknown backend {backend!r}; choose from "
                              f"{', '.join(BENCH_BACKENDS)}")
    registered = {spec.name: spec for spec in REGISTRY}
    specs = [*(references[name] for name in REFERENCE_BACKENDS if name in backends),
             *(registered[name] for name in backends if name in registered)]
    targets: list[Target] = []
    skipped: list[Skip] = []
    refused: dict[tuple[str, str], list[str]] = defaultdict(list)
    deployed = 0
    for spec in specs:
        problem = spec.unavailable(0)
        if problem:
            skipped.append(Skip(spec.name, None, problem))
            continue
        reference = spec.name in REFERENCE_BACKENDS
        deployed += not reference
        for precision in (REFERENCE_PRECISION,) if reference else precisions:
            if precision == AUTO:
                chosen, passed = runnable_precision(spec, bundle)
                if chosen is None:
                    refused[(AUTO, "; ".join(passed))].append(spec.name)
                elif chosen not in precisions:  # asked for by name too: measured once
                    targets.append(Target(spec, chosen, auto=True))
                continue
            problem = spec.refusal(bundle, precision, 0)
            if problem is None:
                targets.append(Target(spec, precision))
            else:
                refused[(precision, problem)].append(spec.name)
    for (precision, problem), names in refused.items():
        if len(names) == deployed:
            skipped.append(Skip(None, precision, problem))
        else:
            skipped.extend(Skip(name, precision, problem) for name in names)
    return targets, skipped
