"""Power-law fits in log space: recovery, agreement with numpy.polyfit, bootstrap coverage."""

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.scaling import powerlaw
from scalinglab.scaling.bootstrap import percentile_interval, resample_counts


def _data(rng, n=30, sigma=0.02, A=3.0e3, k=-0.3):
    x = np.logspace(6, 10, n)
    y = A * x**k * np.exp(sigma * rng.standard_normal(n))
    return x, y


def test_recovers_exponent_within_standard_error():
    rng = np.random.default_rng(0)
    sigma = 0.02
    x, y = _data(rng, sigma=sigma)
    res = powerlaw.fit_power_law(x, y, form="coef")
    lx = np.log(x)
    # OLS slope standard error = sigma / sqrt(sum (lx - mean)^2); 4 SE is a 6e-5 false-alarm rate.
    se = sigma / np.sqrt(np.sum((lx - lx.mean()) ** 2))
    assert abs(res["k"] - (-0.3)) < 4 * se
    assert res["n_points"] == 30
    # residual rms of a correct model ~ sigma (chi-square with 28 dof: within 30 %)
    assert 0.7 * sigma < res["residuals"]["rms"] < 1.3 * sigma


def test_matches_numpy_polyfit_and_scale_form_is_consistent():
    rng = np.random.default_rng(1)
    x, y = _data(rng)
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    coef = powerlaw.fit_power_law(x, y, form="coef")
    assert coef["k"] == pytest.approx(slope, rel=1e-10)
    assert coef["A"] == pytest.approx(np.exp(intercept), rel=1e-9)
    scale = powerlaw.fit_power_law(x, y, form="scale", names=("N_c", "alpha_N"))
    assert scale["alpha_N"] == pytest.approx(-slope, rel=1e-10)
    # (x_c/x)^alpha == A x^k at every x
    np.testing.assert_allclose(powerlaw.power_law_predict(scale, x), powerlaw.power_law_predict(coef, x), rtol=1e-8)
    assert scale["objective"] == pytest.approx(coef["objective"], rel=1e-9)


def test_kaplan_scale_form_recovers_published_like_values():
    # Kaplan et al. 2020: L(N) = (8.8e13 / N)^0.076
    x = np.logspace(5, 9, 25)
    y = (8.8e13 / x) ** 0.076
    res = powerlaw.fit_power_law(x, y, form="scale", names=("N_c", "alpha_N"))
    assert res["alpha_N"] == pytest.approx(0.076, rel=1e-9)
    assert res["N_c"] == pytest.approx(8.8e13, rel=1e-6)


def test_vectorised_bootstrap_equals_loop_over_resamples():
    rng = np.random.default_rng(2)
    x, y = _data(rng, n=12)
    counts = resample_counts(12, 50, seed=3)
    assert np.all(counts.sum(axis=1) == 12)
    b_int, b_slope = powerlaw.fit_loglinear(np.log(x), np.log(y), counts)
    for i in range(50):
        idx = np.repeat(np.arange(12), counts[i])
        if np.unique(idx).size < 2:
            assert np.isnan(b_slope[i])
            continue
        s, c = np.polyfit(np.log(x[idx]), np.log(y[idx]), 1)
        assert b_slope[i] == pytest.approx(s, rel=1e-9, abs=1e-12)
        assert b_int[i] == pytest.approx(c, rel=1e-9, abs=1e-12)


def test_stratified_counts_keep_group_sizes():
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    counts = resample_counts(9, 100, seed=0, groups=groups)
    for g in (0, 1, 2):
        assert np.all(counts[:, groups == g].sum(axis=1) == np.sum(groups == g))


def test_bootstrap_coverage_matches_nominal():
    # 300 simulated data sets, 200 resamples each, 80 % percentile intervals for k.
    # The percentile bootstrap of OLS with n points estimates the slope variance with the
    # (n-2)/n bias and ignores the t distribution, so its expected coverage is
    # P(|t_{n-2}| < z_0.9 * sqrt((n-2)/n)) (= 0.76 for n = 20), not exactly 0.8.
    # Observed coverage ~ Binomial(300, p)/300, sd = sqrt(p(1-p)/300) ~ 0.025; accept 3.5 sd.
    from scipy import stats

    n, n_sims = 20, 300
    expected = 2 * stats.t.cdf(stats.norm.ppf(0.9) * np.sqrt((n - 2) / n), n - 2) - 1
    sd = np.sqrt(expected * (1 - expected) / n_sims)
    rng = np.random.default_rng(4)
    hits = 0
    for s in range(n_sims):
        x, y = _data(rng, n=n, sigma=0.05)
        res = powerlaw.fit_power_law(x, y, form="coef", n_bootstrap=200, level=0.8, seed=s)
        lo, hi = res["ci"]["k"]
        hits += lo <= -0.3 <= hi
    assert abs(hits / n_sims - expected) < 3.5 * sd


def test_percentile_interval_against_numpy():
    v = np.arange(1001, dtype=float)
    assert percentile_interval(v, 0.9) == pytest.approx([50.0, 950.0])
    assert percentile_interval(np.array([np.nan, 1.0, 3.0]), 0.5) == pytest.approx([1.5, 2.5])


def test_bad_input_raises_user_error():
    with pytest.raises(UserError):
        powerlaw.fit_power_law([1, 2, 3], [1, -1, 2])
    with pytest.raises(UserError):
        powerlaw.fit_power_law([2, 2, 2], [1, 2, 3])
