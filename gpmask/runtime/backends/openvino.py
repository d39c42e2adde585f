"""OpenVINO backend: every weather compiled once for the CPU, one infer request each.

OpenVINO's CPU plugin compiles an ONNX graph into oneDNN primitives with the layouts,
fusions and (for Q/DQ graphs) integer kernels of the CPU it runs on; on an x86 CPU it
is the fastest engine gpmask has measured for these networks (``benchmarks/bench_cpu.py``).
Loading a bundle here:

- one ``ov.Core`` per process serves every bundle (it holds the plugin and its
  thread pool);
- each weather's graph is read and compiled once, with the weights read through
  OpenVINO's memory-mapped external data (the bundle's shared ``weights.bin`` pages
  are mapped once by the OS, whatever the number of graphs reading them);
- each compiled model gets one infer request, and every request is bound to the same
  output buffer; a frame's array is handed to the request without a copy
  (``ov.Tensor(..., shared_memory=True)``). Switching weather is picking another
  request; nothing is compiled or allocated per frame.

What OpenVINO does not let a caller share: a compiled model keeps its own copy of the
weights in the layout its kernels read, and its own activation memory (about 280 MiB
for the demo network at 720p). Since only one weather runs at a time, the backend
hands the previous weather's activation memory back (``CompiledModel.release_memory``)
when the weather changes: measured on the demo network at 720p, every weather loaded
then holds 695 MiB instead of 1,328 MiB (one weather alone: 487 MiB), and the CPU time
of a frame after a switch did not change measurably
(``benchmarks/bench_runtime_memory.py --backend openvino``, ``bench_switching.py``).

Precisions: the bundle's graphs (``fp32``, ``fp16``, ``int8``, ``int8-cpu`` and
``int8-openvino``, the int8 graph made for OpenVINO) run with
float parts in float32 (``INFERENCE_PRECISION_HINT f32``: OpenVINO's default on a CPU
with bfloat16 would otherwise run an fp32 graph in bf16). ``bf16`` needs no graph of
its own: it is the fp32 graph compiled with ``INFERENCE_PRECISION_HINT bf16``, refused
on a CPU without bfloat16 arithmetic (AVX-512 BF16 or AMX), where OpenVINO would
silently run float32 instead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gpmask.bundle import HINTED_PRECISIONS, Bundle
from gpmask.errors import GpmaskError
from gpmask.runtime.backends.base import (
    Backend,
    external_data_files,
    prepared_weathers,
    verify_files,
)
from gpmask.runtime.backends.onnxruntime import physical_cores

#: OpenVINO's inference-precision hint per precision (graphs not listed run with f32).
INFERENCE_PRECISION = {"bf16": "bf16"}


@functools.cache
def core() -> Any:
    """The process's one ``ov.Core`` (created on first use)."""
    import openvino as ov

    return ov.Core()


def openvino_available() -> bool:
    """True when the ``openvino`` Python package can be imported here."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def cpu_capabilities() -> list[str]:
    """The CPU's ``OPTIMIZATION_CAPABILITIES`` as OpenVINO reports them (``FP32``, ``BF16``...)."""
    return list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def precision_refusal(precision: str) -> str | None:
    """Why ``precision`` cannot run on this CPU, or None when it can."""
    if precision == "bf16" and "BF16" not in cpu_capabilities():
        return ("this CPU has no bfloat16 arithmetic (OpenVINO reports "
                f"{', '.join(cpu_capabilities())}; bf16 needs AVX-512 BF16 or AMX)")
    return None


def graph_precision(precision: str) -> str:
    """The bundle graph ``precision`` runs (``bf16`` runs the ``fp32`` graph)."""
    return HINTED_PRECISIONS.get(precision, precision)


@dataclass(frozen=True)
class CompileSettings:
    """The ``compile_model`` options the runtime uses, in one place (benchmarks report them).

    Attributes:
        performance_hint: ``LATENCY``: one stream, every thread on one request, which is
            how a video loop runs (one frame at a time); None: OpenVINO's default.
        threads: inference threads; physical cores, like the ONNX Runtime backend;
            None: OpenVINO's default.
        precision_hint: set ``INFERENCE_PRECISION_HINT`` from the precision asked for
            (``f32``, or ``bf16``); False leaves OpenVINO to choose (bf16 where the CPU
            has it, whatever the graph).
        release_on_switch: release the previous weather's activation memory when the
            weather changes (see the module docstring); False keeps every weather's.
    """

    performance_hint: str | None = "LATENCY"
    threads: int | None = field(default_factory=physical_cores)
    precision_hint: bool = True
    release_on_switch: bool = True

    def config(self, precision: str) -> dict[str, str]:
        """The ``compile_model`` config for a graph run at ``precision``."""
        config = {}
        if self.performance_hint:
            config["PERFORMANCE_HINT"] = self.performance_hint
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = str(self.threads)
        if self.precision_hint:
            config["INFERENCE_PRECISION_HINT"] = INFERENCE_PRECISION.get(precision, "f32")
        return config

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for benchmark reports."""
        return asdict(self)


#: OpenVINO's own defaults, ``compile_model(model, "CPU")`` with no options: what an x86
#: user gets without gpmask (``gpmask bench``'s ``openvino-default`` reference).
OPENVINO_DEFAULTS = CompileSettings(performance_hint=None, threads=None, precision_hint=False,
                                    release_on_switch=False)


class OpenVinoBackend(Backend):
    """Every weather of a bundle compiled by OpenVINO for the CPU.

    Args:
        bundle: the bundle to load.
        precision: ``fp32``, ``bf16`` (the fp32 graphs in bfloat16), or any precision the
            bundle has graphs for (``fp16``, ``int8``, ``int8-cpu``, ``int8-openvino``).
        settings: compile options (defaults tuned for latency).
        weathers: load only these (default: every weather with a graph at ``precision``).
    """

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        settings: CompileSettings | None = None,
        weathers: Sequence[str] | None = None,
    ) -> None:
        import onnx
        import openvino as ov

        refusal = precision_refusal(precision)
        if refusal:
            raise GpmaskError(f"precision {precision}: {refusal}")
        graphs = graph_precision(precision)
        self.name = "openvino"
        self.settings = settings or CompileSettings()
        self.weathers = prepared_weathers(bundle, "graphs", graphs)
        if weathers is not None:
            for weather in weathers:
                bundle.graph_path(weather, graphs)  # refuses an unknown one by name
            self.weathers = [w for w in self.weathers if w in weathers]
        paths = {w: bundle.graph_path(w, graphs) for w in self.weathers}
        verify_files(bundle, paths.values())
        verify_files(bundle, external_data_files(
            {w: onnx.load(str(p), load_external_data=False) for w, p in paths.items()}, paths))
        config = self.settings.config(precision)
        self.compiled = {w: core().compile_model(core().read_model(str(p)), "CPU", config)
                         for w, p in paths.items()}
        self.requests = {w: model.create_infer_request() for w, model in self.compiled.items()}
        first = self.compiled[self.weathers[0]]
        #: The float precision OpenVINO compiled the float parts in (``f32``, ``bf16``...).
        self.inference_precision = first.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._input_type = first.input(0).get_element_type().to_dtype()
        self._output_type = first.output(0).get_element_type().to_dtype()
        self._tensor = ov.Tensor
        self._output: np.ndarray | None = None
        self._last: str | None = None

    def _bind_output(self, shape: tuple[int, ...]) -> None:
        """One output array of ``shape``, bound to every request."""
        self._output = np.empty(shape, self._output_type)
        output = self._tensor(self._output, shared_memory=True)
        for request in self.requests.values():
            request.set_output_tensor(output)

    def run(self, weather: str, batch: np.ndarray) -> np.ndarray:
        if self._output is None or self._output.shape != batch.shape:
            self._bind_output(batch.shape)
        frame = np.ascontiguousarray(batch, dtype=self._input_type)
        if self.settings.release_on_switch and self._last not in (None, weather):
            self.compiled[self._last].release_memory()
        self._last = weather
        request = self.requests[weather]
        request.set_input_tensor(self._tensor(frame, shared_memory=True))
        request.infer()
        return self._output.astype(np.float32, copy=False)

    def close(self) -> None:
        self.requests.clear()
        self.compiled.clear()
        self._output = None

