"""Residual summaries shared by every fit (computed in log-loss space, i.e. relative errors)."""

from __future__ import annotations

import numpy as np


def residual_stats(residuals_N: np.ndarray) -> dict[str, float]:
    """``{rms, mean, max_abs, median_abs}`` of residuals ``float[N]`` (prediction − observation)."""
    r = np.asarray(residuals_N, dtype=np.float64)
    if r.size == 0:
        nan = float("nan")
        return {"rms": nan, "mean": nan, "max_abs": nan, "median_abs": nan}
    return {
        "rms": float(np.sqrt(np.mean(r**2))),
        "mean": float(np.mean(r)),
        "max_abs": float(np.max(np.abs(r))),
        "median_abs": float(np.median(np.abs(r))),
    }
