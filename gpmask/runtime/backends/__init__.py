"""The backend registry, and choosing a backend and a precision for a bundle on this machine.

:data:`REGISTRY` lists every backend's spec (:class:`~gpmask.runtime.backends.base.
BackendSpec`) in preference order: TensorRT engines, ONNX Runtime on CUDA (then its
TensorRT provider), OpenVINO on the CPU (faster than ONNX Runtime's CPU provider at
every precision measured: ``benchmarks/bench_cpu.py``), ONNX Runtime on the CPU. A new
backend is a module declaring its spec plus one line here; everything else reads the
registry: the names ``--backend`` accepts (:data:`BACKENDS`), ``auto``, and the
benchmark's targets.

:func:`choose` resolves ``--backend`` and ``--precision``. ``auto`` backend: the first
spec that can run here and can run this bundle at the precision. ``auto`` precision:
the spec's precisions in its order (fastest first) until one this bundle and machine
offer, skipping graphs whose calibration missed the bundle's quality budget. So a
machine with TensorRT and engines uses the engines just built, a CPU with AMX or
AVX-512 BF16 computes fp32 graphs in bf16 on OpenVINO, and a calibrated bundle runs
its int8 graphs; an explicit ``--precision`` always wins. Backend modules import their
runtime library only when asked, so a machine without TensorRT never tries to import it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.precision import AUTO, check_precision, graph_precision
from gpmask.runtime.backends import onnxruntime, openvino, tensorrt
from gpmask.runtime.backends.base import Backend, BackendSpec

#: Every backend, in the order ``auto`` prefers them.
REGISTRY: tuple[BackendSpec, ...] = (
    tensorrt.SPEC,
    onnxruntime.CUDA_SPEC,
    onnxruntime.TENSORRT_SPEC,
    openvino.SPEC,
    onnxruntime.CPU_SPEC,
)
#: A family name and the specs it means (the first that can run here is taken).
FAMILIES = {"onnxruntime": tuple(s.name for s in REGISTRY if s.name.startswith("onnxruntime-"))}
#: Names ``--backend`` accepts.
BACKENDS = (AUTO, *FAMILIES, *(spec.name for spec in REGISTRY))

log = logging.getLogger("gpmask.runtime")


def spec(name: str) -> BackendSpec:
    """The registered spec named ``name``."""
    for candidate in REGISTRY:
        if candidate.name == name:
            return candidate
    raise GpmaskError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class Choice:
    """A backend and precision chosen for a bundle, and one line saying why."""

    spec: BackendSpec
    precision: str
    reason: str

    def load(self, bundle: Bundle, device: int = 0) -> Backend:
        return self.spec.load(bundle, self.precision, device)


def budget_refusal(bundle: Bundle, precision: str) -> str | None:
    """Why ``auto`` passes over ``precision``: its graphs' calibration missed the quality
    budget (the manifest records it per graph), or None."""
    for weather, record in bundle.graphs(graph_precision(precision)).items():
        quality = record.quality
        if quality is not None and not quality.fits:
            return (f"its {weather} graph misses the quality budget (drop {quality.drop:.2f} dB "
                    f"> {quality.max_psnr_drop} dB)")
    return None


def runnable_precision(candidate: BackendSpec, bundle: Bundle, precision: str = AUTO,
                       device: int = 0) -> tuple[str | None, list[str]]:
    """The precision ``candidate`` (available here) runs ``bundle`` at: ``precision``, or
    for ``auto`` the first of its precisions the bundle offers within its quality budget;
    None when there is none. Also each precision passed over, with its reason."""
    skipped: list[str] = []
    for option in candidate.precisions if precision == AUTO else (precision,):
        problem = candidate.refusal(bundle, option, device)
        if problem is None and precision == AUTO:
            problem = budget_refusal(bundle, option)
        if problem is None:
            return option, skipped
        skipped.append(f"{option}: {problem}" if precision == AUTO else problem)
    return None, skipped


def choose(bundle: Bundle, backend: str = AUTO, precision: str = AUTO,
           device: int = 0) -> Choice:
    """The backend and precision ``backend`` and ``precision`` mean for ``bundle`` here.

    Either may be ``auto`` (see the module docstring). A choice that cannot run is a
    :class:`GpmaskError` giving each candidate's reason.
    """
    check_precision(precision, "--precision", allow_auto=True)
    if backend == AUTO:
        candidates = REGISTRY
    elif backend in FAMILIES:
        candidates = tuple(spec(name) for name in FAMILIES[backend])
    else:
        candidates = (spec(backend),)
    passed: list[str] = []
    for candidate in candidates:
        problem = candidate.unavailable(device)
        if problem:
            passed.append(f"{candidate.name}: {problem}")
            continue
        option, skipped = runnable_precision(candidate, bundle, precision, device)
        if option is not None:
            return Choice(candidate, option, _reason(candidate, option, backend, precision,
                                                     passed, skipped))
        passed.append(f"{candidate.name}: " + ("; ".join(skipped) if precision != AUTO else
                                               "no precision it runs: " + "; ".join(skipped)))
    asked = "" if backend == AUTO else f"backend {backend}: "
    if len(candidates) == 1:
        raise GpmaskError(asked + passed[0].split(": ", 1)[1])
    raise GpmaskError(f"{asked}no backend can run {bundle.root} at precision {precision} "
                      f"here ({' | '.join(passed)})")


def _reason(chosen: BackendSpec, precision: str, backend: str, asked_precision: str,
            passed: list[str], skipped: list[str]) -> str:
    """``backend openvino (auto: ...), precision int8-openvino (auto: ...)``."""
    backend_why = "asked for" if backend == chosen.name else \
        f"{backend}: " + ("; ".join(passed) + "; " if passed else "") + "the first that runs here"
    precision_why = "asked for" if asked_precision != AUTO else \
        "auto: " + ("; ".join(skipped) + "; " if skipped else "") + \
        f"the fastest {chosen.name} offers for this bundle"
    return f"backend {chosen.name} ({backend_why}), precision {precision} ({precision_why})"


def load_backend(bundle: Bundle, backend: str = AUTO, precision: str = AUTO,
                 device: int = 0) -> Backend:
    """Load ``bundle`` on the backend and precision :func:`choose` makes of the names."""
    choice = choose(bundle, backend, precision, device)
    log.info("%s", choice.reason)
    return choice.load(bundle, device)
