"""Grouping runs into FLOP budgets (IsoFLOP profiles) with a rounding tolerance."""

from __future__ import annotations

import numpy as np

DEFAULT_RTOL = 0.05


def group_budgets(flops, rtol: float = DEFAULT_RTOL) -> tuple[np.ndarray, np.ndarray]:
    """Label each run with its FLOP budget: ``(labels int[R], budgets float[G])``.

    Runs are sorted by FLOPs; a new budget starts when a run's FLOPs exceed the first run of
    the current budget by more than a factor ``1 + rtol`` (so 6.0e18 and 6.1e18 are one budget
    at the default 5 %).  ``budgets[g]`` is the geometric mean FLOPs of budget ``g``, ascending.
    """
    c = np.asarray(flops, dtype=np.float64)
    order = np.argsort(c, kind="stable")
    labels = np.empty(c.size, dtype=np.int64)
    g, start = -1, None
    for i in order:
        if start is None or c[i] > start * (1.0 + rtol):
            g += 1
            start = c[i]
        labels[i] = g
    budgets = np.array([np.exp(np.mean(np.log(c[labels == k]))) for k in range(g + 1)])
    return labels, budgets
