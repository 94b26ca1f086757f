"""Batched L-BFGS shape buckets: padding rows (repeated starts) and points (zero weights) gives
the fit of the exact shapes, and a table of another length in the same bucket reuses the
compiled solver (and so, across processes, the persistent compilation cache)."""

import numpy as np
import pytest

from scalinglab.benchmarks.chinchilla_fit import isoflop_table
from scalinglab.scaling import chinchilla, multistart


@pytest.mark.parametrize("n_budgets,n_per,seed", [(5, 9, 0), (6, 10, 7)])  # 45 -> 64 points, 60 -> 64
def test_bucketed_fit_equals_unpadded_fit(n_budgets, n_per, seed, monkeypatch):
    t = isoflop_table(n_budgets, n_per, sigma=0.01, seed=seed)

    def fit():
        return chinchilla.fit_approach3(
            t["params"], t["tokens"], t["loss"], starts=chinchilla.small_grid(), n_bootstrap=40
        )

    padded = fit()  # 162 starts -> 256 rows, 80 bootstrap rows -> 128
    monkeypatch.setattr(multistart, "_bucket_rows", lambda m: m)
    monkeypatch.setattr(multistart, "_bucket_points", lambda n: n)
    exact = fit()
    assert padded["objective"] == pytest.approx(exact["objective"], rel=1e-10)
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        assert padded[k] == pytest.approx(exact[k], rel=1e-7), k
    # bootstrap refits stop at |grad| <= 1e-6 (A sits in the flattest direction): looser
    for k, (lo, hi) in exact["ci"].items():
        assert padded["ci"][k] == pytest.approx([lo, hi], rel=1e-3), k


def test_new_length_in_the_same_bucket_reuses_the_compiled_solver():
    kw = dict(
        dtype="float64", max_iter=20, gtol=1e-9, method="lockstep", value_and_grad_fn=chinchilla._loss_value_and_grad
    )
    solver = multistart._compiled(chinchilla._loss, "lockstep", 20, 1e-9, 1e-15, 10, chinchilla._loss_value_and_grad)
    starts = chinchilla.small_grid()[::7]
    for n_per, seed in ((10, 1), (12, 2)):  # 50 and 60 points: both padded to 64
        t = isoflop_table(5, n_per, sigma=0.01, seed=seed)
        data = chinchilla.fit_data(t["params"], t["tokens"], t["loss"])
        res = multistart.minimize_batch(chinchilla._loss, starts, np.ones((len(starts), 5 * n_per)), data, **kw)
        assert res.params_MP.shape == (len(starts), 5)
        if n_per == 10:
            compiled = solver._cache_size()
    assert compiled >= 1
    assert solver._cache_size() == compiled


def _bootstrap_problem(n_bootstrap=64):
    from scalinglab.scaling.bootstrap import resample_counts

    t = isoflop_table(6, 10, sigma=0.01, seed=7)
    data = chinchilla.fit_data(t["params"], t["tokens"], t["loss"])
    fit = chinchilla.fit_approach3(t["params"], t["tokens"], t["loss"], starts=chinchilla.small_grid()[::6])
    x0 = np.array([[np.log(fit["A"]), np.log(fit["B"]), np.log(fit["E"]), fit["alpha"], fit["beta"]]])
    return data, x0, resample_counts(len(t["loss"]), n_bootstrap, seed=3)


def test_polishing_only_unconverged_refits_equals_polishing_every_refit():
    """The bootstrap polishes only the refits the lock-step pass left unconverged; polishing every
    refit with the strong-Wolfe L-BFGS (the former way) gives the same samples."""
    data, x0, counts = _bootstrap_problem()
    samples, info = chinchilla.bootstrap_approach3(x0, data, n_bootstrap=len(counts), seed=3, return_info=True)
    lock = multistart.minimize_batch(
        chinchilla._loss,
        np.repeat(x0, len(counts), 0),
        counts,
        data,
        dtype="float64",
        max_iter=100,
        gtol=1e-6,
        method="lockstep",
        value_and_grad_fn=chinchilla._loss_value_and_grad,
    )
    every = multistart.minimize_batch(
        chinchilla._loss, lock.params_MP, counts, data, dtype="float64", max_iter=500, gtol=1e-9, ls_steps=30
    )
    x = np.where((every.value_M <= lock.value_M)[:, None], every.params_MP, lock.params_MP)
    assert np.allclose(samples["alpha"], x[:, 3], atol=2e-4) and np.allclose(samples["beta"], x[:, 4], atol=2e-4)
    assert np.allclose(np.log(samples["E"]), x[:, 2], atol=5e-4)
    assert info["n_polished"] < len(counts) and info["n_hit_max_iter"] == 0 and info["n_not_converged"] == 0


def test_unconverged_rows_are_polished_and_iteration_limit_counted():
    data, x0, counts = _bootstrap_problem(16)
    start = np.repeat(x0 + np.array([[2.0, -2.0, 0.3, 0.2, -0.1]]), len(counts), 0)
    kw = dict(dtype="float64", gtol=1e-9, method="lockstep", value_and_grad_fn=chinchilla._loss_value_and_grad)
    short = multistart.minimize_batch(chinchilla._loss, start, counts, data, max_iter=3, **kw)
    assert not short.converged_M.any() and (short.n_iter_M == 3).all()
    # a polish too short to converge: every row polished, every one counted at the limit
    _, info = multistart.polish_unconverged(chinchilla._loss, short, counts, data, max_iter=2)
    assert info == {"n_polished": len(counts), "n_hit_max_iter": len(counts), "max_iter": 2}
    # to convergence: same end points as one long lock-step run (to the fit's precision)
    res, info = multistart.minimize_converged(
        chinchilla._loss,
        start,
        counts,
        data,
        gtol=1e-9,
        max_iter=400,
        first_iter=10,
        value_and_grad_fn=chinchilla._loss_value_and_grad,
    )
    long = multistart.minimize_batch(
        chinchilla._loss, res.params_MP, counts, data, dtype="float64", max_iter=1000, gtol=1e-12, ls_steps=30
    )
    assert res.converged_M.all() and info["n_hit_max_iter"] == 0
    assert np.all(res.value_M - long.value_M <= 1e-9 * np.abs(long.value_M))
    assert np.allclose(res.params_MP[:, 3:], long.params_MP[:, 3:], atol=1e-3)
