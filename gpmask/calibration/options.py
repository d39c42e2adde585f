"""Settings of one calibration run, light to import so the command line can show defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpmask.calibration.int8 import METHODS
from gpmask.errors import GpmaskError
from gpmask.sizes import Size, check_multiple


@dataclass
class CalibrationOptions:
    """Settings of one ``gpmask calibrate`` run (see the command's ``--help``)."""

    data_dir: str | None = None
    synthetic: int = 32
    method: str = "minmax"
    max_psnr_drop: float = 0.3
    #: (height, width) of calibration crops and of held-out evaluation crops.
    calibration_size: Size = (128, 128)
    eval_size: Size = (256, 256)
    fp16_io: bool = False
    seed: int = 0
    #: show progress bars on stderr
    progress: bool = True

    def check(self, precision: str | None = None) -> None:
        """Refuse settings that are out of range, or (for ``precision``) that it ignores."""
        if self.fp16_io and precision is not None and precision != "fp16":
            raise GpmaskError(f"--fp16-io applies to --precision fp16 only, not {precision}")
        if self.synthetic < 1 and self.data_dir is None:
            raise GpmaskError(f"--synthetic must be at least 1, got {self.synthetic}")
        if self.method not in METHODS:
            raise GpmaskError(f"unknown calibration method {self.method!r}; use one of "
                              f"{', '.join(METHODS)}")
        if not (math.isfinite(self.max_psnr_drop) and self.max_psnr_drop >= 0):
            raise GpmaskError(f"--max-psnr-drop must be >= 0 dB, got {self.max_psnr_drop}")
        for name in ("calibration_size", "eval_size"):
            check_multiple(getattr(self, name), 4, f"--{name.replace('_', '-')}")
