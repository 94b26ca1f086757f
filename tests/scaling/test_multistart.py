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
