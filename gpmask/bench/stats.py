"""Latency statistics of one timed run: percentiles, mean and frames per second.

Percentiles show what a frame typically costs (p50) and what a stream must budget for
(p90, p99); the mean gives throughput, so frames per second is ``1000 / mean_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gpmask.errors import GpmaskError


def latency_summary(times_ms: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, mean, min and max of ``times_ms``, and FPS (= 1000 / mean)."""
    if len(times_ms) == 0:
        raise GpmaskError("no timed iterations to summarise; use --iters 1 or more")
    times = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    mean = float(times.mean())
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": mean,
            "min_ms": float(times.min()), "max_ms": float(times.max()), "fps": 1000.0 / mean,
            "iterations": len(times)}
