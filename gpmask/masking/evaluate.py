"""Quality of a masked checkpoint: input vs common model vs each weather's baked model.

The figures answer the method's two claims on held-out images: every weather's baked
network restores (beats its degraded input), and its specific parameters help
(it beats the all-weather common network on its own weather).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from gpmask.masking.checkpoint import COMMON, MaskedCheckpoint
from gpmask.metrics import psnr, ssim
from gpmask.model import size_multiple

Pair = tuple[np.ndarray, np.ndarray]


def _crop_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    height, width = image.shape[0] // multiple * multiple, image.shape[1] // multiple * multiple
    return image[:height, :width]


def _restore(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        restored = model(tensor.float())[0]
    return restored.clamp(0, 1).numpy().transpose(1, 2, 0)


def _mean_scores(images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> dict:
    return {
        "psnr": float(np.mean([psnr(i, r) for i, r in zip(images, references, strict=True)])),
        "ssim": float(np.mean([ssim(i, r) for i, r in zip(images, references, strict=True)])),
    }


def evaluate_checkpoint(
    checkpoint: MaskedCheckpoint,
    pairs: dict[str, list[Pair]],
    progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR and SSIM per weather for ``input``, ``common`` and ``baked``.

    Args:
        checkpoint: the masked checkpoint.
        pairs: weather -> (degraded, clean) float HxWx3 images in [0, 1]; each is
            cropped to the network's size multiple.

    Returns:
        ``{weather: {"input": {...}, "common": {...}, "baked": {...}, "count": n}}``.
    """
    common_model = checkpoint.build_model(COMMON)
    multiple = size_multiple(common_model)
    results: dict[str, dict] = {}
    total = sum(len(p) for p in pairs.values())
    bar = tqdm(total=total, desc="evaluating", unit="image", disable=not progress)
    for weather, weather_pairs in pairs.items():
        baked_model = checkpoint.build_model(weather)
        degraded = [_crop_to_multiple(d, multiple) for d, _ in weather_pairs]
        clean = [_crop_to_multiple(c, multiple) for _, c in weather_pairs]
        common_out, baked_out = [], []
        for image in degraded:
            common_out.append(_restore(common_model, image))
            baked_out.append(_restore(baked_model, image))
            bar.update()
        results[weather] = {
            "input": _mean_scores(degraded, clean),
            "common": _mean_scores(common_out, clean),
            "baked": _mean_scores(baked_out, clean),
            "count": len(weather_pairs),
        }
    bar.close()
    return results


def format_evaluation(results: dict[str, dict]) -> str:
    """A markdown table of :func:`evaluate_checkpoint`'s results."""
    lines = [
        "| weather | images | input PSNR/SSIM | common PSNR/SSIM | baked PSNR/SSIM | "
        "baked - input | baked - common |",
        "|---|---|---|---|---|---|---|",
    ]
    for weather, r in results.items():
        cells = [f"{r[k]['psnr']:.2f} / {r[k]['ssim']:.3f}" for k in ("input", "common", "baked")]
        gain_input = r["baked"]["psnr"] - r["input"]["psnr"]
        gain_common = r["baked"]["psnr"] - r["common"]["psnr"]
        lines.append(
            f"| {weather} | {r['count']} | {' | '.join(cells)} | "
            f"{gain_input:+.2f} dB | {gain_common:+.2f} dB |"
        )
    return "\n".join(lines)
