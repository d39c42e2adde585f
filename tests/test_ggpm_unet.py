"""ggpm-unet: the GGPM paper's network, against a layout and a computation written out here.

The paper's own code cannot ship with or be downloaded by the tests, so its published
description is restated independently: the state-dict names and shapes, in
registration order (:func:`_expected_parameters`), the parameter count in closed form,
the MACs per pixel in closed form, and the forward pass as plain ``torch.nn.functional``
calls on the state dict, with the original's nearest ``F.interpolate`` resizing
(:func:`_functional_forward`).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from gpmask.errors import GpmaskError
from gpmask.export.trace import trace_graph
from gpmask.graph.channel_padding import pad_convolution_channels
from gpmask.graph.concat_split import split_concatenated_convolutions
from gpmask.graph.subpixel import subpixel_upsampling
from gpmask.masking.trainer import TrainConfig, Trainer
from gpmask.model import GGPMUNet, build_model, size_multiple
from gpmask.model.ggpm_unet import _resize
from tests.test_trainer import ToyPairs

SMALL = {"base_channels": 4, "num_blocks": 1}


# ---------------------------------------------------------------- the layout, written out
def _conv(name: str, cin: int, cout: int, k: int, transpose: bool = False) -> list:
    weight = (cin, cout, k, k) if transpose else (cout, cin, k, k)
    return [(f"{name}.layer.weight", weight), (f"{name}.layer.bias", (cout,))]


def _dense_stack(prefix: str, c: int, blocks: int) -> list:
    out = []
    for b in range(1, blocks + 1):
        block = f"{prefix}.layer{b}"
        for i in range(3):
            out += _conv(f"{block}.conv{i}.conv", (i + 1) * c, c, 3)
        out += _conv(f"{block}.LFF", 4 * c, c, 1)
    return out


def _image_features(prefix: str, p: int) -> list:
    return (_conv(f"{prefix}.layer1", 3, p // 4, 3) + _conv(f"{prefix}.layer2", p // 4, p // 2, 1)
            + _conv(f"{prefix}.layer3", p // 2, p // 2, 3)
            + _conv(f"{prefix}.layer4", p // 2, p - 3, 1) + _conv(f"{prefix}.conv", p, p, 1))


def _expected_parameters(c: int, blocks: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every parameter, in the order the paper's UNet registers them."""
    widths = (c, 2 * c, 4 * c)
    out = []
    for i, w in enumerate(widths):
        out += _dense_stack(f"Encoder.{i}", w, blocks)
    out += (_conv("feat_extract.0", 3, c, 3) + _conv("feat_extract.1", c, 2 * c, 3)
            + _conv("feat_extract.2", 2 * c, 4 * c, 3)
            + _conv("feat_extract.3", 4 * c, 2 * c, 4, transpose=True)
            + _conv("feat_extract.4", 2 * c, c, 4, transpose=True)
            + _conv("feat_extract.5", c, 3, 3))
    for i, w in enumerate(reversed(widths)):
        out += _dense_stack(f"Decoder.{i}", w, blocks)
    out += _conv("Convs.0", 4 * c, 2 * c, 1) + _conv("Convs.1", 2 * c, c, 1)
    for i, w in enumerate(widths):
        out += _conv(f"AFFs.{i}.conv1", 7 * c, w, 1) + _conv(f"AFFs.{i}.conv2", w, w, 3)
    out += _conv("FAM1.merge", 4 * c, 4 * c, 3) + _image_features("SCM1", 4 * c)
    out += _conv("FAM2.merge", 2 * c, 2 * c, 3) + _image_features("SCM2", 2 * c)
    return out


def _closed_form_parameters(c: int, n: int) -> int:
    """Parameter count from the architecture's description, layer by layer."""
    def conv(cin: int, cout: int, k: int) -> int:
        return cout * cin * k * k + cout

    def rdb(w: int) -> int:
        return conv(w, w, 3) + conv(2 * w, w, 3) + conv(3 * w, w, 3) + conv(4 * w, w, 1)

    def scm(p: int) -> int:
        return (conv(3, p // 4, 3) + conv(p // 4, p // 2, 1) + conv(p // 2, p // 2, 3)
                + conv(p // 2, p - 3, 1) + conv(p, p, 1))

    widths = (c, 2 * c, 4 * c)
    stacks = 2 * n * sum(rdb(w) for w in widths)
    heads = (conv(3, c, 3) + conv(c, 2 * c, 3) + conv(2 * c, 4 * c, 3) + conv(c, 3, 3)
             + (4 * c * 2 * c * 16 + 2 * c) + (2 * c * c * 16 + c))  # two transposed convs
    fusion = conv(4 * c, 2 * c, 1) + conv(2 * c, c, 1)
    fusion += sum(conv(7 * c, w, 1) + conv(w, w, 3) for w in widths)
    injection = conv(4 * c, 4 * c, 3) + scm(4 * c) + conv(2 * c, 2 * c, 3) + scm(2 * c)
    return stacks + heads + fusion + injection


def _closed_form_macs_per_pixel(c: int, n: int) -> float:
    """Multiply-accumulates per input pixel: each layer's MACs per output pixel x its area."""
    def conv(cin: int, cout: int, k: int) -> int:
        return cout * cin * k * k

    def rdb(w: int) -> int:
        return conv(w, w, 3) + conv(2 * w, w, 3) + conv(3 * w, w, 3) + conv(4 * w, w, 1)

    def scm(p: int) -> int:
        return (conv(3, p // 4, 3) + conv(p // 4, p // 2, 1) + conv(p // 2, p // 2, 3)
                + conv(p // 2, p - 3, 1) + conv(p, p, 1))

    full = (2 * n * rdb(c) + conv(3, c, 3) + conv(c, 3, 3) + conv(2 * c, c, 1)
            + conv(7 * c, c, 1) + conv(c, c, 3))
    half = (2 * n * rdb(2 * c) + conv(c, 2 * c, 3) + conv(4 * c, 2 * c, 1)
            + conv(7 * c, 2 * c, 1) + conv(2 * c, 2 * c, 3) + conv(2 * c, 2 * c, 3) + scm(2 * c)
            + conv(2 * c, c, 4))  # the transposed conv to full size: per input pixel of 1/2
    quarter = (2 * n * rdb(4 * c) + conv(2 * c, 4 * c, 3) + conv(7 * c, 4 * c, 1)
               + conv(4 * c, 4 * c, 3) + conv(4 * c, 4 * c, 3) + scm(4 * c)
               + conv(4 * c, 2 * c, 4))  # the transposed conv to 1/2, per input pixel of 1/4
    return full + half / 4 + quarter / 16


# ---------------------------------------------------------------- the computation, written out
def _conv_unit(state: dict, name: str, x: torch.Tensor, stride: int = 1, gelu: bool = True,
               transpose: bool = False) -> torch.Tensor:
    weight, bias = state[f"{name}.layer.weight"], state[f"{name}.layer.bias"]
    k = weight.shape[-1]
    if transpose:
        out = F.conv_transpose2d(x, weight, bias, stride=stride, padding=k // 2 - 1)
    else:
        out = F.conv2d(x, weight, bias, stride=stride, padding=k // 2)
    return F.gelu(out) if gelu else out


def _rdb(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    grown = x
    for i in range(3):
        grown = torch.cat([grown, _conv_unit(state, f"{name}.conv{i}.conv", grown)], 1)
    return _conv_unit(state, f"{name}.LFF", grown, gelu=False) + x


def _stack(state: dict, name: str, x: torch.Tensor, blocks: int) -> torch.Tensor:
    for b in range(1, blocks + 1):
        x = _rdb(state, f"{name}.layer{b}", x)
    return x


def _scm(state: dict, name: str, image: torch.Tensor) -> torch.Tensor:
    out = image
    for i in range(1, 5):
        out = _conv_unit(state, f"{name}.layer{i}", out)
    return _conv_unit(state, f"{name}.conv", torch.cat([image, out], 1), gelu=False)


def _fam(state: dict, name: str, x: torch.Tensor, injected: torch.Tensor) -> torch.Tensor:
    return x + _conv_unit(state, f"{name}.merge", x * injected, gelu=False)


def _aff(state: dict, name: str, *levels: torch.Tensor) -> torch.Tensor:
    fused = _conv_unit(state, f"{name}.conv1", torch.cat(levels, 1))
    return _conv_unit(state, f"{name}.conv2", fused, gelu=False)


def _functional_forward(state: dict, x: torch.Tensor, blocks: int) -> torch.Tensor:
    """The paper's UNet as described, resizing with nearest F.interpolate by scale factors."""
    def resize(t: torch.Tensor, factor: float) -> torch.Tensor:
        return F.interpolate(t, scale_factor=factor, mode="nearest")

    x2, x4 = resize(x, 0.5), resize(resize(x, 0.5), 0.5)
    res1 = _stack(state, "Encoder.0", _conv_unit(state, "feat_extract.0", x), blocks)
    z = _fam(state, "FAM2", _conv_unit(state, "feat_extract.1", res1, stride=2),
             _scm(state, "SCM2", x2))
    res2 = _stack(state, "Encoder.1", z, blocks)
    z = _fam(state, "FAM1", _conv_unit(state, "feat_extract.2", res2, stride=2),
             _scm(state, "SCM1", x4))
    z = _stack(state, "Encoder.2", z, blocks)
    z42 = resize(z, 2)
    z, res2, res1 = (
        _aff(state, "AFFs.2", resize(res1, 0.25), resize(res2, 0.5), z),
        _aff(state, "AFFs.1", resize(res1, 0.5), res2, z42),
        _aff(state, "AFFs.0", res1, resize(res2, 2), resize(z42, 2)),
    )
    z = _conv_unit(state, "feat_extract.3", _stack(state, "Decoder.0", z, blocks), stride=2,
                   transpose=True)
    z = _stack(state, "Decoder.1", _conv_unit(state, "Convs.0", torch.cat([z, res2], 1)), blocks)
    z = _conv_unit(state, "feat_extract.4", z, stride=2, transpose=True)
    z = _stack(state, "Decoder.2", _conv_unit(state, "Convs.1", torch.cat([z, res1], 1)), blocks)
    return _conv_unit(state, "feat_extract.5", z, gelu=False) + x


def _randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` with every parameter redrawn (biases too), so no term is hidden by zeros."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            fan_in = param[0].numel() if param.dim() > 1 else 4
            param.copy_(torch.randn(param.shape, generator=generator) / fan_in ** 0.5)
    return model.eval()


# ---------------------------------------------------------------- tests
def test_full_size_names_shapes_order_and_parameter_count() -> None:
    model = build_model("ggpm-unet")
    actual = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    assert actual == _expected_parameters(18, 6)
    assert list(model.state_dict()) == [name for name, _ in actual]  # no buffers
    for key in ("Encoder.0.layer1.conv0.conv.layer.weight", "feat_extract.3.layer.weight",
                "AFFs.0.conv1.layer.weight", "SCM1.layer1.layer.weight",
                "FAM1.merge.layer.weight", "Decoder.2.layer6.LFF.layer.bias"):
        assert key in model.state_dict()
    count = sum(p.numel() for p in model.parameters())
    assert count == _closed_form_parameters(18, 6) == 4_988_895  # 4.99M
    assert size_multiple(model) == 4
    assert GGPMUNet.training_only_parameters == (
        "log_var_A", "log_var_B", "log_var_C", "percentage_A", "percentage_B", "percentage_C")


def test_smaller_variants_keep_the_layout() -> None:
    model = build_model("ggpm-unet", {"base_channels": 6, "num_blocks": 2})
    actual = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    assert actual == _expected_parameters(6, 2)
    assert sum(p.numel() for p in model.parameters()) == _closed_form_parameters(6, 2)


@pytest.mark.parametrize("shape", [(2, 3, 32, 48), (1, 3, 64, 40)])
def test_forward_matches_a_functional_recomputation(shape: tuple[int, ...]) -> None:
    model = _randomised(build_model("ggpm-unet", {"base_channels": 4, "num_blocks": 2}))
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _functional_forward(model.state_dict(), x, blocks=2)
        actual = model(x)
    assert actual.shape == x.shape
    assert float((actual - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("shape", [(2, 3, 8, 12), (1, 5, 16, 4)])
def test_resizing_copies_every_kth_pixel_or_repeats_each_bit_for_bit(shape) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(_resize(x, 1 / 2), x[:, :, ::2, ::2])
    assert torch.equal(_resize(x, 1 / 4), x[:, :, ::4, ::4])
    assert torch.equal(_resize(x, 2), x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_output_is_the_input_plus_a_residual_and_samples_are_independent() -> None:
    model = _randomised(build_model("ggpm-unet", SMALL))
    x = torch.rand(3, 3, 16, 24)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
        model.feat_extract[5].layer.weight.zero_()
        model.feat_extract[5].layer.bias.zero_()
        assert torch.equal(model(x), x)  # no residual: the output is exactly the input


def test_macs_per_pixel_in_closed_form_match_the_layers_run() -> None:
    model = build_model("ggpm-unet").eval()
    macs = []

    def count(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, torch.nn.ConvTranspose2d):  # every input scattered over a kernel
            macs.append(inputs[0].numel() * module.weight[0].numel())
        else:
            macs.append(output.numel() * module.weight[0].numel())

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(count)
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    per_pixel = sum(macs) / (32 * 32)
    assert per_pixel == pytest.approx(_closed_form_macs_per_pixel(18, 6), rel=1e-12)
    assert round(per_pixel) == 708_011  # 46.4 GMAC per 256x256 frame
    assert per_pixel * 256 * 256 / 1e9 == pytest.approx(46.4, abs=0.05)


@pytest.mark.parametrize("kwargs, message", [
    ({"base_channels": 1}, "ggpm-unet needs base_channels >= 2 and num_blocks >= 1, got 1 and 6"),
    ({"num_blocks": 0}, "ggpm-unet needs base_channels >= 2 and num_blocks >= 1, got 18 and 0"),
])
def test_bad_sizes_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(GpmaskError) as caught:
        build_model("ggpm-unet", kwargs)
    assert str(caught.value) == message


def test_trains_with_the_ggpm_trainer() -> None:
    config = TrainConfig(arch="ggpm-unet", arch_kwargs=SMALL, weathers=["noise", "specks"],
                         base_steps=3, masked_steps=4, selection_steps=3, consecutive=1,
                         batch_size=2, crop=16, checkpoint_every=0, common_update="frozen")
    checkpoint = Trainer(config, ToyPairs(), progress=False).run().checkpoint
    assert checkpoint.arch == "ggpm-unet" and checkpoint.arch_kwargs == SMALL
    assert checkpoint.parameter_names() == [name for name, _ in _expected_parameters(4, 1)]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        common = checkpoint.build_model("common")(x)
        for weather in ("noise", "specks"):
            assert 0 < checkpoint.density(weather).overall < 1
            assert not np.allclose(checkpoint.build_model(weather)(x).numpy(), common.numpy())


def test_cpu_int8_graph_rewrites_apply_and_stay_exact() -> None:
    """The int8-cpu rewrites find their patterns in this graph and change no output."""
    model = _randomised(build_model("ggpm-unet", {"base_channels": 4, "num_blocks": 2}))
    graph = trace_graph(model, None, size_multiple(model)).model
    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 3, 32, 48), dtype=np.float32),
              rng.random((2, 3, 40, 24), dtype=np.float32)]

    def run(onnx_model) -> list[np.ndarray]:
        session = ort.InferenceSession(onnx_model.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        return [session.run(None, {"image": x})[0] for x in inputs]

    expected = run(graph)
    with torch.no_grad():
        for x, out in zip(inputs, expected, strict=True):
            np.testing.assert_allclose(out, model(torch.from_numpy(x)).numpy(), atol=1e-4)
    concats = [n.op_type for n in graph.graph.node].count("Concat")
    graph = subpixel_upsampling(graph)
    upsampling = sum(n.name.endswith(".subpixel.conv") for n in graph.graph.node)
    graph = split_concatenated_convolutions(graph)
    split = concats - [n.op_type for n in graph.graph.node].count("Concat")
    graph = pad_convolution_channels(graph)
    # Both transposed convolutions; the one-reader concatenations before a convolution:
    # each block's local fusion (6 stacks x 2 blocks), 3 AFFs, 2 SCMs, 2 decoder merges.
    assert (upsampling, split) == (2, 6 * 2 + 7)
    # every layer is narrower than 16 channels at base_channels 4
    assert any(t.name.endswith(".padded.weight") for t in graph.graph.initializer)
    for out, reference in zip(run(graph), expected, strict=True):
        assert float(np.abs(out - reference).max()) <= 1e-5
