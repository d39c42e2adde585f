"""ONNX Runtime backend: one session per weather, sharing weights, arena and I/O buffers.

A bundle's per-weather graphs are the same network with mostly the same tensors, and
they point into one external-data weight file where a tensor common to several
weathers is stored once, at one ``(location, offset, length)``. Loading them as
independent sessions would hold every weight once per weather and give each session
an arena of its own. Here instead:

- every distinct external tensor is read once into an ``OrtValue`` on the device the
  sessions compute on (host memory for the CPU provider, the GPU for the CUDA one) and
  handed to each session that uses it (``SessionOptions.add_initializer``); the
  OrtValues are kept by the backend, since ONNX Runtime requires them to outlive the
  sessions. ONNX Runtime uses a shared initializer only where it is on the device it
  planned for that weight, and otherwise makes a copy of its own, so a host copy handed
  to a CUDA session would be one more copy, not a shared one. TensorRT's provider
  compiles the weights into each weather's engine, so nothing is shared there: each
  session reads the memory-mapped weight file itself. A compact graph's rebuild inputs
  (named ``compact/...``, :data:`gpmask.bundle.COMPACT_PREFIX`) are the other exception:
  ONNX Runtime folds the rebuild into the session's own weights when it creates the
  session and drops its inputs, so each session reads those itself; holding them here
  would keep bytes no session uses;
- one environment allocator (``create_and_register_allocator``) serves every session
  (``session.use_env_allocators = 1``): only one weather runs at a time, so one arena
  sized for one run is enough;
- every session has an IOBinding bound to the same preallocated input and output
  OrtValues, rebound only when the frame size changes; switching weather is picking
  another session and binding.

A provider is used only once it has shown it works: ONNX Runtime lists its CUDA and
TensorRT providers whenever the GPU build is installed, and falls back to the CPU
without a word when one cannot start (no GPU, a missing cuDNN or TensorRT library).
:func:`provider_problem` therefore starts a session of a tiny convolution on the
provider, checks ``get_providers()`` and the output, and ``auto``, ``gpmask check``
and loading all read that answer; a session that still falls back is refused.

TensorRT's provider builds an engine per weather when a session starts, for the input
shapes it sees. :func:`tensorrt_provider_options` gives it the bundle's optimization
profile (the one ``gpmask build`` uses, :func:`gpmask.build.tensorrt.profile_shapes`),
so one engine serves every frame size and batch in it, and an engine cache and a timing
cache in the bundle's ``engines/onnxruntime-tensorrt/`` folder, so a restart loads the
engines instead of building them again. The cache is keyed by each graph's content
(:meth:`gpmask.bundle.Bundle.graph_digest`): ONNX Runtime keys its cache on the model's
structure, and the weathers' graphs share one structure.

The session options tuned for speed live in :class:`SessionSettings`, the one place
the benchmarks read them from.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bundle import COMPACT_PREFIX, Bundle
from gpmask.errors import GpmaskError
from gpmask.host import gpu_problem, onnxruntime_problem, physical_cores
from gpmask.precision import GRAPH_PRECISIONS
from gpmask.runtime.backends.base import (
    Backend,
    BackendSpec,
    external_data_files,
    missing_reason,
    prepared_weathers,
    verify_files,
)

#: Execution-provider kinds this backend runs on, best first, and ONNX Runtime's names.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

#: Where each provider's sessions read a shared weight from: ONNX Runtime's device name,
#: or None where sharing saves nothing (TensorRT's engines hold their own weights).
WEIGHT_DEVICES = {"tensorrt": None, "cuda": "cuda", "cpu": "cpu"}
#: The bundle folder holding TensorRT's provider caches (engines and timing).
TENSORRT_CACHE_FOLDER = "engines/onnxruntime-tensorrt"

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_env_allocator_registered = False
log = logging.getLogger("gpmask.runtime")


@dataclass(frozen=True)
class SessionSettings:
    """The session options the runtime uses, in one place (benchmarks report them).

    Attributes:
        graph_optimization: ONNX Runtime's optimization level name (``all``: every
            fusion and layout transformation, including NCHWc convolutions on x86).
        intra_op_threads: threads inside one operator; physical cores by default.
        execution_mode: ``sequential`` — these networks are a chain of convolutions, so
            running independent branches in parallel has nothing to gain.
        use_env_allocators: serve every session from the one environment allocator.
        allow_spinning: let intra-op threads busy-wait for work after an operator. Off:
            each weather's session has its own thread pool, and threads spinning after
            one weather's run compete for the cores with the next weather's run, the
            video loop's decode/encode threads, and everything else on a small device
            (measured by ``gpmask bench`` / ``benchmarks/bench_latency.py``).
    """

    graph_optimization: str = "all"
    intra_op_threads: int = field(default_factory=physical_cores)
    execution_mode: str = "sequential"
    use_env_allocators: bool = True
    allow_spinning: bool = False

    def session_options(self) -> Any:
        """A fresh ``onnxruntime.SessionOptions`` with these settings."""
        import onnxruntime as ort

        levels = {
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        modes = {
            "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
            "parallel": ort.ExecutionMode.ORT_PARALLEL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.graph_optimization]
        options.intra_op_num_threads = self.intra_op_threads
        options.execution_mode = modes[self.execution_mode]
        if self.use_env_allocators:
            options.add_session_config_entry("session.use_env_allocators", "1")
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if self.allow_spinning else "0")
        return options

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for benchmark reports."""
        return asdict(self)


def register_env_allocator() -> None:
    """Register the process-wide CPU arena allocator once (ONNX Runtime refuses twice)."""
    global _env_allocator_registered
    if _env_allocator_registered:
        return
    import onnxruntime as ort

    memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                               ort.OrtMemType.DEFAULT)
    # 0 / -1: ONNX Runtime's defaults for max memory, extend strategy, chunk sizes.
    ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, -1, -1, -1))
    _env_allocator_registered = True


def available_providers() -> list[str]:
    """Provider kinds (keys of :data:`PROVIDERS`) this ONNX Runtime build lists; none
    where ONNX Runtime is not installed."""
    if onnxruntime_problem():
        return []
    import onnxruntime as ort

    offered = set(ort.get_available_providers())
    return [kind for kind, name in PROVIDERS.items() if name in offered]


def provider_problem(kind: str, device: int) -> str | None:
    """Why ONNX Runtime cannot run on ``kind`` here, or None when it can: ONNX Runtime not
    installed, the provider missing from this build, (GPU providers) no GPU the CUDA
    driver reports, or the provider failing to start a session (:func:`provider_start`)."""
    problem = onnxruntime_problem()
    if problem:
        return problem
    if kind not in available_providers():
        hint = "" if kind == "cpu" else " (install onnxruntime-gpu)"
        return f"this ONNX Runtime has no {PROVIDERS[kind]}{hint}"
    return (None if kind == "cpu" else gpu_problem(device)) or provider_start(kind, device)


@functools.cache
def provider_start(kind: str, device: int) -> str | None:
    """Why ONNX Runtime's ``kind`` provider does not work here, or None once a session of
    a 1x1 convolution started on it and gave the right output (once per process)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = np.arange(9, dtype=np.float32).reshape(3, 3, 1, 1) / 9
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failing provider's log lines are the answer here
    name = PROVIDERS[kind]
    try:
        with warnings.catch_warnings():  # ONNX Runtime warns of the fallback this checks
            warnings.simplefilter("ignore")
            session = ort.InferenceSession(model.SerializeToString(), options,
                                           providers=_provider_chain(kind, device))
        used = session.get_providers()[0]
        if used != name:
            return f"ONNX Runtime could not start its {name} (a session runs on {used})"
        sample = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
        output = session.run(None, {"x": sample})[0]
    except Exception as exc:  # a provider failing to load raises what its library raised
        return f"ONNX Runtime could not start its {name} ({' '.join(str(exc).split())})"
    expected = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0], sample)
    if not np.allclose(output, expected, atol=1e-2):  # TensorRT may use TF32 or fp16
        return f"ONNX Runtime's {name} computed a wrong convolution"
    return None


def _provider_chain(kind: str, device: int,
                    tensorrt_options: dict[str, Any] | None = None
                    ) -> list[tuple[str, dict[str, Any]]]:
    """Providers for ``kind``, with the ones it falls back to for unsupported nodes."""
    chain = {"tensorrt": ["tensorrt", "cuda", "cpu"], "cuda": ["cuda", "cpu"], "cpu": ["cpu"]}
    options = {"tensorrt": {"device_id": device, **(tensorrt_options or {})},
               "cuda": {"device_id": device}, "cpu": {}}
    return [(PROVIDERS[k], options[k]) for k in chain[kind]]


def tensorrt_provider_options(bundle: Bundle, weather: str, precision: str
                              ) -> dict[str, Any]:
    """TensorRT provider options for ``weather``'s graph at ``precision``: the bundle's
    optimization profile, and engine and timing caches in the bundle (module docstring).

    Where the bundle folder cannot be written, the caches are left out (with a warning):
    the provider then builds its engines at every start, which is slow, not wrong.
    """
    from gpmask.build.tensorrt import profile_shapes

    profile = profile_shapes(bundle.input_spec, None).nchw()
    name = bundle.input_spec.name
    options: dict[str, Any] = {
        f"trt_profile_{which}_shapes": f"{name}:{'x'.join(map(str, shape))}"
        for which, shape in profile.items()}
    cache = bundle.root / TENSORRT_CACHE_FOLDER
    try:
        cache.mkdir(parents=True, exist_ok=True)
        writable = os.access(cache, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        log.warning("cannot write %s: ONNX Runtime's TensorRT provider will build its engines "
                    "at every start", cache)
        return options
    digest = bundle.graph_digest(weather, precision)[:16]
    return {**options,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_engine_cache_prefix": f"{weather}.{precision}.{digest}",
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache)}


class SharedInitializers:
    """One OrtValue per distinct external tensor of a set of graphs.

    Two graphs' initializers are the same tensor when they point at the same
    ``(location, offset, length)`` in the same external-data file and read it as the
    same element type and shape; that is how a bundle stores a tensor shared by
    several weathers once. The type and shape belong in the key because the weight
    store shares *bytes*: an int32 zero point of 12 elements and an int8 one of 48 are
    the same 48 zero bytes, but not the same tensor.

    On the CPU an OrtValue is the numpy array read from the file; on a GPU, a copy of it
    in device memory, and the host array is dropped once copied.

    Attributes:
        values: ``(file, offset, length, type, dims)`` -> the OrtValue holding that tensor.
    """

    def __init__(self, device: tuple[str, int] = ("cpu", 0)) -> None:
        #: ONNX Runtime's device name and index the values are placed on: where the
        #: sessions planned the weights, or ONNX Runtime copies them (module docstring).
        self.device = device
        self.values: dict[tuple[Path, int, int, int, tuple[int, ...]], Any] = {}

    def add_graph(self, graph: Any, folder: Path, options: Any) -> None:
        """Hand ``graph``'s external initializers to ``options``, reading new ones once.

        ``graph`` is an ``onnx.ModelProto`` loaded without its external data.
        """
        import onnx
        import onnxruntime as ort
        from onnx.helper import tensor_dtype_to_np_dtype

        for tensor in graph.graph.initializer:
            if (tensor.data_location != onnx.TensorProto.EXTERNAL
                    or tensor.name.startswith(COMPACT_PREFIX)):
                continue
            info = {entry.key: entry.value for entry in tensor.external_data}
            location = (folder / info["location"], int(info.get("offset", 0)),
                        int(info.get("length", -1)))
            key = (*location, tensor.data_type, tuple(tensor.dims))
            if key not in self.values:
                array = _read_tensor(location, tensor_dtype_to_np_dtype(tensor.data_type),
                                     tuple(tensor.dims))
                self.values[key] = ort.OrtValue.ortvalue_from_numpy(array, *self.device)
            options.add_initializer(tensor.name, self.values[key])


def _read_tensor(key: tuple[Path, int, int], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    path, offset, length = key
    count = int(np.prod(shape, dtype=np.int64))
    if length >= 0 and length != count * np.dtype(dtype).itemsize:
        raise GpmaskError(f"{path.name}: a tensor at offset {offset} has {length} bytes, "
                          f"expected {count * np.dtype(dtype).itemsize} for {shape} {dtype}")
    array = np.fromfile(path, dtype=dtype, count=count, offset=offset)
    if array.size != count:
        raise GpmaskError(f"{path.name} is shorter than its graphs expect")
    return array.reshape(shape)


class OnnxRuntimeBackend(Backend):
    """Every weather of a bundle as a prepared ONNX Runtime session.

    Args:
        bundle: the bundle to load.
        precision: which graphs (``fp32``, ``fp16``, ``int8``, ...).
        provider: a key of :data:`PROVIDERS`; must be in :func:`available_providers`.
        device: the GPU for the CUDA and TensorRT providers.
        settings: session options (defaults tuned for speed).
        weathers: load only these (default: every weather with a graph at ``precision``).
    """

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        provider: str = "cpu",
        device: int = 0,
        settings: SessionSettings | None = None,
        weathers: Sequence[str] | None = None,
    ) -> None:
        import onnx
        import onnxruntime as ort

        problem = provider_problem(provider, device)
        if problem:
            raise GpmaskError(f"backend onnxruntime-{provider}: {problem}")
        self.name = f"onnxruntime-{provider}"
        self.error_types = (RuntimeError,)  # what ONNX Runtime's bindings raise at run time
        self.settings = settings or SessionSettings()
        self.weathers = prepared_weathers(bundle, "graphs", precision, weathers)
        self.device = ("cpu", 0) if provider == "cpu" else ("cuda", device)
        paths = {w: bundle.graph_path(w, precision) for w in self.weathers}
        verify_files(bundle, paths.values())
        graphs = {w: onnx.load(str(p), load_external_data=False) for w, p in paths.items()}
        verify_files(bundle, external_data_files(graphs, paths))
        if self.settings.use_env_allocators:
            register_env_allocator()
        weight_device = WEIGHT_DEVICES[provider]
        self.initializers = SharedInitializers((weight_device, device) if weight_device
                                               else ("cpu", 0))
        self.sessions: dict[str, Any] = {}
        for weather, graph in graphs.items():
            options = self.settings.session_options()
            if weight_device:
                self.initializers.add_graph(graph, paths[weather].parent, options)
            engine_options = tensorrt_provider_options(bundle, weather, precision) \
                if provider == "tensorrt" else None
            self.sessions[weather] = ort.InferenceSession(
                str(paths[weather]), options,
                providers=_provider_chain(provider, device, engine_options))
            used = self.sessions[weather].get_providers()
            if used[0] != PROVIDERS[provider]:  # ONNX Runtime falls back without a word
                raise GpmaskError(f"backend {self.name}: ONNX Runtime could not start its "
                                  f"{PROVIDERS[provider]} (the session runs on {used[0]})")
        first = self.sessions[self.weathers[0]]
        self._input = first.get_inputs()[0]
        self._output = first.get_outputs()[0]
        self._bindings = {w: s.io_binding() for w, s in self.sessions.items()}
        self._bound_shape: tuple[int, ...] | None = None
        self._input_value: Any = None
        self._output_value: Any = None

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Allocate input and output OrtValues for ``shape`` and bind every session to them."""
        import onnxruntime as ort

        kind, device = self.device
        self._input_value = ort.OrtValue.ortvalue_from_shape_and_type(
            shape, _NUMPY_TYPES[self._input.type], kind, device)
        self._output_value = ort.OrtValue.ortvalue_from_shape_and_type(
            shape, _NUMPY_TYPES[self._output.type], kind, device)
        for binding in self._bindings.values():
            binding.bind_ortvalue_input(self._input.name, self._input_value)
            binding.bind_ortvalue_output(self._output.name, self._output_value)
        self._bound_shape = shape

    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        if batch.shape != self._bound_shape:
            self._bind(batch.shape)
        self._input_value.update_inplace(
            np.ascontiguousarray(batch, dtype=_NUMPY_TYPES[self._input.type]))
        self.sessions[weather].run_with_iobinding(self._bindings[weather])
        return self._output_value.numpy().astype(np.float32, copy=False)

    def close(self) -> None:
        # Sessions first: the shared OrtValues must outlive them.
        self._bindings.clear()
        self.sessions.clear()
        self._input_value = self._output_value = self._bound_shape = None
        self.initializers.values.clear()



def refusal(bundle: Bundle, precision: str, device: int = 0) -> str | None:
    """Why ONNX Runtime cannot run ``bundle`` at ``precision``, or None."""
    if precision not in GRAPH_PRECISIONS:
        return f"{precision} has no graphs of its own; only OpenVINO computes it"
    missing = bundle.missing_graphs(precision)
    return missing_reason(bundle, "graphs", precision, missing) if missing else None


def _spec(kind: str, precisions: tuple[str, ...]) -> BackendSpec:
    return BackendSpec(
        name=f"onnxruntime-{kind}",
        device="cpu" if kind == "cpu" else "gpu",
        precisions=precisions,
        unavailable=lambda device: provider_problem(kind, device),
        refusal=refusal,
        load=lambda bundle, precision, device: OnnxRuntimeBackend(bundle, precision, kind,
                                                                  device),
    )


#: One spec per execution provider; on x86 CPUs only the uint8-activation int8 graph
#: is faster than fp32 on ONNX Runtime's kernels (see :mod:`gpmask.calibration.int8`).
CUDA_SPEC = _spec("cuda", ("fp16", "fp32", "int8", "int8-cpu", "int8-openvino"))
TENSORRT_SPEC = _spec("tensorrt", ("int8", "fp16", "fp32", "int8-cpu", "int8-openvino"))
CPU_SPEC = _spec("cpu", ("int8-cpu", "fp32", "int8-openvino", "int8", "fp16"))
