"""Named training recipes. ``demo`` makes the checkpoint shipped inside the package."""

from __future__ import annotations

from gpmask.masking.trainer import TrainConfig

#: The shipped demo model: the ``tiny`` network on synthetic rain, raindrop and snow.
#: The common values stay frozen in stage 2 (the reference code's fine-tune mode), so
#: the common network is the all-weather model stage 1 trained, and evaluation compares
#: each weather's baked network with a network that was trained as a whole. The loss is
#: MSE: with the Charbonnier loss (an L1-like median estimator) the tiny network learned
#: to leave raindrops untouched, since no single pixel is surely under a drop.
#: Raindrops, which the network must inpaint, keep improving long after rain and snow
#: have settled, so the raindrop network takes 4,000 stage-2 steps against 800 for rain
#: and 1,200 for snow. The specific values train at 6x the stage-1 rate: with 10 % of
#: each tensor free they need larger steps to move as far as a full fine-tune does
#: (the README's density section compares the rates).
#: The shipped file trained in 28 minutes on 2 Zen 3 cores with NCHW training; with the
#: trainer's channels-last layout the same recipe takes 22 minutes there.
PRESETS: dict[str, TrainConfig] = {
    "demo": TrainConfig(
        arch="tiny",
        weathers=["rain", "raindrop", "snow"],
        base_steps=1400,
        masked_steps=800,
        weather_steps={"snow": 1200, "raindrop": 4000},
        selection_steps=100,
        selection="evidence",
        density=0.1,
        masked_lr=3e-3,
        batch_size=8,
        crop=64,
        common_update="frozen",
        loss="mse",
        seed=0,
    ),
}
