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


def _misfit_table(seed, sigma=0.003, span=1.5):
    """9 budgets 1e18..1e22 from the published Chinchilla law, 13 sizes each over ±span decades
    (L vs ln N is far from a parabola that wide); the first and last budgets are centred 1.2·span
    decades off their optimum, so it lies outside their sizes; the others ±0.4 decades off."""
    from scalinglab.benchmarks.chinchilla_fit import PUBLISHED
    from scalinglab.scaling import chinchilla

    rng = np.random.default_rng(seed)
    rows = []
    for j, c in enumerate(np.logspace(18, 22, 9)):
        centre = np.log10(chinchilla.compute_optimal(PUBLISHED, c)[0])
        centre += {0: -1.2 * span, 8: 1.2 * span}.get(j, rng.uniform(-0.4, 0.4))
        for ln in np.linspace(centre - span, centre + span, 13):
            rows.append((10**ln, c / (6 * 10**ln), c))
    n, d, c = np.array(rows).T
    loss = chinchilla.predict_loss(PUBLISHED, n, d) * np.exp(sigma * rng.standard_normal(n.size))
    return n, d, c, loss


def test_near_minimum_selection_recovers_exponent_despite_misfit_and_outside_vertices():
    from scalinglab.benchmarks.chinchilla_fit import PUBLISHED

    a_true = PUBLISHED["beta"] / (PUBLISHED["alpha"] + PUBLISHED["beta"])
    errs, errs_all = [], []
    for seed in range(10):
        t = _misfit_table(seed)
        res = fit_isoflop(*t, keep=7)
        errs.append(res["a"] - a_true)
        # the two off-centre budgets: vertex outside the 7 sizes kept around their lowest loss
        assert [round(np.log10(e["flops"]), 6) for e in res["excluded_budgets"]] == [18.0, 22.0]
        assert all("outside" not in e["reason"] or "sampled sizes" in e["reason"] for e in res["excluded_budgets"])
        assert len(res["warnings"]) == 2 and res["n_budgets"] == 7
        assert res["b"] == pytest.approx(1 - a_true, abs=0.03)
        errs_all.append(fit_isoflop(*t)["a"] - a_true)
    # measured over these 10 tables: max |a - a_true| 0.010 with keep=7
    assert np.max(np.abs(errs)) < 0.03
    # one parabola over 3 decades of N is biased (+0.145 measured): documented, not hidden
    assert np.mean(errs_all) > 0.1


def test_vertex_outside_sizes_is_excluded_and_loss_window_selects():
    rows = []
    for c, x_star in ((1e18, 14.0), (1e19, 15.0), (1e20, 16.0), (1e21, 23.0)):  # last vertex beyond its sizes
        for x in np.linspace(15.0, 17.5, 6) if c == 1e21 else x_star + np.linspace(-1.5, 1.5, 7):
            n = np.exp(x)
            rows.append((n, c / (6 * n), c, 2.0 + 0.05 * (x - x_star) ** 2))
    n, d, c, loss = np.array(rows).T
    res = fit_isoflop(n, d, c, loss)
    assert res["n_budgets"] == 3 and res["a"] == pytest.approx(1 / np.log(10), abs=1e-9)
    excluded = res["excluded_budgets"][0]
    assert excluded["flops"] == pytest.approx(1e21) and "above" in excluded["reason"]
    # a loss window of 1 % keeps |x - x*| <= sqrt(0.02/0.05) = 0.63: the 3 central sizes (spacing 0.5)
    res_w = fit_isoflop(n, d, c, loss, loss_window=0.01)
    assert [b["n_points"] for b in res_w["budgets"]] == [3, 3, 3]
    assert res_w["a"] == pytest.approx(res["a"], abs=1e-9)
    with pytest.raises(UserError, match="at least 3"):
        fit_isoflop(n, d, c, loss, keep=2)


def test_d_opt_from_flops_per_param_token_interpolated_at_the_vertex():
    # FLOPs per token f(N) = 6N + 3e4 N^0.5: C/(N·D) runs from 6.3 to 9 across a budget.
    f = lambda n: 6 * n + 3e4 * n**0.5  # noqa: E731
    rows = []
    for c in (1e16, 1e17, 1e18):
        x_star = 0.5 * np.log(c) - 5.0
        for x in x_star - 0.3 + np.linspace(-1.0, 1.0, 9):  # vertex off the central size
            n = np.exp(x)
            rows.append((n, c / f(n), c, 3.0 + 0.04 * (x - x_star) ** 2))
    n, d, c, loss = np.array(rows).T
    res = fit_isoflop(n, d, c, loss)
    for b in res["budgets"]:
        # exact: D_opt = C / f(N_opt); linear interpolation of ln k over ln N steps of 0.25
        # (the budget's median k, the central size's, would be ~4 % off)
        assert b["D_opt"] * f(b["N_opt"]) == pytest.approx(b["flops"], rel=2e-3)
        assert b["flops_per_param_token"] == pytest.approx(f(b["N_opt"]) / b["N_opt"], rel=2e-3)
