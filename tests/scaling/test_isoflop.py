"""Approach 2 (IsoFLOP parabolas) and budget grouping against numpy references."""

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.scaling.budgets import group_budgets
from scalinglab.scaling.isoflop import fit_isoflop, parabola_fits


def test_group_budgets_with_rounding_tolerance():
    c = np.array([6.0e18, 6.1e18, 5.95e18, 1.2e19, 1.21e19, 1e20])
    labels, budgets = group_budgets(c, rtol=0.05)
    assert labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert budgets[0] == pytest.approx(np.exp(np.mean(np.log(c[:3]))))
    assert group_budgets(c, rtol=0.001)[1].size == 6


def test_weighted_parabolas_match_numpy_polyfit():
    rng = np.random.default_rng(0)
    x = np.linspace(17, 21, 9)
    y = 0.05 * (x - 19.2) ** 2 + 2.3 + 0.01 * rng.standard_normal(9)
    w = rng.integers(0, 3, size=(20, 9)).astype(float)
    w[:, :3] += 1  # at least 3 distinct x per row
    w[:, -1] += 1
    coef = parabola_fits(x, y, w)
    for k in range(20):
        ref = np.polyfit(x, y, 2, w=np.sqrt(w[k]))  # polyfit weights multiply residuals
        np.testing.assert_allclose(coef[k], ref[::-1], rtol=1e-7, atol=1e-9)
    # a row with only two distinct x is singular -> NaN
    bad = np.zeros((1, 9))
    bad[0, [2, 5]] = 4
    assert np.all(np.isnan(parabola_fits(x, y, bad)))


def test_exact_parabolic_profiles_give_exact_vertices():
    # loss exactly parabolic in ln N with vertex ln N* = 0.5 ln C + const -> a = 0.5 exactly
    rows = []
    for c in (1e18, 1e19, 1e20, 1e21):
        x_star = 0.5 * np.log(c) - 3.0
        for x in x_star + np.linspace(-1.5, 1.5, 7):
            n = np.exp(x)
            rows.append((n, c / (6 * n), c, 2.0 + 0.04 * (x - x_star) ** 2))
    n, d, c, loss = np.array(rows).T
    res = fit_isoflop(n, d, c, loss, n_bootstrap=100)
    assert res["a"] == pytest.approx(0.5, abs=1e-9)
    assert res["b"] == pytest.approx(0.5, abs=1e-9)
    assert res["N_coef"] == pytest.approx(np.exp(-3.0), rel=1e-8)
    assert all(b["in_range"] for b in res["budgets"])
    # exact data: every stratified resample refits the same vertices
    assert res["ci"]["a"] == pytest.approx([0.5, 0.5], abs=1e-8)


def test_too_few_budgets_is_a_user_error():
    n = np.array([1e6, 2e6, 4e6])
    with pytest.raises(UserError, match="at least 2 FLOP budgets"):
        fit_isoflop(n, 1e18 / (6 * n), np.full(3, 1e18), np.array([3.0, 2.9, 3.1]))
