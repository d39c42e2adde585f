"""TensorRT backend: one engine and context per weather, one scratch buffer for all.

Only one weather runs at a time, so the per-weather execution contexts need not each
own their activation memory: they are created without it
(``ExecutionContextAllocationStrategy.USER_MANAGED``) and all pointed at one device
scratch buffer sized to the largest engine's need. They are also bound to the same
input and output device buffers, copied to and from pinned host buffers on one CUDA
stream. Switching weather is therefore choosing another context: nothing is allocated,
copied or rebound (buffers are rebound only when the frame size changes).

The TensorRT module is NVIDIA's full library where it imports, else TensorRT's lean
runtime (``tensorrt_lean``, :func:`gpmask.host.tensorrt_module`): the smaller library a
device needs to run engines, which runs version-compatible engines only (``gpmask build
--version-compatible``). Both have the same runtime API; the lean runtime has no plugin
library, so plugins are registered with the full one only. A version-compatible plan
carries TensorRT code of its own, which TensorRT runs only when told to trust the plan
(``engine_host_code_allowed``): gpmask does so for engines whose bytes match the sha256
the manifest recorded when ``gpmask build`` wrote them. ``tests/test_tensorrt_api.py``
checks every TensorRT call made here against the real lean runtime's bindings.

Written against the documented Python API of TensorRT 10.x and 11.x:
``ICudaEngine.device_memory_size_v2`` and ``IExecutionContext.set_device_memory(ptr,
size)`` (10.1 and later; 11.x removed ``device_memory_size``, and the older
``device_memory`` attribute is not used), ``create_execution_context(strategy)`` (10.0 and
later; replaces ``create_execution_context_without_device_memory``), named I/O tensors
with ``set_input_shape``/``set_tensor_address`` and ``execute_async_v3``. CUDA comes
from Polygraphy's CUDA wrapper (device arrays, streams, and the CUDA runtime library it
loads for pinned memory and device queries), never from torch.

Engines are specific to the TensorRT version and the GPU they were built on. Before
loading, each engine's manifest record is compared with the running TensorRT and GPU
(:meth:`gpmask.bundle.EngineRecord.mismatch`) and a mismatch is refused with the command
that rebuilds the engines.

Failures are reported the project's way, as one :class:`GpmaskError` line: Polygraphy
signals them with ``PolygraphyException`` (a failed build, a CUDA error) and TensorRT's
bindings with ``RuntimeError``; :func:`gpmask.errors.tensorrt_errors` converts both where
gpmask calls them. TensorRT's own "failed" return values (``None`` from
``create_execution_context``, ``False`` from ``set_tensor_address``) are checked.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError, tensorrt_error_types, tensorrt_errors
from gpmask.host import (
    gpu_problem,
    is_lean_runtime,
    tensorrt_module,
    tensorrt_problem,
    tensorrt_target,
)
from gpmask.precision import TENSORRT_PRECISIONS
from gpmask.runtime.backends.base import (
    Backend,
    BackendSpec,
    missing_reason,
    prepared_weathers,
    verify_files,
)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def _cudart() -> Any:
    """The CUDA runtime library Polygraphy loaded (ctypes handle) and its error check."""
    from polygraphy import cuda

    return cuda.wrapper()


class PinnedBuffer:
    """Page-locked host memory, so host-device copies run asynchronously at full speed.

    Grows when a larger view is asked for; otherwise every view reuses the same memory.
    """

    def __init__(self) -> None:
        self.ptr = 0
        self.nbytes = 0

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A numpy array of ``shape`` and ``dtype`` over this buffer."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > self.nbytes:
            self.free()
            cudart, pointer = _cudart(), ctypes.c_void_p()
            cudart.check(cudart.handle.cudaMallocHost(ctypes.byref(pointer),
                                                      ctypes.c_size_t(nbytes)))
            self.ptr, self.nbytes = pointer.value, nbytes
        raw = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            cudart = _cudart()
            cudart.check(cudart.handle.cudaFreeHost(ctypes.c_void_p(self.ptr)))
            self.ptr, self.nbytes = 0, 0


class TensorRTBackend(Backend):
    """Every weather of a bundle as a deserialized TensorRT engine with its context.

    Args:
        bundle: the bundle; its manifest must have engines at ``precision``
            (``gpmask build BUNDLE --precision P`` builds them on this machine).
        precision: which engines.
        device: the CUDA device index.
    """

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp16", device: int = 0) -> None:
        from polygraphy import cuda

        trt = tensorrt_module()
        if _version_tuple(trt.__version__) < (10, 1):
            raise GpmaskError(f"TensorRT {trt.__version__} is too old; gpmask needs 10.1 or later")
        self.error_types = tensorrt_error_types()
        self.weathers = prepared_weathers(bundle, "engines", precision)
        records = bundle.engines(precision)
        self._shape_ranges = {w: r.shapes for w, r in records.items()}
        self._root, self._precision = bundle.root, precision
        problem = _engine_problem(bundle, precision, device)
        if problem:
            raise GpmaskError(f"backend tensorrt: {problem}")
        verify_files(bundle, [bundle.root / r.path for r in records.values()])
        self.contexts: dict[str, Any] = {}
        with tensorrt_errors(f"backend tensorrt: cannot load the {precision} engines of "
                             f"{bundle.root}"):
            self._load(trt, cuda, bundle, records, precision, device)

    def _load(self, trt: Any, cuda: Any, bundle: Bundle, records: dict[str, Any],
              precision: str, device: int) -> None:
        cudart = _cudart()
        cudart.check(cudart.handle.cudaSetDevice(device))
        logger = trt.Logger(trt.Logger.WARNING)
        if not is_lean_runtime(trt):
            # The ONNX parser may have mapped an op to one of TensorRT's plugins at build
            # time; the engine only deserializes once the plugin library is registered.
            trt.init_libnvinfer_plugins(logger, "")
        self._runtime = trt.Runtime(logger)
        # A version-compatible plan runs TensorRT code it carries; its bytes were checked
        # against the manifest's sha256 (verify_files above), so the plan is the one built.
        self._runtime.engine_host_code_allowed = any(r.version_compatible
                                                     for r in records.values())
        self.engines = {}
        for weather, record in records.items():
            plan = (bundle.root / record.path).read_bytes()
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise GpmaskError(f"TensorRT could not load engine {record.path}; rebuild it "
                                  f"with `gpmask build {bundle.root} --precision {precision}`")
            self.engines[weather] = engine
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        for weather, engine in self.engines.items():
            context = engine.create_execution_context(strategy)
            if context is None:  # TensorRT reports failure (e.g. out of memory) this way
                raise GpmaskError(f"TensorRT could not create an execution context for the "
                                  f"{weather} engine (out of GPU memory?)")
            self.contexts[weather] = context
        scratch_bytes = max(engine.device_memory_size_v2 for engine in self.engines.values())
        self.scratch = cuda.DeviceArray.raw((max(scratch_bytes, 1),))
        for context in self.contexts.values():
            context.set_device_memory(self.scratch.ptr, self.scratch.allocated_nbytes)

        first_engine = self.engines[self.weathers[0]]
        names = [first_engine.get_tensor_name(i) for i in range(first_engine.num_io_tensors)]
        modes = {name: first_engine.get_tensor_mode(name) for name in names}
        self._input = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self._output = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self._input_dtype = np.dtype(trt.nptype(first_engine.get_tensor_dtype(self._input)))
        self._output_dtype = np.dtype(trt.nptype(first_engine.get_tensor_dtype(self._output)))
        self.stream = cuda.Stream()
        self._device_in = cuda.DeviceArray(dtype=self._input_dtype)
        self._device_out = cuda.DeviceArray(dtype=self._output_dtype)
        self._host_in, self._host_out = PinnedBuffer(), PinnedBuffer()
        self._shape: tuple[int, ...] | None = None
        self._output_shape: tuple[int, ...] = ()

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Set ``shape`` on every context and bind them all to the same I/O buffers."""
        self._shape = None  # until every context accepts it: a refusal forces a full rebind
        for weather, context in self.contexts.items():
            if not context.set_input_shape(self._input, shape):
                raise GpmaskError(input_shape_refusal(weather, shape, self._shape_ranges[weather],
                                                      self._root, self._precision))
        self._output_shape = tuple(self.contexts[self.weathers[0]].get_tensor_shape(self._output))
        self._device_in.resize(shape)
        self._device_out.resize(self._output_shape)
        for weather, context in self.contexts.items():
            for name, buffer in ((self._input, self._device_in), (self._output, self._device_out)):
                if not context.set_tensor_address(name, buffer.ptr):
                    raise GpmaskError(f"TensorRT refused the {name!r} buffer of the {weather} "
                                      f"engine for input shape {shape}")
        self._shape = shape

    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        with tensorrt_errors(f"TensorRT failed to run the {weather} engine"):
            if batch.shape != self._shape:
                self._bind(batch.shape)
            host_in = self._host_in.view(batch.shape, self._input_dtype)
            np.copyto(host_in, batch, casting="same_kind")
            host_out = self._host_out.view(self._output_shape, self._output_dtype)
            self._device_in.copy_from(host_in, self.stream)
            if not self.contexts[weather].execute_async_v3(self.stream.ptr):
                raise GpmaskError(f"TensorRT failed to run the {weather} engine")
            self._device_out.copy_to(host_out, self.stream)
            self.stream.synchronize()
        return host_out.astype(np.float32, copy=False)

    def close(self) -> None:
        # Contexts before engines before the memory they point at; a second call is a no-op.
        if not self.contexts:
            return
        self.contexts.clear()
        self.engines.clear()
        for buffer in (self._device_in, self._device_out, self.scratch):
            buffer.free()
        self._host_in.free()
        self._host_out.free()
        self.stream.free()


def input_shape_refusal(weather: str, shape: tuple[int, ...], recorded: dict[str, Any] | None,
                        bundle_root: str | os.PathLike, precision: str) -> str:
    """Why the ``weather`` engine refused the NCHW input ``shape``, and the ``gpmask build``
    command whose profile (``recorded``, the manifest's ``shapes``) takes it."""
    from gpmask.build.tensorrt import ShapeRange

    if not recorded:
        return (f"the {weather} engine does not accept input shape {shape} (its profile is "
                f"unrecorded); rebuild the engines with `gpmask build --min-size ... "
                f"--max-size ... --max-batch ... {bundle_root} --precision {precision}` "
                f"covering this batch and frame size")
    profile = ShapeRange.of(recorded)
    outside = profile.outside(shape) or "TensorRT refused it within the recorded profile"
    return (f"the {weather} engine does not accept input shape {shape} ({outside}); rebuild "
            f"the engines with `gpmask build {profile.covering(shape).options()} "
            f"{bundle_root} --precision {precision}`")


def _engine_problem(bundle: Bundle, precision: str, device: int) -> str | None:
    """Why the bundle's ``precision`` engines cannot run here: any network without one
    (a build interrupted half way), or one built for another TensorRT or GPU."""
    if precision not in TENSORRT_PRECISIONS:
        return (f"TensorRT runs engines built from {', '.join(TENSORRT_PRECISIONS)} graphs, "
                f"not {precision}")
    engines = bundle.engines(precision)
    missing = [w for w in bundle.networks if w not in engines]
    if missing:
        return missing_reason(bundle, "engines", precision, missing)
    try:
        running = tensorrt_target(device)
    except GpmaskError as exc:
        return str(exc)
    return next(filter(None, (record.mismatch(running, bundle.root, precision)
                              for record in engines.values())), None)


SPEC = BackendSpec(
    name="tensorrt",
    device="gpu",
    precisions=("int8", "fp16", "fp32"),
    unavailable=lambda device: tensorrt_problem() or gpu_problem(device),
    refusal=_engine_problem,
    load=lambda bundle, precision, device: TensorRTBackend(bundle, precision, device),
)
