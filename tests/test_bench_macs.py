"""MACs counted from ONNX shapes, against hand computation and against torch's modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gpmask.bench.macs import count_macs
from gpmask.errors import GpmaskError
from tests.conftest import make_checkpoint


def _weight(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name)


@pytest.fixture
def tiny_graph(tmp_path: Path) -> Path:
    """image(1x3xHxW) -> Conv 3->8 k3 p1 -> grouped Conv 8->8 k3 p1 g4 -> ConvTranspose
    8->2 k2 s2 -> Flatten -> MatMul (.., 5) -> Gemm (5 -> 7)."""
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4),
        helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], strides=[2, 2]),
        helper.make_node("Flatten", ["c3"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w4"], ["m"]),
        helper.make_node("Gemm", ["m", "w5"], ["out"]),
    ]
    height, width = "height", "width"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [_weight("w1", (8, 3, 3, 3)), _weight("w2", (8, 2, 3, 3)), _weight("w3", (8, 2, 2, 2)),
         _weight("w4", (2 * 8 * 12, 5)), _weight("w5", (5, 7))],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_tiny_graph_against_hand_computation(tiny_graph: Path) -> None:
    # 1x3x4x6 input; convs keep 4x6, the transposed conv doubles it to 8x12.
    conv1 = 8 * 4 * 6 * (3 * 3 * 3)            # out elements x (Cin * kH * kW)
    conv2 = 8 * 4 * 6 * (2 * 3 * 3)            # groups of 2 input channels
    deconv = 8 * 4 * 6 * (2 * 2 * 2)           # input elements x (Cout * kH * kW)
    matmul = 1 * 5 * (2 * 8 * 12)              # out elements x K
    gemm = 1 * 7 * 5
    assert count_macs(tiny_graph, (1, 3, 4, 6)) == conv1 + conv2 + deconv + matmul + gemm


def test_exported_network_against_torch_modules(tmp_path: Path) -> None:
    import torch
    from torch import nn

    from gpmask.export import export_bundle

    checkpoint = make_checkpoint()
    bundle = export_bundle(checkpoint, tmp_path / "bundle", verify=False, progress=False)
    model = checkpoint.build_model("rain")
    counted = []

    def hook(module, inputs, output):
        weight = module.weight
        if isinstance(module, nn.ConvTranspose2d):
            counted.append(inputs[0].numel() * weight[0].numel())
        else:
            counted.append(output.numel() * weight[0].numel())

    # forward() returns the full-resolution image only: the coarse heads out4 and out2
    # run in eager mode but feed nothing, so the export prunes them.
    pruned = {"out4", "out2"}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and name not in pruned:
            module.register_forward_hook(hook)
    with torch.inference_mode():
        model(torch.zeros(1, 3, 32, 40))
    assert count_macs(bundle.graph_path("rain"), (1, 3, 32, 40)) == sum(counted) > 0


def test_wrong_rank_is_refused(tiny_graph: Path) -> None:
    with pytest.raises(GpmaskError, match="has 4 dimensions, not 3"):
        count_macs(tiny_graph, (3, 4, 6))
