"""Hold-out extrapolation checks against a manual refit and exact laws."""

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.scaling.holdout import holdout
from scalinglab.scaling.load import RunTable
from scalinglab.scaling.powerlaw import fit_power_law


def _table(n, d, loss, c=None):
    return RunTable(
        params=n,
        tokens=d,
        flops=6 * n * d if c is None else c,
        loss=loss,
        names=[f"r{i}" for i in range(n.size)],
        source="t",
    )


def test_exact_power_law_extrapolates_exactly():
    n = np.logspace(6, 9, 8)
    t = _table(n, np.full(8, 1e10), (8.8e13 / n) ** 0.076)
    h = holdout(t, "kaplan-n", 2)
    assert h["unit"] == "runs" and len(h["points"]) == 2
    assert {p["name"] for p in h["points"]} == {"r6", "r7"}  # the two largest-compute runs
    assert h["max_abs_error"] < 1e-10


def test_matches_manual_refit_on_misspecified_data():
    # data from E + A/N^alpha: a pure power law fitted to small N over-predicts the decline.
    n = np.logspace(6, 9, 10)
    loss = 1.69 + 406.4 / n**0.34
    h = holdout(_table(n, np.full(10, 1e11), loss), "kaplan-n", 3)
    ref = fit_power_law(n[:7], loss[:7], form="scale")
    pred = (ref["x_c"] / n[7:]) ** ref["alpha"]
    np.testing.assert_allclose([p["predicted"] for p in h["points"]], pred, rtol=1e-9)
    np.testing.assert_allclose([p["rel_error"] for p in h["points"]], pred / loss[7:] - 1, rtol=1e-9)
    assert all(p["rel_error"] < 0 for p in h["points"])


def test_isoflop_holdout_on_exact_profiles():
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21, 1e22):
        x_star = 0.5 * np.log(c) - 3.0
        for x in x_star + np.linspace(-1.5, 1.5, 7):
            rows.append((np.exp(x), c / (6 * np.exp(x)), c, 2.0 + 0.04 * (x - x_star) ** 2))
    n, d, c, loss = (np.array(v) for v in zip(*rows))
    h = holdout(_table(n, d, loss, c), "isoflop", 2)
    assert h["unit"] == "budgets" and len(h["points"]) == 2
    assert h["max_abs_error"] < 1e-8
    with pytest.raises(UserError, match="leaves no FLOP budgets"):
        holdout(_table(n, d, loss, c), "isoflop", 5)
