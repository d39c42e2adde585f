"""GGPM training: mask selection rules, gradient routing, determinism, resume, two-process DDP."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gpmask.cli import main
from gpmask.errors import GpmaskError
from gpmask.masking.checkpoint import MaskedCheckpoint
from gpmask.masking.masks import ConsecutiveMaskSelector, specific_count, top_fraction_candidates
from gpmask.masking.trainer import TrainConfig, Trainer

REPO = Path(__file__).resolve().parent.parent


class ToyPairs:
    """Two weathers that corrupt random images differently (noise vs dark specks)."""

    weathers = ("noise", "specks")
    description = "toy"

    def batch(self, weather: str, batch_size: int, crop: int, step: int):
        rng = np.random.default_rng([step, self.weathers.index(weather)])
        clean = rng.random((batch_size, 3, crop, crop), dtype=np.float32)
        if weather == "noise":
            degraded = clean + 0.2 * rng.standard_normal(clean.shape)
        else:
            degraded = clean - 0.5 * (rng.random(clean.shape) < 0.1)
        return np.clip(degraded, 0, 1).astype(np.float32), clean


def _config(**changes) -> TrainConfig:
    base = TrainConfig(
        arch="msunet",
        arch_kwargs={"base_channels": 4, "num_res_blocks": 1},
        weathers=["noise", "specks"],
        base_steps=6,
        masked_steps=8,
        selection_steps=5,
        batch_size=2,
        crop=16,
        checkpoint_every=0,
    )
    return dataclasses.replace(base, **changes)


def test_candidates_are_top_fraction_by_magnitude() -> None:
    gradient = torch.randn(40, 25, generator=torch.Generator().manual_seed(0))
    candidates = top_fraction_candidates(gradient, 0.4)
    threshold = np.quantile(gradient.abs().numpy(), 0.6)
    expected = gradient.abs().numpy() > threshold
    assert candidates.sum() == 400
    assert np.array_equal(candidates.numpy(), expected)


def test_zero_gradients_are_never_candidates() -> None:
    gradient = torch.zeros(10)
    gradient[3] = 1.0
    assert top_fraction_candidates(gradient, 0.5).nonzero().flatten().tolist() == [3]


def test_element_joins_only_after_consecutive_selections() -> None:
    selector = ConsecutiveMaskSelector(
        {"w": torch.Size([4])}, ["rain"], top_fraction=0.25, consecutive=3
    )
    hot0, hot1 = torch.tensor([5.0, 1, 1, 1]), torch.tensor([1.0, 5, 1, 1])
    # element 0 selected twice, interrupted by element 1, then twice more: never 3 in a row
    for gradient in (hot0, hot0, hot1, hot0, hot0):
        assert selector.update("rain", {"w": gradient}) == {}
    joined = selector.update("rain", {"w": hot0})
    assert joined["w"].tolist() == [True, False, False, False]
    assert selector.masks["rain"]["w"].tolist() == [True, False, False, False]
    selector.freeze()
    for _ in range(3):
        assert selector.update("rain", {"w": hot1}) == {}
    assert selector.density("rain") == 0.25


def _assert_exact_density(checkpoint: MaskedCheckpoint, density: float) -> None:
    """Every parameter tensor of every weather holds round(density * numel) specific elements."""
    params = [n for n in checkpoint.common if n.endswith(("weight", "bias"))]
    for weather in checkpoint.weathers:
        for name in params:
            mask = checkpoint.masks[weather].get(name)
            held = 0 if mask is None else int(mask.sum())
            assert held == round(density * checkpoint.common[name].size), (weather, name)


@pytest.mark.parametrize("density", [0.1, 0.3])
def test_density_is_exact_in_every_tensor_and_weather(tmp_path: Path, density: float) -> None:
    checkpoint = Trainer(_config(density=density), ToyPairs(), progress=False).run().checkpoint
    checkpoint.save(tmp_path / "m.gpmask.safetensors")
    loaded = MaskedCheckpoint.load(tmp_path / "m.gpmask.safetensors")
    _assert_exact_density(loaded, density)
    assert loaded.provenance["settings"]["density"] == density
    assert 0 < loaded.overlap("noise", "specks") < 1


def test_exclusive_masks_are_disjoint_and_keep_the_density() -> None:
    checkpoint = Trainer(_config(density=0.3, exclusive=True), ToyPairs(),
                         progress=False).run().checkpoint
    for name, mask in checkpoint.masks["noise"].items():
        assert not (mask & checkpoint.masks["specks"][name]).any(), name
        numel = checkpoint.common[name].size
        expected = min(specific_count(numel, 0.3), numel // 2)
        assert int(mask.sum()) == int(checkpoint.masks["specks"][name].sum()) == expected
    assert checkpoint.overlap("noise", "specks") == 0.0


def test_evidence_window_trains_nothing() -> None:
    """With no training steps after the window, every weather's network is the common one."""
    trainer = Trainer(_config(masked_steps=0), ToyPairs(), progress=False)
    checkpoint = trainer.run().checkpoint
    _assert_exact_density(checkpoint, 0.1)
    common = checkpoint.bake_numpy("common")
    for weather in checkpoint.weathers:
        for name, value in checkpoint.bake_numpy(weather).items():
            np.testing.assert_array_equal(value, common[name])
    growth = trainer.history["mask_growth"]
    assert growth[-1]["step"] == 5 and growth[-1]["noise"]["density"] == pytest.approx(
        checkpoint.density("noise").overall, abs=0.01
    )


def test_selection_is_deterministic_under_a_seed() -> None:
    first = Trainer(_config(masked_steps=0), ToyPairs(), progress=False).run().checkpoint
    again = Trainer(_config(masked_steps=0), ToyPairs(), progress=False).run().checkpoint
    other = Trainer(_config(masked_steps=0, seed=1), ToyPairs(), progress=False).run().checkpoint
    differs = False
    for weather in first.weathers:
        for name, mask in first.masks[weather].items():
            np.testing.assert_array_equal(mask, again.masks[weather][name])
            differs |= not np.array_equal(mask, other.masks[weather][name])
    assert differs


def test_stage_2_from_given_common_weights_matches_a_whole_run() -> None:
    """What benchmarks/bench_density.py does (stage 1 once, stage 2 per setting from its
    weights) gives exactly the checkpoint a whole run of the same settings gives."""
    config = _config(common_update="frozen", density=0.2)
    whole = Trainer(config, ToyPairs(), progress=False).run().checkpoint
    common = Trainer(config, ToyPairs(), progress=False).train_common()
    split = Trainer(config, ToyPairs(), progress=False, common_weights=common).run().checkpoint
    for weather in ("common", "noise", "specks"):
        for name, value in whole.bake_numpy(weather).items():
            np.testing.assert_array_equal(split.bake_numpy(weather)[name], value)
    assert split.provenance["stage1"] == "given common weights"
    assert whole.provenance["stage1"] == "trained"


def test_consecutive_rule_is_still_available() -> None:
    checkpoint = Trainer(_config(selection="consecutive", common_update="frozen"), ToyPairs(),
                         progress=False).run().checkpoint
    for weather in checkpoint.weathers:
        assert 0.0 < checkpoint.density(weather).overall < 1.0
    assert checkpoint.provenance["settings"]["selection"] == "consecutive"


def test_masked_training_routes_gradients() -> None:
    """Frozen common: C stays the base model; each weather differs from C only at its mask."""
    trainer = Trainer(_config(common_update="frozen"), ToyPairs(), progress=False)
    result = trainer.run()
    checkpoint = result.checkpoint
    base = {n: p.detach() for n, p in trainer.common.items()}
    # stage 1's final weights are C: rebuild stage 1 alone and compare
    stage1 = Trainer(_config(masked_steps=0), ToyPairs(), progress=False)
    stage1.run()
    for name, value in stage1.network.state_dict().items():
        assert torch.equal(value, base[name]), name
        np.testing.assert_array_equal(checkpoint.common[name], value.numpy())
    for weather in checkpoint.weathers:
        baked = checkpoint.bake_numpy(weather)
        assert 0.0 < checkpoint.density(weather).overall < 1.0
        changed = 0
        for name, mask in checkpoint.masks[weather].items():
            assert np.array_equal(baked[name][~mask], checkpoint.common[name][~mask])
            changed += int((baked[name][mask] != checkpoint.common[name][mask]).sum())
        assert changed > 0


def test_a_weather_can_take_more_stage_2_steps_without_changing_the_others() -> None:
    """Frozen common: weathers train independently, so extra steps for one leave the other
    bit for bit as it was."""
    even = Trainer(_config(common_update="frozen"), ToyPairs(), progress=False).run()
    longer = Trainer(_config(common_update="frozen", weather_steps={"specks": 12}), ToyPairs(),
                     progress=False).run()
    assert [len(longer.history["masked_loss"][w]) for w in ("noise", "specks")] == [8, 12]
    for name, value in even.checkpoint.bake_numpy("noise").items():
        np.testing.assert_array_equal(longer.checkpoint.bake_numpy("noise")[name], value)
    assert any(not np.array_equal(longer.checkpoint.bake_numpy("specks")[n], v)
               for n, v in even.checkpoint.bake_numpy("specks").items())
    assert longer.checkpoint.provenance["settings"]["weather_steps"] == {"specks": 12}


@pytest.mark.parametrize(("changes", "message"), [
    ({"density": 0.0}, r"density must be in \(0, 1\], got 0.0"),
    ({"density": 1.5}, r"density must be in \(0, 1\], got 1.5"),
    ({"selection": "random"}, "unknown mask selection 'random'; use evidence, consecutive"),
    ({"selection": "consecutive", "exclusive": True}, "--exclusive needs --selection evidence"),
    ({"exclusive": True, "density": 0.6},
     r"--exclusive needs density x weathers <= 1, got 0.6 x 2"),
    ({"selection_steps": 0}, "evidence selection needs at least 1 selection step"),
    ({"memory_format": "nhwc"},
     "unknown memory format 'nhwc'; use channels_last, contiguous"),
    ({"common_update": "frozen", "weather_steps": {"rain": 10}},
     r"weather steps name 'rain', not one of the weathers \['noise', 'specks'\]"),
    ({"common_update": "mean", "weather_steps": {"specks": 10}},
     "per-weather stage-2 steps need --common frozen"),
    ({"common_update": "frozen", "weather_steps": {"specks": -1}},
     "step counts must not be negative"),
])
def test_bad_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(GpmaskError, match=message):
        Trainer(_config(**changes), ToyPairs(), progress=False)


def test_weather_steps_on_the_command_line(tmp_path: Path, capsys) -> None:
    output = tmp_path / "out.gpmask.safetensors"
    assert main(["train", "--preset", "demo", "--weather-steps", "raindrop", "-o",
                 str(output)]) == 2
    assert "--weather-steps 'raindrop': expected WEATHER=N" in capsys.readouterr().err
    assert main(["train", "--preset", "demo", "--common", "mean", "--weather-steps",
                 "raindrop=10", "-o", str(output)]) == 2
    assert "per-weather stage-2 steps need --common frozen" in capsys.readouterr().err
    assert main(["train", "--preset", "demo", "--selection", "consecutive", "--exclusive", "-o",
                 str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "gpmask: error: --exclusive needs --selection evidence"
    assert main(["train", "--preset", "demo", "--density", "2", "-o", str(output)]) == 2
    assert "density must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert not output.exists()


def test_common_values_train_when_not_frozen() -> None:
    frozen = Trainer(_config(common_update="frozen"), ToyPairs(), progress=False).run()
    mean = Trainer(_config(common_update="mean"), ToyPairs(), progress=False).run()
    name = "head.weight"
    assert not np.array_equal(frozen.checkpoint.common[name], mean.checkpoint.common[name])


def test_uncertainty_weighting_learns_per_weather_weights() -> None:
    trainer = Trainer(_config(common_update="uncertainty"), ToyPairs(), progress=False)
    trainer.run()
    log_variance = trainer.log_variance.detach()
    assert log_variance.shape == (2,) and not torch.equal(log_variance, torch.zeros(2))


def test_memory_format_changes_speed_not_what_is_learned() -> None:
    """Channels-last training computes the same function in another order: the weights
    agree to float rounding, the masks select the same elements, and everything that
    leaves the trainer is in the plain C order that checkpoints and masks index by."""
    results = {}
    for layout in ("channels_last", "contiguous"):
        trainer = Trainer(_config(memory_format=layout), ToyPairs(), progress=False)
        common = trainer.train_common()
        assert all(value.is_contiguous() for value in common.values())
        results[layout] = trainer.run().checkpoint
    nhwc, nchw = results["channels_last"], results["contiguous"]
    for name, value in nchw.common.items():
        np.testing.assert_allclose(nhwc.common[name], value, rtol=0, atol=1e-4)
    agreement = [
        np.mean(nhwc.masks[weather][name] == mask)
        for weather, masks in nchw.masks.items() for name, mask in masks.items()
    ]
    assert min(agreement) >= 0.99
    for weather in nchw.weathers:
        for name, value in nchw.bake_numpy(weather).items():
            np.testing.assert_allclose(nhwc.bake_numpy(weather)[name], value, rtol=0, atol=1e-4)


def test_training_is_deterministic(tmp_path: Path) -> None:
    first = Trainer(_config(), ToyPairs(), progress=False).run().checkpoint
    second = Trainer(_config(), ToyPairs(), progress=False).run().checkpoint
    first.save(tmp_path / "a.safetensors")
    second.save(tmp_path / "b.safetensors")
    a, b = (
        MaskedCheckpoint.load(tmp_path / "a.safetensors"),
        MaskedCheckpoint.load(tmp_path / "b.safetensors"),
    )
    for weather in ("common", "noise", "specks"):
        for name, value in a.bake_numpy(weather).items():
            np.testing.assert_array_equal(value, b.bake_numpy(weather)[name])


#: Batches drawn before each stop: stage 1 (6 steps x 2 weathers), the evidence window
#: (5 steps x 2), then stage-2 training; state is saved every 3 steps.
STOPS = {"stage1": 6 * 2 + 1, "window": 6 * 2 + 5 * 2 + 1, "training": 6 * 2 + 5 * 2 + 4 * 2 + 1}


@pytest.mark.parametrize(("stop_at", "exclusive"), [
    ("stage1", False), ("window", False), ("training", False), ("window", True),
])
def test_resume_matches_uninterrupted_run(tmp_path: Path, stop_at: str, exclusive: bool) -> None:
    config = _config(checkpoint_every=3, density=0.3, exclusive=exclusive)
    reference = Trainer(config, ToyPairs(), progress=False).run().checkpoint

    state = tmp_path / "state.pt"

    class Interrupt(Exception):
        pass

    class FailingPairs(ToyPairs):
        """Raises once the run has reached the given stage and saved state there."""

        calls = 0

        def batch(self, weather, batch_size, crop, step):
            self.calls += 1
            if self.calls > STOPS[stop_at]:
                raise Interrupt
            return super().batch(weather, batch_size, crop, step)

    with pytest.raises(Interrupt):
        Trainer(config, FailingPairs(), state_path=state, progress=False).run()
    assert state.is_file()
    saved = torch.load(state, weights_only=True)
    assert saved["stage"] == (1 if stop_at == "stage1" else 2)
    if stop_at != "stage1":  # saved inside the window (step 3) or after it (step 9)
        assert saved["step"] == (3 if stop_at == "window" else 9)
        assert saved["selector"]["frozen"] == (stop_at == "training")
    resumed = Trainer(config, ToyPairs(), state_path=state, progress=False).run().checkpoint
    for weather in ("common", "noise", "specks"):
        for name, value in reference.bake_numpy(weather).items():
            np.testing.assert_array_equal(value, resumed.bake_numpy(weather)[name], err_msg=name)
    for weather in ("noise", "specks"):
        for name, mask in reference.masks[weather].items():
            np.testing.assert_array_equal(mask, resumed.masks[weather][name], err_msg=name)


def test_two_process_distributed_run_agrees(tmp_path: Path) -> None:
    """torchrun-style run with gloo: both ranks select identical masks (of the exact density,
    from DDP-averaged gradients) and end with identical weights."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_trainer import ToyPairs, _config
        from gpmask.masking.distributed import init_from_environment, shutdown
        from gpmask.masking.trainer import Trainer
        context = init_from_environment()
        config = _config(density=0.3, exclusive=True)
        result = Trainer(config, ToyPairs(), context=context, progress=False).run()
        result.checkpoint.save({str(tmp_path)!r} + f"/rank{{context.rank}}.safetensors")
        shutdown(context)
    """)
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = MaskedCheckpoint.load(tmp_path / "rank0.safetensors")
    rank1 = MaskedCheckpoint.load(tmp_path / "rank1.safetensors")
    single = Trainer(_config(density=0.3, exclusive=True), ToyPairs(), progress=False).run()
    single = single.checkpoint
    for checkpoint in (rank0, rank1):
        for name, mask in checkpoint.masks["noise"].items():
            assert not (mask & checkpoint.masks["specks"][name]).any()
    for weather in rank0.weathers:
        for name, mask in rank0.masks[weather].items():
            assert np.array_equal(mask, rank1.masks[weather][name])
        for name, value in rank0.bake_numpy(weather).items():
            np.testing.assert_array_equal(value, rank1.bake_numpy(weather)[name])
    # ranks saw different batches than a single process, so the result is a different run
    assert not np.array_equal(rank0.common["head.weight"], single.common["head.weight"])
    assert any(not np.array_equal(m, single.masks["noise"][n])
               for n, m in rank0.masks["noise"].items())
    assert rank0.provenance["world_size"] == 2
