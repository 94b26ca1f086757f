"""The reference approach-3 fit: ``scipy.optimize.minimize(method="L-BFGS-B")`` in a Python loop.

The way published replications fit ``L = E + A/N^alpha + B/D^beta`` (Huber on log-loss
residuals through log-sum-exp, analytic numpy gradient): one L-BFGS-B run per start, and for
the bootstrap one run per (resample, start) pair from the best few distinct full-data optima.

Imports numpy and scipy only (no JAX), so that it also runs as a whole process, the way a user would
run a scipy script (``benchmarks/chinchilla_fit.py`` times it against ``scalinglab fit``)::

    python -m scalinglab.benchmarks.scipy_loop TABLE.csv STARTS.npy --bootstrap 1000 --bootstrap-starts 2

(TABLE.csv: columns params,tokens,loss; STARTS.npy: float[S, 5] in (a, b, e, alpha, beta) order.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time

import numpy as np
from scipy.optimize import minimize

from scalinglab.scaling.bootstrap import resample_counts  # numpy only: the same resamples as ours

HUBER_DELTA = 1e-3


def scipy_objective(x, log_n, log_d, log_l, weights, delta: float = HUBER_DELTA):
    """Mean weighted Huber/delta of the LSE residuals and its analytic gradient (numpy)."""
    a, b, e, alpha, beta = x
    u, v = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(u, v), e)
    eu, ev, ee = np.exp(u - m), np.exp(v - m), np.exp(e - m)
    s = eu + ev + ee
    r = m + np.log(s) - log_l
    ar = np.abs(r)
    h = np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    wsum = weights.sum()
    dh = weights * np.clip(r, -delta, delta) / (delta * wsum)
    pu, pv, pe = eu / s, ev / s, ee / s
    grad = np.array(
        [np.sum(dh * pu), np.sum(dh * pv), np.sum(dh * pe), -np.sum(dh * pu * log_n), -np.sum(dh * pv * log_d)]
    )
    return float(np.sum(weights * h) / (delta * wsum)), grad


def scipy_fit(starts_SP, log_n, log_d, log_l, weights=None, options=None, *, return_all: bool = False):
    """Plain loop: scipy L-BFGS-B (default tolerances unless ``options``) from every start;
    returns (best x, best value, all values) (with ``return_all`` also all end points)."""
    w = np.ones_like(log_n) if weights is None else np.asarray(weights, np.float64)
    values, xs, best = [], [], None
    for x0 in starts_SP:
        res = minimize(
            scipy_objective, x0, args=(log_n, log_d, log_l, w), jac=True, method="L-BFGS-B", options=options or {}
        )
        values.append(res.fun if np.isfinite(res.fun) else np.inf)
        xs.append(res.x)
        if best is None or values[-1] < best.fun:
            best = res
    if return_all:
        return best.x, float(best.fun), np.array(values), np.array(xs)
    return best.x, float(best.fun), np.array(values)


def distinct_best(values_S: np.ndarray, x_SP: np.ndarray, k: int, decimals: int = 3) -> np.ndarray:
    """The ``k`` best finite end points that differ after rounding to ``decimals``."""
    chosen, seen = [], set()
    for i in np.argsort(values_S, kind="stable"):
        key = tuple(np.round(x_SP[i], decimals))
        if np.isfinite(values_S[i]) and key not in seen:
            seen.add(key)
            chosen.append(x_SP[i])
        if len(chosen) == k:
            break
    return np.array(chosen)


def fit_with_bootstrap(log_n, log_d, log_l, starts_SP, n_bootstrap: int, bootstrap_starts: int, seed: int = 0):
    """Every start, then every resample from the ``bootstrap_starts`` best distinct optima; returns
    ``(best x, best value, x of each resample)``."""
    x_best, f_best, values, xs = scipy_fit(starts_SP, log_n, log_d, log_l, return_all=True)
    x0 = distinct_best(values, xs, bootstrap_starts)
    counts = resample_counts(log_n.size, n_bootstrap, seed=seed)
    boot = np.array([scipy_fit(x0, log_n, log_d, log_l, counts[k])[0] for k in range(n_bootstrap)])
    return x_best, f_best, boot


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("table")
    p.add_argument("starts")
    p.add_argument("--bootstrap", type=int, default=0)
    p.add_argument("--bootstrap-starts", type=int, default=2)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with open(args.table, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {k: np.array([float(r[k]) for r in rows]) for k in ("params", "tokens", "loss")}
    x, f, boot = fit_with_bootstrap(
        np.log(cols["params"]),
        np.log(cols["tokens"]),
        np.log(cols["loss"]),
        np.load(args.starts),
        args.bootstrap,
        args.bootstrap_starts,
    )
    out = {
        "x": x.tolist(),
        "objective": f,
        "fit_s": time.perf_counter() - t0,
        "ci_alpha": np.percentile(boot[:, 3], [2.5, 97.5]).tolist() if len(boot) else None,
    }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
