"""Which backend x precision pairs a benchmark can run here, and why the others cannot.

A user asks for backends and precisions; the bundle and the machine decide what
exists. Everything that cannot run becomes a :class:`Skip` with a one-line reason the
report lists (a missing runtime, a precision the bundle was not calibrated or built
for, an engine built for another GPU, a CPU without bfloat16), never an exception. A
name that is not a backend at all is a typo, and refused.

Three backends are references, not deployment targets, and run the fp32 network
only: ``torch`` (eager, rebuilt from the checkpoint: the latency and quality
reference), ``torch-compile`` (the same modules through ``torch.compile``), and
``openvino-default`` (OpenVINO's ``compile_model`` with no options on the bundle's fp32
graphs: what an x86 user gets without gpmask; on a CPU with bfloat16 OpenVINO then
runs it in bf16, which its PSNR shows).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpmask.bundle import HINTED_PRECISIONS, Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends import tensorrt_available
from gpmask.runtime.backends.openvino import (
    graph_precision,
    openvino_available,
    precision_refusal,
)

#: The references (fp32 only), torch eager first.
REFERENCE_BACKENDS = ("torch", "torch-compile", "openvino-default")
#: Backends ``gpmask bench`` knows: the references, then the runtime's backends.
BENCH_BACKENDS = (*REFERENCE_BACKENDS, "openvino", "onnxruntime-cpu", "onnxruntime-cuda",
                  "onnxruntime-tensorrt", "tensorrt")
#: The precision the references run at: they are fp32 references, not deployment targets.
TORCH_PRECISION = REFERENCE_PRECISION = "fp32"


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
    """Targets to run, the references first (torch eager first of all), and everything skipped.

    ``torch_reason`` is why torch cannot run (no checkpoint), or None when it can.
    """
    for backend in backends:
        if backend not in BENCH_BACKENDS:
            raise GpmaskError(f"unknown backend {backend!r}; choose from "
                              f"{', '.join(BENCH_BACKENDS)}")
    targets: list[Target] = []
    skipped: list[Skip] = []
    graph_precisions, hinted = [], []
    for precision in precisions:
        reason = _missing_graphs(bundle, graph_precision(precision))
        if reason:
            skipped.append(Skip(None, precision, reason))
        elif precision in HINTED_PRECISIONS:
            hinted.append(precision)
        else:
            graph_precisions.append(precision)
    if hinted and "openvino" not in backends:
        skipped.extend(Skip(None, p, _hinted_reason(p)) for p in hinted)
    ordered = sorted(backends, key=lambda name: (BENCH_BACKENDS.index(name)
                                                 if name in REFERENCE_BACKENDS else 99))
    for backend in ordered:
        if backend in REFERENCE_BACKENDS:
            reason = _reference_reason(backend, torch_reason)
            if reason:
                skipped.append(Skip(backend, None, reason))
            else:
                targets.append(Target(backend, REFERENCE_PRECISION))
        elif backend == "tensorrt":
            _plan_tensorrt(bundle, [p for p in precisions if p not in HINTED_PRECISIONS],
                           targets, skipped)
        elif backend == "openvino":
            if not openvino_available():
                skipped.append(Skip(backend, None, "not installed (pip install openvino)"))
                continue
            targets.extend(Target(backend, p) for p in graph_precisions)
            for precision in hinted:
                reason = precision_refusal(precision)
                if reason:
                    skipped.append(Skip(backend, precision, reason))
                else:
                    targets.append(Target(backend, precision))
        else:
            reason = _missing_provider(backend.removeprefix("onnxruntime-"))
            if reason:
                skipped.append(Skip(backend, None, reason))
            else:
                targets.extend(Target(backend, p) for p in graph_precisions)
    return targets, skipped


def _hinted_reason(precision: str) -> str:
    return (f"OpenVINO's {precision} inference of the {HINTED_PRECISIONS[precision]} graphs; "
            f"only the openvino backend runs it")


def _reference_reason(backend: str, torch_reason: str | None) -> str | None:
    """Why reference ``backend`` cannot run here, or None."""
    if backend == "openvino-default":
        return None if openvino_available() else "not installed (pip install openvino)"
    if torch_reason:
        return torch_reason
    if backend == "torch-compile":
        from gpmask.bench.torch_reference import torch_compile_refusal

        return torch_compile_refusal()
    return None


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
