"""What this machine has: CPU cores and instruction set, free memory, NVIDIA GPU and
driver, TensorRT (the full library or the lean runtime), ONNX Runtime.

Every part that adapts to the machine (a backend choosing its threads, ``auto`` choosing a
backend and a precision, ``gpmask check``, a benchmark labelling its figures) asks here,
so that one question has one answer. Nothing here imports torch or a runtime library
it does not need for the question asked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gpmask.bundle.manifest import EngineTarget
from gpmask.errors import GpmaskError

#: CPU feature flags that decide a precision's speed, as /proc/cpuinfo names them.
NOTABLE_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
                     "amx_tile", "amx_bf16", "amx_int8")

# CUdevice_attribute values of the CUDA driver API (stable across CUDA versions).
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads of one core count once).

    The engines' convolutions gain nothing from a core's second hardware thread and
    lose to the contention, so inference threads are sized by cores, not logical CPUs.
    """
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _cpuinfo_field(name: str) -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text().splitlines():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else the platform's word)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is none."""
    flags = _cpuinfo_field("flags")
    return None if flags is None else frozenset(flags.split())


def notable_cpu_flags() -> list[str]:
    """The flags of :data:`NOTABLE_CPU_FLAGS` this CPU has, for labelling figures."""
    flags = cpu_flags() or frozenset()
    return [flag for flag in NOTABLE_CPU_FLAGS if flag in flags]


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the kernel's ``MemAvailable``, or
    less where a control group (a container's limit) leaves less; None where neither is
    readable (not Linux)."""
    limits = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes",  # cgroup v1
                                    "memory/memory.usage_in_bytes")):
        try:
            limit = (Path("/sys/fs/cgroup") / limit_file).read_text().strip()
            usage = int((Path("/sys/fs/cgroup") / usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(max(0, int(limit) - usage))
    return min(limits) if limits else None


def format_gib(count: float) -> str:
    """Bytes as GiB (MiB below one GiB), for messages about memory."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


def check_memory(need: float, what: str, advice: str, available: int | None = None) -> None:
    """Refuse work that needs ``need`` bytes when less memory is available (now, unless
    ``available`` is given): left to run, it would grow until the kernel kills the process
    or a library fails deep inside. ``what`` says what needs it, ``advice`` what to do."""
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise GpmaskError(f"{what} needs about {format_gib(need)} of memory, and "
                          f"{format_gib(available)} is available; {advice}")


@dataclass(frozen=True)
class Gpu:
    """An NVIDIA GPU as TensorRT engines are specific to it."""

    index: int
    name: str
    compute_capability: str


def _cuda_driver() -> ctypes.CDLL:
    """The CUDA driver library, or a :class:`GpmaskError` saying it cannot be loaded."""
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise GpmaskError(f"no NVIDIA GPU visible: the CUDA driver ({name}) cannot be loaded "
                          f"({exc})") from exc


def gpu(device: int = 0) -> Gpu:
    """GPU ``device`` through the CUDA driver API, or a :class:`GpmaskError` saying why not.

    The driver library (``libcuda``) is on every machine that can run TensorRT, Jetson
    included (where ``nvidia-smi`` is not), and needs no CUDA toolkit or runtime.
    """
    cuda = _cuda_driver()
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or not count.value:
        raise GpmaskError("no NVIDIA GPU visible (the CUDA driver reports no device)")
    if not 0 <= device < count.value:
        raise GpmaskError(f"no GPU {device}: the CUDA driver reports {count.value} "
                          f"device{'s' if count.value != 1 else ''}")
    handle = ctypes.c_int(0)
    cuda.cuDeviceGet(ctypes.byref(handle), device)
    raw_name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(raw_name, 256, handle)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, handle)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, handle)
    return Gpu(device, raw_name.value.decode(errors="replace"), f"{major.value}.{minor.value}")


def gpu_problem(device: int = 0) -> str | None:
    """Why GPU ``device`` cannot be used here, or None when the driver reports it."""
    try:
        gpu(device)
    except GpmaskError as exc:
        return str(exc)
    return None


#: The Python packages that give TensorRT's runtime, preferred first: NVIDIA's full library
#: (builder and runtime: ``pip install tensorrt-cu12``/``-cu13``, or JetPack's), then the
#: lean runtime (``pip install tensorrt-lean-cu13``), which deserializes and runs
#: version-compatible engines only and cannot build any.
TENSORRT_PACKAGES = ("tensorrt", "tensorrt_lean")


@functools.cache
def _tensorrt_package(name: str) -> tuple[ModuleType | None, str | None]:
    """``import name`` as NVIDIA's TensorRT, or None and why not.

    ``importlib.util.find_spec`` is not enough: a folder named ``tensorrt`` left by a stubs
    package, or NVIDIA's placeholder wheel, is found but has no runtime; so the module is
    imported and must have a version string and a ``Runtime`` class.
    """
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or OSError for a missing libnvinfer
        return None, f"the {name} package cannot be imported ({type(exc).__name__}: {exc})"
    if not isinstance(getattr(module, "__version__", None), str) \
            or not hasattr(module, "Runtime"):
        where = getattr(module, "__file__", None) or list(getattr(module, "__path__", []))
        return None, (f"the {name} package found at {where} is not NVIDIA's TensorRT (it has "
                      f"no __version__ or Runtime)")
    return module, None


def tensorrt_module(builder: bool = False) -> ModuleType:
    """TensorRT's Python module: the full library where it imports, else the lean runtime
    (``builder``: the full library only, the one that builds engines). Raises
    :class:`GpmaskError` saying why neither is usable."""
    problems = []
    for name in TENSORRT_PACKAGES[:1] if builder else TENSORRT_PACKAGES:
        module, problem = _tensorrt_package(name)
        if module is not None:
            return module
        problems.append(problem)
    raise GpmaskError("; ".join(problems))


def tensorrt_problem(builder: bool = False) -> str | None:
    """Why no usable TensorRT imports here (``builder``: no full library that can build
    engines), or None when one does."""
    try:
        tensorrt_module(builder)
    except GpmaskError as exc:
        return str(exc)
    return None


def is_lean_runtime(module: ModuleType) -> bool:
    """Whether ``module`` is TensorRT's lean runtime (version-compatible engines only)."""
    return module.__name__ == TENSORRT_PACKAGES[1]


def tensorrt_target(device: int = 0, builder: bool = False) -> EngineTarget:
    """The running TensorRT version and GPU ``device``: what an engine built here is
    specific to. Raises :class:`GpmaskError` where TensorRT (``builder``: the full
    library) or the GPU is missing."""
    try:
        module = tensorrt_module(builder)
    except GpmaskError as exc:
        raise GpmaskError(f"TensorRT is not usable here: {exc}") from exc
    found = gpu(device)
    return EngineTarget(module.__version__, found.name, found.compute_capability,
                        is_lean_runtime(module))


def cuda_driver_version() -> str | None:
    """The CUDA version the NVIDIA driver supports (``12.6``), or None without a driver."""
    try:
        cuda = _cuda_driver()
    except GpmaskError:
        return None
    version = ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or not version.value:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def onnxruntime_problem() -> str | None:
    """Why ONNX Runtime cannot be imported here, or None when it can.

    gpmask does not install it by itself: ``onnxruntime`` (CPU) and ``onnxruntime-gpu``
    are one package under two names that overwrite each other, so the user picks one
    (``pip install gpmask[cpu]`` or ``gpmask[gpu]``; on a Jetson, NVIDIA's wheel).
    """
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return (f"ONNX Runtime is not installed ({exc}); install one build: pip install "
                f"'gpmask[cpu]' (onnxruntime) or 'gpmask[gpu]' (onnxruntime-gpu), or on a "
                f"Jetson the onnxruntime-gpu wheel for its JetPack (docs/jetson.md)")
    return None
