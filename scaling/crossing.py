"""Steps to a target loss: monotone loss curves, and the minimum over a batch size's learning rates.

Pure numpy, no run files. Units: steps (optimizer updates), losses in nats/token.

* :func:`isotonic_decreasing` — the least-squares non-increasing fit of a sequence (pool adjacent
  violators). Applied after the centred smoothing of :mod:`scalinglab.scaling.critical_batch`, it
  makes "the first step at which the loss reaches L" the *only* such step: a noisy curve crosses a
  target several times, and its first crossing comes early (noise dips below the target before the
  trend does). The isotonic fit averages the dips with the bumps around them, so its single
  crossing sits near the trend's (bias measured on synthetic curves in tests/scaling/test_crossing.py
  and stated in the README).
* :func:`min_over_lr` — McCandlish et al. (2018), Shallue et al. (2019) and Zhang et al. (2024)
  define the steps to a target at batch size B as the minimum over tuned learning rates. Given the
  steps every learning rate of B's grid needs, it takes the minimum and flags an optimum on an edge
  of the grid (the true minimum may lie beyond it). No interpolation in log LR: on McCandlish's model
  a parabola through the three best grid points changed B_crit by < 5 % with no systematic gain
  (the constant-LR drift along a run dominates), so the plain minimum is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def isotonic_decreasing(y_T: np.ndarray, w_T: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares non-increasing fit of ``y_T`` (pool adjacent violators), shape [T] → [T]."""
    y = np.asarray(y_T, dtype=np.float64)
    w = np.ones_like(y) if w_T is None else np.asarray(w_T, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    counts: list[int] = []
    for yi, wi in zip(y, w):
        means.append(float(yi))
        weights.append(float(wi))
        counts.append(1)
        while len(means) > 1 and means[-2] < means[-1]:  # a rise: pool the two blocks
            w2 = weights[-2] + weights[-1]
            m2 = (weights[-2] * means[-2] + weights[-1] * means[-1]) / w2
            c2 = counts[-2] + counts[-1]
            del means[-1], weights[-1], counts[-1]
            means[-1], weights[-1], counts[-1] = m2, w2, c2
    return np.repeat(np.array(means), counts)


def min_over_lr(lrs_L: Sequence[float], steps_KL: np.ndarray) -> dict[str, np.ndarray]:
    """Minimum over one batch size's learning rates of the steps to each target.

    ``lrs_L`` [L] the learning rates of the grid (any order), ``steps_KL`` [K, L] steps to each of K
    targets (NaN or inf: that run never reached it). Returns ``steps`` [K] (NaN where no learning rate
    reached the target), ``lr`` [K] (the learning rate achieving it; NaN likewise), ``index`` [K]
    (into ``lrs_L``, −1 where none) and ``at_edge`` [K] (bool: the best is the smallest or the
    largest learning rate of a grid of ≥ 2, so the optimum may lie outside the grid).
    """
    lrs = np.asarray(lrs_L, dtype=np.float64)
    s = np.asarray(steps_KL, dtype=np.float64).reshape(-1, len(lrs))
    s = np.where(np.isfinite(s), s, np.inf)
    order = np.argsort(lrs)
    s_sorted = s[:, order]
    j = np.argmin(s_sorted, axis=1)
    best = s_sorted[np.arange(len(s)), j]
    reached = np.isfinite(best)
    at_edge = reached & (len(lrs) >= 2) & ((j == 0) | (j == len(lrs) - 1))
    index = np.where(reached, order[j], -1)
    return {
        "steps": np.where(reached, best, np.nan),
        "lr": np.where(reached, lrs[order][j], np.nan),
        "index": index,
        "at_edge": at_edge,
    }
