"""Bootstrap resampling as integer count weights, and percentile intervals.

Resampling ``n`` points with replacement is the same as giving point ``i`` the weight
``c_i`` = how many times it was drawn (``sum(c) == n``).  Every fit in this package
accepts per-point weights, so all resamples share one array shape and can be fitted
together (numpy broadcasting or ``jax.vmap``) instead of in a Python loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def resample_counts(
    n_points: int,
    n_resamples: int,
    *,
    seed: int = 0,
    groups: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap count weights ``int64[n_resamples, n_points]``; each row sums to ``n_points``.

    With ``groups`` (one integer label per point) the resampling is stratified: the
    points of each group are resampled among themselves, so every group keeps its size
    (used for IsoFLOP budgets, where a budget must keep enough points for its parabola).
    """
    if n_points < 1 or n_resamples < 1:
        raise ValueError("need at least one point and one resample")
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=n_resamples)
    groups = np.asarray(groups)
    if groups.shape != (n_points,):
        raise ValueError("groups must have one label per point")
    counts_KN = np.zeros((n_resamples, n_points), dtype=np.int64)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        counts_KN[:, idx] = rng.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_resamples)
    return counts_KN


def percentile_interval(samples_K: np.ndarray, level: float = DEFAULT_LEVEL) -> list[float]:
    """Percentile bootstrap interval ``[low, high]`` of one parameter (NaN samples ignored)."""
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    samples_K = np.asarray(samples_K, dtype=np.float64)
    finite = samples_K[np.isfinite(samples_K)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return [float(low), float(high)]


def percentile_intervals(samples: Mapping[str, np.ndarray], level: float = DEFAULT_LEVEL) -> dict[str, list[float]]:
    """``{param: [low, high]}`` for every entry of ``samples`` (``{param: float[K]}``)."""
    return {name: percentile_interval(values, level) for name, values in samples.items()}
