"""Resident memory of this process, with a peak that can be restarted per measurement.

Linux keeps a process's peak resident set (``VmHWM``) and lets the process reset it to
the current resident set by writing ``5`` to ``/proc/self/clear_refs``. Resetting it
before each backend loads makes each target's peak its own rather than the largest of
everything measured before it in the same process. Device memory is read from the
CUDA runtime (``cudaMemGetInfo``, through the library Polygraphy loads), so it counts
what ONNX Runtime and TensorRT allocate as well as torch.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Restart the peak resident set at the current one; False where the OS refuses."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def rss_mib() -> dict[str, float]:
    """Current (``rss_mib``) and peak (``peak_rss_mib``) resident memory of this process."""
    fields = {}
    for line in _STATUS.read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}


def device_memory_used_mib(device: int) -> float:
    """Memory in use on CUDA ``device`` (all allocations on it), in MiB."""
    from polygraphy import cuda

    cudart = cuda.wrapper()
    cudart.check(cudart.handle.cudaSetDevice(device))
    free, total = ctypes.c_size_t(), ctypes.c_size_t()
    cudart.check(cudart.handle.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)))
    return (total.value - free.value) / 2**20
