"""Settings of one calibration run, light to import so the command line can show defaults."""

from __future__ import annotations

from dataclasses import dataclass

from gpmask.calibration.int8 import METHODS
from gpmask.errors import GpmaskError


@dataclass
class CalibrationOptions:
    """Settings of one ``gpmask calibrate`` run (see the command's ``--help``)."""

    data_dir: str | None = None
    synthetic: int = 32
    method: str = "minmax"
    max_psnr_drop: float = 0.3
    calibration_size: int = 128
    eval_size: int = 256
    fp16_io: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise GpmaskError(f"unknown calibration method {self.method!r}; use one of "
                              f"{', '.join(METHODS)}")
        if not self.max_psnr_drop >= 0:
            raise GpmaskError(f"--max-psnr-drop must be >= 0 dB, got {self.max_psnr_drop}")
        for name in ("calibration_size", "eval_size"):
            value = getattr(self, name)
            if value < 4 or value % 4:
                raise GpmaskError(f"{name.replace('_', ' ')} must be a multiple of 4, got {value}")
