"""What this machine can run: the report ``gpmask check`` prints, as data.

Like Ultralytics' ``yolo checks``, it answers "what will gpmask do here, and why" in one
place: the versions that matter (Python, gpmask, torch, ONNX Runtime, OpenVINO, TensorRT,
CUDA), what each runtime library can actually do (the ONNX Runtime providers that start a
session and compute a convolution, not merely those listed; OpenVINO's devices and the
CPU capabilities it reports; TensorRT and the GPU an engine is specific to), the CPU
flags that decide a precision's speed, and, given a bundle, every backend x precision
pair with whether it runs and why each other one does not.

Nothing here is a second list of backends or of reasons: the pairs are the backend
registry's specs asked the questions ``auto`` asks (:func:`gpmask.runtime.backends.choose`),
the machine facts come from :mod:`gpmask.host`, and each library is asked through the
backend module that uses it, so the report cannot disagree with what a run does. Like
the rest of the runtime it imports no torch: torch's version is read from its package
metadata.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from gpmask import __version__
from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.host import (
    cpu_model,
    cuda_driver_version,
    gpu,
    notable_cpu_flags,
    onnxruntime_problem,
    physical_cores,
    tensorrt_module,
    tensorrt_problem,
)
from gpmask.precision import AUTO, NAMES


@dataclass(frozen=True)
class Pair:
    """One backend x precision for a bundle: whether it runs here and, if not, why.

    ``auto_skips``: why ``--precision auto`` passes over a pair that runs (its graphs
    miss the bundle's quality budget), or None.
    """

    backend: str
    precision: str
    runs: bool
    reason: str | None = None
    auto_skips: str | None = None


@dataclass
class CheckReport:
    """The machine's facts by section, and, with a bundle, its pairs and ``auto``'s choice.

    Attributes:
        machine: section (``python``, ``gpmask``, ``torch``, ``onnxruntime``, ``openvino``,
            ``tensorrt``, ``gpu``, ``cuda``, ``cpu``) -> its facts; a library that cannot
            be used has a ``problem`` saying why.
        bundle: the bundle folder checked, or None.
        auto: what ``--backend auto --precision auto`` loads (``backend``, ``precision``,
            ``reason``), or ``{"problem": ...}`` when nothing runs the bundle here.
        pairs: every registered backend x precision, in registry order.
    """

    machine: dict[str, dict[str, Any]]
    bundle: str | None = None
    auto: dict[str, Any] | None = None
    pairs: list[Pair] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        report: dict[str, Any] = dict(self.machine)
        if self.bundle is not None:
            report["bundle"] = {"path": self.bundle, "auto": self.auto,
                                "pairs": [asdict(pair) for pair in self.pairs]}
        return report

    def lines(self) -> list[str]:
        """The report as text, one fact per line."""
        lines = [f"{_TITLES[name]:<13} {_describe(name, facts)}"
                 for name, facts in self.machine.items()]
        if self.bundle is None:
            return lines
        lines += ["", f"bundle {self.bundle} (backends in the order auto tries them):"]
        auto = self.auto or {}
        width = max(len(pair.backend) for pair in self.pairs)
        for backend in dict.fromkeys(pair.backend for pair in self.pairs):
            pairs = [pair for pair in self.pairs if pair.backend == backend]
            if not any(pair.runs for pair in pairs) and len({p.reason for p in pairs}) == 1:
                pairs = [Pair(backend, "any precision", False, pairs[0].reason)]
            for pair in pairs:
                verdict = "runs" if pair.runs else f"no: {pair.reason}"
                if (pair.backend, pair.precision) == (auto.get("backend"),
                                                      auto.get("precision")):
                    verdict += " (auto's choice)"
                elif pair.auto_skips:
                    verdict += f" (auto skips it: {pair.auto_skips})"
                lines.append(f"  {pair.backend:<{width}}  {pair.precision:<13}  {verdict}")
        if "problem" in auto:
            lines.append(f"  auto: nothing runs this bundle here ({auto['problem']})")
        return lines


_TITLES = {"python": "Python", "gpmask": "gpmask", "torch": "torch",
           "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT",
           "gpu": "GPU", "cuda": "CUDA", "cpu": "CPU"}


def _describe(name: str, facts: dict[str, Any]) -> str:
    """One section as one line of text."""
    if facts.get("problem") and len(facts) == 1:
        return f"none: {facts['problem']}"
    if name == "onnxruntime":
        failing = "; ".join(f"{p}: {why}" for p, why in facts["providers_failing"].items())
        return (f"{facts['version']}; providers that work: "
                f"{', '.join(facts['providers_working']) or 'none'}"
                + (f"; listed but not working: {failing}" if failing else "")
                + f" (listed: {', '.join(facts['providers_listed'])})")
    if name == "openvino":
        return (f"{facts['version']}; devices {', '.join(facts['devices'])}; CPU "
                f"{facts['cpu']}, capabilities {', '.join(facts['cpu_capabilities'])}")
    if name == "tensorrt":
        runtime = "lean runtime " if facts["runtime"] == "tensorrt_lean" else ""
        builder = "builds engines" if facts["builder"] else \
            f"runs engines only, builds none ({facts['builder_problem']})"
        return f"{runtime}{facts['version']}; {builder}"
    if name == "gpu":
        return f"{facts['name']} (compute capability {facts['compute_capability']})"
    if name == "cuda":
        runtime = facts["runtime"] or f"not found ({facts['runtime_problem']})"
        return f"driver {facts['driver'] or 'none'}; runtime {runtime}"
    if name == "cpu":
        return (f"{facts['model']}, {facts['physical_cores']} physical cores; flags "
                f"{' '.join(facts['flags']) or 'none of ' + 'AVX2/AVX-512/VNNI/BF16/AMX'}")
    return ", ".join(f"{value}" for value in facts.values() if value is not None)


# ----------------------------------------------------------------- the machine
def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _onnxruntime(device: int) -> dict[str, Any]:
    problem = onnxruntime_problem()
    if problem:
        return {"problem": problem}
    import onnxruntime as ort

    from gpmask.runtime.backends.onnxruntime import PROVIDERS, provider_problem

    listed = ort.get_available_providers()
    working, failing = [], {}
    for kind, name in PROVIDERS.items():
        if name in listed:
            why = provider_problem(kind, device)
            if why:
                failing[name] = why
            else:
                working.append(name)
    return {"version": ort.__version__, "providers_listed": listed,
            "providers_working": working, "providers_failing": failing}


def _openvino() -> dict[str, Any]:
    from gpmask.runtime.backends.openvino import core, cpu_capabilities, openvino_available

    if not openvino_available():
        return {"problem": "not installed (pip install openvino)"}
    import openvino

    return {"version": openvino.__version__, "devices": list(core().available_devices),
            "cpu": core().get_property("CPU", "FULL_DEVICE_NAME"),
            "cpu_capabilities": cpu_capabilities()}


def _tensorrt() -> dict[str, Any]:
    problem = tensorrt_problem()
    if problem:
        return {"problem": problem}
    module = tensorrt_module()
    builder_problem = tensorrt_problem(builder=True)
    return {"runtime": module.__name__, "version": module.__version__,
            "builder": builder_problem is None, "builder_problem": builder_problem}


def _gpu(device: int) -> dict[str, Any]:
    try:
        found = gpu(device)
    except GpmaskError as exc:
        return {"problem": str(exc)}
    return {"index": found.index, "name": found.name,
            "compute_capability": found.compute_capability}


def _cuda() -> dict[str, Any]:
    """The driver's CUDA version, and the CUDA runtime the TensorRT backend loads (through
    Polygraphy, which also searches the folders of NVIDIA's pip wheels)."""
    driver = cuda_driver_version()
    if driver is None:
        return {"driver": None, "runtime": None,
                "runtime_problem": "not looked for without a CUDA driver"}
    import ctypes

    from polygraphy import cuda
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    try:
        with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 1):  # its search log is not the answer
            cudart = cuda.wrapper()
        version = ctypes.c_int(0)
        cudart.check(cudart.handle.cudaRuntimeGetVersion(ctypes.byref(version)))
    except (PolygraphyException, OSError, AttributeError) as exc:
        return {"driver": driver, "runtime": None, "runtime_problem": " ".join(str(exc).split())}
    return {"driver": driver, "runtime": f"{version.value // 1000}.{version.value % 1000 // 10}",
            "runtime_problem": None}


def machine_facts(device: int = 0) -> dict[str, dict[str, Any]]:
    """Every section of the report but the bundle's (see :class:`CheckReport`)."""
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "platform": platform.platform()},
        "gpmask": {"version": __version__,
                   "location": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))},
        "torch": {"version": _package_version("torch")} if _package_version("torch")
        else {"problem": "not installed (only training and export need it)"},
        "onnxruntime": _onnxruntime(device),
        "openvino": _openvino(),
        "tensorrt": _tensorrt(),
        "gpu": _gpu(device),
        "cuda": _cuda(),
        "cpu": {"model": cpu_model(), "physical_cores": physical_cores(),
                "flags": notable_cpu_flags()},
    }


# ----------------------------------------------------------------- a bundle
def bundle_pairs(bundle: Bundle, device: int = 0) -> list[Pair]:
    """Every registered backend x every precision, each with whether it runs ``bundle``
    here, asked of the registry's specs as ``choose`` asks them."""
    from gpmask.runtime.backends import REGISTRY, budget_refusal

    pairs = []
    for spec in REGISTRY:
        unavailable = spec.unavailable(device)
        ordered = [*spec.precisions, *(p for p in NAMES if p not in spec.precisions)]
        for precision in ordered:
            reason = unavailable or spec.refusal(bundle, precision, device)
            if reason is None and precision not in spec.precisions:
                reason = f"{spec.name} does not run {precision}"
            skips = budget_refusal(bundle, precision) if reason is None else None
            pairs.append(Pair(spec.name, precision, reason is None, reason, skips))
    return pairs


def check(bundle: Bundle | str | os.PathLike | None = None, device: int = 0) -> CheckReport:
    """What this machine (GPU ``device``) can run, and, given ``bundle``, how it would run it."""
    report = CheckReport(machine_facts(device))
    if bundle is None:
        return report
    from gpmask.runtime.backends import choose

    opened = bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    report.bundle = str(opened.root)
    report.pairs = bundle_pairs(opened, device)
    try:
        choice = choose(opened, AUTO, AUTO, device)
    except GpmaskError as exc:
        report.auto = {"problem": str(exc)}
    else:
        report.auto = {"backend": choice.spec.name, "precision": choice.precision,
                       "reason": choice.reason}
    return report
