"""OpenVINO backend: every weather compiled once for the CPU, one infer request each.

OpenVINO's CPU plugin compiles an ONNX graph into oneDNN primitives with the layouts,
fusions and (for Q/DQ graphs) integer kernels of the CPU it runs on; on an x86 CPU it
is the fastest engine gpmask has measured for these networks (``benchmarks/bench_cpu.py``).
Loading a bundle here:

- one ``ov.Core`` per process serves every bundle (it holds the plugin and its
  thread pool);
- each weather's graph is read and compiled once. A dense graph's weights are read
  through OpenVINO's memory-mapped external data (the bundle's shared ``weights.bin``
  pages are mapped once by the OS, whatever the number of graphs reading them). A
  compact graph is folded into plain weights first (:func:`gpmask.graph.fold.load_dense`):
  OpenVINO does not fold the rebuild, and would otherwise redo it in every frame, so the
  compact layout stays a storage format and costs nothing per frame;
- each compiled model gets one infer request, and every request is bound to the same
  output buffer; a frame's array is handed to the request without a copy
  (``ov.Tensor(..., shared_memory=True)``). Switching weather is picking another
  request; nothing is compiled or allocated per frame.

What OpenVINO does not let a caller share: a compiled model keeps its own copy of the
weights in the layout its kernels read, and its own activation memory (at 720p, more
than the demo network's weights). Since only one weather runs at a time, the backend
hands the previous weather's activation memory back (``CompiledModel.release_memory``)
when the weather changes, so resident memory with every weather loaded stays near one
weather's, and a frame after a switch costs what any other does
(``benchmarks/bench_runtime_memory.py --backend openvino`` and ``bench_switching.py``
measure both; the README gives the figures).

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
from pathlib import Path
from typing import Any

import numpy as np

from gpmask.bundle import Bundle
from gpmask.errors import GpmaskError
from gpmask.graph.fold import load_dense
from gpmask.host import physical_cores
from gpmask.precision import graph_precision
from gpmask.precision import precision as definition
from gpmask.runtime.backends.base import (
    Backend,
    BackendSpec,
    external_data_files,
    missing_reason,
    prepared_weathers,
    verify_files,
)


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


#: OpenVINO capability -> the arithmetic it stands for and the instructions giving it.
CAPABILITIES = {"BF16": ("bfloat16", "AVX-512 BF16 or AMX")}


def precision_refusal(precision: str) -> str | None:
    """Why ``precision`` cannot run on this CPU, or None when it can."""
    needed = definition(precision).cpu_capability
    if needed and needed not in cpu_capabilities():
        arithmetic, instructions = CAPABILITIES[needed]
        return (f"this CPU has no {arithmetic} arithmetic (OpenVINO reports "
                f"{', '.join(cpu_capabilities())}; {precision} needs {instructions})")
    return None


def refusal(bundle: Bundle, precision: str, device: int = 0) -> str | None:
    """Why this backend cannot run ``bundle`` at ``precision`` here, or None."""
    missing = bundle.missing_graphs(graph_precision(precision))
    if missing:
        return missing_reason(bundle, "graphs", graph_precision(precision), missing)
    return precision_refusal(precision)


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
            config["INFERENCE_PRECISION_HINT"] = definition(precision).openvino_hint
        return config

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for benchmark reports."""
        return asdict(self)


#: OpenVINO's own defaults, ``compile_model(model, "CPU")`` with no options: what an x86
#: user gets without gpmask (``gpmask bench``'s ``openvino-default`` reference).
OPENVINO_DEFAULTS = CompileSettings(performance_hint=None, threads=None, precision_hint=False,
                                    release_on_switch=False)


def _read_model(path: Path, layout: str) -> Any:
    """``path``'s graph as OpenVINO reads it: a dense graph from its file (its weights
    memory-mapped), a compact one with its weight rebuild folded first, since OpenVINO
    keeps the rebuild's operators in the compiled model and runs them on every frame."""
    if layout != "compact":
        return core().read_model(str(path))
    return core().read_model(load_dense(path).SerializeToString())


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
        self.error_types = (RuntimeError,)  # OpenVINO's Python API raises RuntimeError
        self.settings = settings or CompileSettings()
        self.weathers = prepared_weathers(bundle, "graphs", graphs, weathers)
        paths = {w: bundle.graph_path(w, graphs) for w in self.weathers}
        verify_files(bundle, paths.values())
        verify_files(bundle, external_data_files(
            {w: onnx.load(str(p), load_external_data=False) for w, p in paths.items()}, paths))
        config = self.settings.config(precision)
        self.compiled = {w: core().compile_model(_read_model(p, bundle.graph(w, graphs).layout),
                                                 "CPU", config)
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



SPEC = BackendSpec(
    name="openvino",
    device="cpu",
    precisions=("int8-openvino", "int8", "int8-cpu", "bf16", "fp32", "fp16"),
    unavailable=lambda device: None if openvino_available() else
    "not installed (pip install openvino)",
    refusal=refusal,
    load=lambda bundle, precision, device: OpenVinoBackend(bundle, precision),
)
