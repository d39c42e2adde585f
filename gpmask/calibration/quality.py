"""Run a graph on frames with ONNX Runtime (CPU) and score it against fp32 and ground truth.

Every reduced-precision graph is judged the same way: its outputs against the fp32
graph's outputs on the same frames (how faithful the conversion is) and, where the
clean image is known, both against ground truth (the *drop*: how much restoration
quality the conversion costs). ONNX Runtime's CPU provider runs fp16 and Q/DQ graphs,
so this works on any machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gpmask.calibration.frame_sets import Frames, from_batch, to_batch
from gpmask.metrics import psnr, ssim


def run_frames(session, frames: Frames) -> list[np.ndarray]:
    """The graph's output for every frame, HxWx3 float32 (fp16 outputs are widened)."""
    input_meta = session.get_inputs()[0]
    dtype = np.float16 if input_meta.type == "tensor(float16)" else np.float32
    return [
        from_batch(session.run(None, {input_meta.name: to_batch(frame).astype(dtype)})[0])
        for frame in frames.degraded
    ]


@dataclass
class Scores:
    """Mean quality of a graph's outputs over a frame set.

    Attributes:
        psnr_vs_fp32, ssim_vs_fp32: against the fp32 graph's outputs.
        psnr_vs_gt, ssim_vs_gt: against the clean images (``None`` without them).
        fp32_psnr_vs_gt: the fp32 graph's own PSNR against the clean images.
        drop: ``fp32_psnr_vs_gt - psnr_vs_gt`` in dB (positive: quality lost).
        frames: how many frames were scored.
    """

    psnr_vs_fp32: float
    ssim_vs_fp32: float
    psnr_vs_gt: float | None
    ssim_vs_gt: float | None
    fp32_psnr_vs_gt: float | None
    drop: float | None
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def score(outputs: list[np.ndarray], fp32_outputs: list[np.ndarray], frames: Frames) -> Scores:
    """Score ``outputs`` against ``fp32_outputs`` and, when known, the frames' clean images.

    Outputs are images, so the fp32 reference is clipped to [0, 1] like the outputs are
    (by :func:`gpmask.metrics.psnr`). PSNR against fp32 is capped at 100 dB so identical
    outputs average to a number.
    """
    fp32_outputs = [np.clip(r, 0.0, 1.0) for r in fp32_outputs]
    vs_fp32 = [min(psnr(o, r), 100.0) for o, r in zip(outputs, fp32_outputs, strict=True)]
    ssim_fp32 = [ssim(o, r) for o, r in zip(outputs, fp32_outputs, strict=True)]
    if frames.clean is None:
        return Scores(_mean(vs_fp32), _mean(ssim_fp32), None, None, None, None, len(outputs))
    psnr_gt = _mean([psnr(o, c) for o, c in zip(outputs, frames.clean, strict=True)])
    ssim_gt = _mean([ssim(o, c) for o, c in zip(outputs, frames.clean, strict=True)])
    fp32_gt = _mean([psnr(o, c) for o, c in zip(fp32_outputs, frames.clean, strict=True)])
    return Scores(
        _mean(vs_fp32), _mean(ssim_fp32), psnr_gt, ssim_gt, fp32_gt, fp32_gt - psnr_gt,
        len(outputs),
    )
