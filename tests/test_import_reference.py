"""``gpmask import`` of files as the GGPM paper's code writes them, through export to ONNX Runtime.

The paper's training script saves ``net.state_dict()`` (from inside a
DistributedDataParallel wrapper: keys prefixed ``module.``), with six loss-weighting
scalars registered before the network's own parameters, and masks as lists of bool
tensors in ``net.parameters()`` order, or as the list of the last steps' lists. The
files here are made the same way from a small ``ggpm-unet``; each weather's network
must be ``torch.where(mask, finetuned, base)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from gpmask.bench.macs import count_macs
from gpmask.errors import GpmaskError
from gpmask.export import export_bundle
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.masking.importer import import_checkpoint
from gpmask.model import GGPMUNet, build_model
from tests.conftest import SMALL_ARCH
from tests.test_ggpm_unet import _closed_form_macs_per_pixel

ARCH = ("ggpm-unet", {"base_channels": 4, "num_blocks": 1})
SCALARS = GGPMUNet.training_only_parameters
WEATHERS = ("rain", "snow", "raindrop")


def _reference_state_dict(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """``model``'s random weights as the paper's UNet's state dict: the six scalars first."""
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.tensor(0.01 * (i + 1)) for i, name in enumerate(SCALARS)}
    for name, value in model.state_dict().items():
        state[name] = torch.randn(value.shape, generator=generator) * 0.2
    return state


def _random_masks(names_shapes: list, seed: int, density: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(shape, generator=generator) < density for name, shape in names_shapes}


def _as_reference_list(masks: dict[str, torch.Tensor], names_shapes: list,
                       no_gradient: dict[str, object]) -> list:
    """The mask as the paper saves it: one entry per parameter, scalars first."""
    entries: list = [torch.tensor(False) for _ in SCALARS]
    for name, _ in names_shapes:
        entries.append(no_gradient.get(name, masks[name]))
    return entries


class ReferenceFiles:
    """A base, two fine-tuned state dicts and three masks, each in a form the paper writes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        model = build_model(*ARCH)
        self.parameters = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        self.base = _reference_state_dict(model, seed=0)
        shared = _reference_state_dict(model, seed=1)  # one fine-tuned network for two weathers
        own = _reference_state_dict(model, seed=2)
        torch.save(self.base, folder / "net_stage1.pth")
        torch.save({f"module.{k}": v for k, v in shared.items()}, folder / "net_epoch_19.pth")
        torch.save(own, folder / "net_raindrop.pth")
        self.finetuned = {"rain": shared, "snow": shared, "raindrop": own}

        # Parameters without a gradient: ``False`` and a 0-d False tensor stand for them.
        first, second = self.parameters[0][0], self.parameters[5][0]
        self.masks = {w: _random_masks(self.parameters, 10 + i, 0.1)
                      for i, w in enumerate(WEATHERS)}
        for name in (first, second):
            self.masks["rain"][name] = torch.zeros(dict(self.parameters)[name], dtype=torch.bool)
        rain = _as_reference_list(self.masks["rain"], self.parameters,
                                  {first: False, second: torch.tensor(False)})
        torch.save(rain, folder / "maskA_epoch19.pth")
        history = [_as_reference_list(_random_masks(self.parameters, 20 + step, 0.5),
                                      self.parameters, {}) for step in range(2)]
        history.append(_as_reference_list(self.masks["snow"], self.parameters, {}))
        torch.save(history, folder / "maskB_epoch19.pth")
        raindrop = {f"module.{n}": m for n, m in self.masks["raindrop"].items()}
        raindrop["module.log_var_A"] = torch.tensor(False)
        torch.save(raindrop, folder / "maskC_epoch19.pth")
        self.specs = {
            "rain": (folder / "net_epoch_19.pth", folder / "maskA_epoch19.pth"),
            "snow": (folder / "net_epoch_19.pth", folder / "maskB_epoch19.pth"),
            "raindrop": (folder / "net_raindrop.pth", folder / "maskC_epoch19.pth"),
        }

    def expected_state(self, weather: str) -> dict[str, torch.Tensor]:
        """The paper's rule for a weather's network: where(mask, fine-tuned, base)."""
        finetuned = self.finetuned[weather]
        return {name: torch.where(self.masks[weather][name], finetuned[name], self.base[name])
                for name, _ in self.parameters}

    def expected_model(self, weather: str) -> torch.nn.Module:
        model = build_model(*ARCH)
        model.load_state_dict(self.expected_state(weather), strict=True)
        return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ReferenceFiles:
    return ReferenceFiles(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def imported(files: ReferenceFiles) -> tuple[Path, subprocess.CompletedProcess]:
    out = files.folder / "paper.gpmask.safetensors"
    args = ["--weather", f"rain={files.specs['rain'][0]}:{files.specs['rain'][1]}",
            "--weather", f"snow={files.specs['snow'][0]}:{files.specs['snow'][1]}",
            "--weather", f"raindrop={files.specs['raindrop'][0]}:{files.specs['raindrop'][1]}"]
    result = subprocess.run(
        [sys.executable, "-m", "gpmask.cli", "import", "--arch", ARCH[0],
         "--arch-kwargs", json.dumps(ARCH[1]), "--base", str(files.folder / "net_stage1.pth"),
         *args, "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out, result


def test_import_reports_what_it_changed_and_each_density(files: ReferenceFiles,
                                                         imported: tuple) -> None:
    _, result = imported
    folder, scalars = files.folder, ", ".join(SCALARS)
    dropped = f"dropped the training-only {scalars} (ggpm-unet does not use them)"
    head = f"dropped the 6 leading entries, for the training-only {scalars}"
    prefix = "stripped the 'module.' prefix (DistributedDataParallel)"
    count = sum(int(np.prod(shape)) for _, shape in files.parameters)
    lines = result.stdout.splitlines()
    assert lines[:-1] == [
        f"note: {folder / 'net_stage1.pth'}: {dropped}",
        f"note: {folder / 'net_epoch_19.pth'}: {prefix}",
        f"note: {folder / 'net_epoch_19.pth'}: {dropped}",
        f"note: {folder / 'maskA_epoch19.pth'}: {head}",
        f"note: {folder / 'maskB_epoch19.pth'}: a history of 3 masks; using the last",
        f"note: {folder / 'maskB_epoch19.pth'}: {head}",
        f"note: {folder / 'net_raindrop.pth'}: {dropped}",
        f"note: {folder / 'maskC_epoch19.pth'}: {prefix}",
        f"note: {folder / 'maskC_epoch19.pth'}: dropped the training-only log_var_A "
        f"(ggpm-unet does not use them)",
        *[f"{w}: {sum(int(m.sum()) for m in files.masks[w].values()) / count:.2%} of "
          f"{count:,} parameters specific" for w in WEATHERS],
    ]
    assert lines[-1].startswith("wrote ")


def test_each_weather_is_where_mask_finetuned_base(files: ReferenceFiles,
                                                   imported: tuple) -> None:
    checkpoint = MaskedCheckpoint.load(imported[0])
    assert checkpoint.arch == "ggpm-unet" and checkpoint.weathers == list(WEATHERS)
    assert not set(SCALARS) & set(checkpoint.parameter_names())
    for weather in WEATHERS:
        baked = checkpoint.bake(weather)
        for name, value in files.expected_state(weather).items():
            assert torch.equal(baked[name], value), (weather, name)
    for name, value in checkpoint.bake("common").items():
        assert torch.equal(value, files.base[name])


def test_exported_weathers_match_torch_where_in_onnxruntime(files: ReferenceFiles,
                                                            imported: tuple) -> None:
    bundle = export_bundle(imported[0], files.folder / "bundle", verify=False, progress=False)
    generator = torch.Generator().manual_seed(3)
    inputs = [torch.rand(1, 3, 48, 64, generator=generator),
              torch.rand(2, 3, 36, 28, generator=generator)]
    for weather in WEATHERS:
        session = ort.InferenceSession(str(bundle.root / f"{weather}.onnx"),
                                       providers=["CPUExecutionProvider"])
        model = files.expected_model(weather)
        for x in inputs:
            (actual,) = session.run(None, {"image": x.numpy()})
            with torch.no_grad():
                expected = model(x).numpy()
            assert actual.shape == expected.shape
            assert float(np.abs(actual - expected).max()) <= 1e-4, (weather, x.shape)
    macs = count_macs(bundle.root / "rain.onnx", (1, 3, 64, 64))
    assert macs == pytest.approx(64 * 64 * _closed_form_macs_per_pixel(4, 1), rel=1e-12)


def test_full_size_reference_state_dict_imports_and_loads_strictly(tmp_path: Path) -> None:
    model = build_model("ggpm-unet")
    state = _reference_state_dict(model, seed=4)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "base.pth")
    mask = [torch.tensor(False)] * len(SCALARS) + [
        torch.rand(p.shape, generator=torch.Generator().manual_seed(5)) < 0.1
        for p in model.parameters()]
    torch.save(mask, tmp_path / "mask.pth")
    checkpoint = import_checkpoint("ggpm-unet", {}, tmp_path / "base.pth",
                                   {"rain": (tmp_path / "base.pth", tmp_path / "mask.pth")})
    assert checkpoint.num_parameters() == 4_988_895
    loaded = checkpoint.build_model("rain")  # refuses missing or unexpected keys
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, state[name])
    assert checkpoint.density("rain").overall == pytest.approx(
        sum(int(m.sum()) for m in mask) / 4_988_895)


def test_list_masks_of_an_architecture_without_training_only_parameters(tmp_path: Path) -> None:
    model = build_model(*SMALL_ARCH)
    base = {k: torch.randn(v.shape) for k, v in model.state_dict().items()}
    finetuned = {k: v + 1 for k, v in base.items()}
    masks = [torch.rand(p.shape) < 0.3 for p in model.parameters()]
    torch.save(base, tmp_path / "base.pth")
    torch.save(finetuned, tmp_path / "ft.pth")
    torch.save(masks, tmp_path / "mask.pth")
    checkpoint = import_checkpoint(*SMALL_ARCH, tmp_path / "base.pth",
                                   {"rain": (tmp_path / "ft.pth", tmp_path / "mask.pth")})
    baked = checkpoint.bake("rain")
    for (name, _), mask in zip(model.named_parameters(), masks, strict=True):
        assert torch.equal(baked[name], torch.where(mask, finetuned[name], base[name]))
    assert checkpoint.provenance["notes"] == []


# ---------------------------------------------------------------- malformed masks
def _entries(files: ReferenceFiles) -> list:
    return torch.load(files.specs["rain"][1], weights_only=True)


def _malformed(files: ReferenceFiles) -> dict:
    """Mask objects that must be refused, and the message each is refused with."""
    names = [name for name, _ in files.parameters]
    n = len(names)
    entries = _entries(files)
    wrong_shape = list(entries)
    wrong_shape[6 + 3] = torch.zeros(2, 2, dtype=torch.bool)
    float_entry = list(entries)
    float_entry[6 + 2] = entries[6 + 2].float()
    true_scalar = list(entries)
    true_scalar[6 + 0] = torch.tensor(True)
    text_entry = list(entries)
    text_entry[6 + 1] = "all"
    counts = f"{{}} entries, but ggpm-unet has {n} parameters ({n + 6} with its training-only ones)"
    shape = tuple(files.parameters[3][1])
    return {
        "one entry missing": (entries[:-1], counts.format(n + 5)
                              + f": no entry for {names[-1]} (entry {n + 5})"),
        "one entry too many": (entries + [torch.tensor(False)], counts.format(n + 7)
                               + f": entry {n + 6} is past the last parameter"),
        "no scalars, one missing": (entries[6:-1], counts.format(n - 1)
                                    + f": no entry for {names[-1]} (entry {n - 1})"),
        "wrong shape": (wrong_shape, f"entry 9 ({names[3]}): shape (2, 2) does not match the "
                                     f"parameter's {shape}"),
        "float entry": (float_entry, f"entry 8 ({names[2]}) is torch.float32, not bool"),
        "True scalar": (true_scalar, f"entry 6 ({names[0]}): shape () does not match the "
                                     f"parameter's {files.parameters[0][1]} (a scalar entry "
                                     f"may only be False)"),
        "text entry": (text_entry, f"entry 7 ({names[1]}) is str, not a bool tensor"),
        "empty history": ([[]], counts.format(0) + ": no entry for log_var_A (entry 0)"),
        "a tensor": (torch.zeros(3, dtype=torch.bool), "expected a dict name -> bool tensor "
                                                       "or a list of bool tensors in "
                                                       "net.parameters() order, got Tensor"),
        "unknown name": ({"head.weight": torch.ones(1, dtype=torch.bool)},
                         "'head.weight' is not a parameter of ggpm-unet"),
        "float dict": ({names[0]: torch.ones(files.parameters[0][1])},
                       f"'{names[0]}' is torch.float32, not bool"),
    }


CASES = ["one entry missing", "one entry too many", "no scalars, one missing", "wrong shape",
         "float entry", "True scalar", "text entry", "empty history", "a tensor", "unknown name",
         "float dict"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_masks_are_refused_naming_the_first_mismatch(files: ReferenceFiles,
                                                               tmp_path: Path, case: str) -> None:
    mask, message = _malformed(files)[case]
    path = tmp_path / "mask.pth"
    torch.save(mask, path)
    with pytest.raises(GpmaskError) as caught:
        import_checkpoint(*ARCH, files.folder / "net_stage1.pth",
                          {"rain": (files.specs["rain"][0], path)})
    assert str(caught.value) == f"mask {path}: {message}"


def test_malformed_mask_on_the_command_line_is_one_error_line(files: ReferenceFiles,
                                                              tmp_path: Path) -> None:
    mask, message = _malformed(files)["wrong shape"]
    path = tmp_path / "mask.pth"
    torch.save(mask, path)
    out = tmp_path / "x.gpmask.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "gpmask.cli", "import", "--arch", ARCH[0], "--arch-kwargs",
         json.dumps(ARCH[1]), "--base", str(files.folder / "net_stage1.pth"),
         "--weather", f"rain={files.specs['rain'][0]}:{path}", "-o", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"gpmask: error: mask {path}: {message}"]
    assert not out.exists()
