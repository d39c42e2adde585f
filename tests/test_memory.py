"""Working-memory estimates and the refusals built on them, against hand counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from gpmask import host
from gpmask.errors import GpmaskError
from gpmask.graph.memory import RUNTIME_FACTOR, live_bytes_per_pixel, working_bytes_per_pixel
from gpmask.model.memory import activation_bytes_per_pixel
from gpmask.runtime.memory import WorkingMemory


def _graph(skip: bool, shape: list[int | str]) -> onnx.ModelProto:
    """x (3 ch) -> Conv (8 ch) -> Relu -> Conv (3 ch) [-> Add x]: float32 throughout."""
    weights = [numpy_helper.from_array(np.zeros((8, 3, 1, 1), np.float32), "w1"),
               numpy_helper.from_array(np.zeros((3, 8, 1, 1), np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c" if skip else "y"])]
    if skip:
        nodes.append(helper.make_node("Add", ["x", "c"], ["y"]))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_live_tensors_are_counted_from_their_node_to_their_last_reader() -> None:
    # without the skip, Relu holds a and b (8 + 8 channels); with it, x (3) lives on to the
    # Add, so Relu holds x, a, b and the last Conv x, b, c
    dynamic = ["N", 3, "H", "W"]
    assert live_bytes_per_pixel(_graph(False, dynamic)) == 4 * (8 + 8)
    assert live_bytes_per_pixel(_graph(True, dynamic)) == 4 * (3 + 8 + 8)
    static = _graph(True, [2, 3, 20, 30])  # measured at its own shape, per frame
    assert live_bytes_per_pixel(static) == 4 * (3 + 8 + 8)
    assert working_bytes_per_pixel(static) == RUNTIME_FACTOR * 4 * (3 + 8 + 8)


def test_module_activations_by_hooks() -> None:
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(8, 3, 1))
    measured = activation_bytes_per_pixel(network)
    # the input, then each child's output held by the Sequential until it returns
    assert measured.peak == 4 * (3 + 8 + 8 + 3)
    assert measured.total == 4 * (8 + 8 + 3)


def test_a_frame_beyond_the_memory_available_is_refused_with_what_fits(monkeypatch) -> None:
    memory = WorkingMemory(1000.0, "a test network")
    monkeypatch.setattr(host, "available_memory", lambda: 4_000_000)
    memory.check((40, 50), "restore")  # 2 MB
    with pytest.raises(GpmaskError, match=r"^restore: a 100x100 frame \(1000 bytes per pixel "
                       r"of working memory, estimated from a test network\) needs about 9.5 MiB "
                       r"of memory, and 3.8 MiB is available; frames up to about 63x63 pixels"):
        memory.check((100, 100), "restore")
    with pytest.raises(GpmaskError, match="2 frames of 50x50"):
        memory.check((50, 50), "restore", batch=2)


def test_available_memory_is_what_linux_reports() -> None:
    if not Path("/proc/meminfo").is_file():
        pytest.skip("no /proc/meminfo on this system")
    total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text()
                 .splitlines() if line.startswith("MemTotal:"))
    available = host.available_memory()
    assert available is not None and 0 < available <= total
