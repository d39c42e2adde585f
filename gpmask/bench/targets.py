"""Which backend x precision pairs a benchmark can run here, and why the others cannot.

A user asks for backends and precisions; the bundle and the machine decide what
exists. Everything that cannot run becomes a :class:`Skip` with a one-line reason the
report lists (a missing runtime, a precision the bundle was not calibrated or built
for, an engine built for another GPU), never an exception. A name that is not a
backend at all is a typo, and refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends import tensorrt_available

#: Backends ``gpmask bench`` knows, the torch eager reference first.
BENCH_BACKENDS = ("torch", "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt",
                  "tensorrt")
#: The precision torch eager runs at: it is the fp32 reference, not a deployment target.
TORCH_PRECISION = "fp32"


@dataclass(frozen=True)
class Target:
    """One backend at one precision."""

    backend: str
    precision: str

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


def plan_targets(
    bundle: Bundle, backends: list[str], precisions: list[str], torch_reason: str | None
) -> tuple[list[Target], list[Skip]]:
    """Targets to run, in the order asked (torch first), and everything skipped.

    ``torch_reason`` is why torch eager cannot run (no checkpoint), or None when it can.
    """
    for backend in backends:
        if backend not in BENCH_BACKENDS:
            raise GpmaskError(f"unknown backend {backend!r}; choose from "
                              f"{', '.join(BENCH_BACKENDS)}")
    targets: list[Target] = []
    skipped: list[Skip] = []
    graph_precisions = []
    for precision in precisions:
        reason = _missing_graphs(bundle, precision)
        if reason:
            skipped.append(Skip(None, precision, reason))
        else:
            graph_precisions.append(precision)
    ordered = sorted(backends, key=lambda name: name != "torch")
    for backend in ordered:
        if backend == "torch":
            if torch_reason:
                skipped.append(Skip("torch", None, torch_reason))
            else:
                targets.append(Target("torch", TORCH_PRECISION))
        elif backend == "tensorrt":
            _plan_tensorrt(bundle, precisions, targets, skipped)
        else:
            reason = _missing_provider(backend.removeprefix("onnxruntime-"))
            if reason:
                skipped.append(Skip(backend, None, reason))
            else:
                targets.extend(Target(backend, p) for p in graph_precisions)
    return targets, skipped


def _missing_graphs(bundle: Bundle, precision: str) -> str | None:
    graphs = bundle.manifest.get("graphs", {})
    lacking = [w for w in bundle.weathers if precision not in graphs.get(w, {})]
    if not lacking:
        return None
    if len(lacking) == len(bundle.weathers):
        return (f"bundle has no {precision} graphs; run gpmask calibrate {bundle.root} "
                f"--precision {precision}")
    return f"bundle has no {precision} graphs for {', '.join(lacking)}"


def _missing_provider(kind: str) -> str | None:
    from gpmask.runtime.backends.onnxruntime import PROVIDERS, available_providers

    if kind in available_providers():
        return None
    hint = "" if kind == "cpu" else " (install onnxruntime-gpu)"
    return f"this ONNX Runtime has no {PROVIDERS[kind]}{hint}"


def _plan_tensorrt(bundle: Bundle, precisions: list[str], targets: list[Target],
                   skipped: list[Skip]) -> None:
    if not tensorrt_available():
        skipped.append(Skip("tensorrt", None, "not installed"))
        return
    from gpmask.runtime.backends.tensorrt import engine_mismatch, probe_running_target

    running, problem = probe_running_target(0)
    if running is None:
        skipped.append(Skip("tensorrt", None, problem))
        return
    engines = bundle.manifest.get("engines", {})
    for precision in precisions:
        records = [engines.get(w, {}).get(precision) for w in bundle.weathers]
        if not all(records):
            skipped.append(Skip("tensorrt", precision, f"bundle has no {precision} engines; "
                                f"run gpmask build {bundle.root} --precision {precision}"))
            continue
        problem = next(filter(None, (engine_mismatch(r, running, str(bundle.root), precision)
                                     for r in records)), None)
        if problem:
            skipped.append(Skip("tensorrt", precision, problem))
        else:
            targets.append(Target("tensorrt", precision))
