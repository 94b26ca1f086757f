"""Approach 3 on published data: `scalinglab fit` recovers Besiroglu et al. (2024)'s refit of Chinchilla.

Data: the 245 runs Besiroglu, Erdil, Barnett & You (2024, arXiv:2404.10102) reconstructed from Hoffmann
et al. (2022)'s Figure 4 (``data/chinchilla_svg_extracted.csv``, provenance in ``data/README.md``): N = total
parameters, C = training FLOPs, D = C / (6·N) tokens as the authors derive it, loss in nats/token.
Their fit (L = E + A/N^α + B/D^β, Huber δ = 1e-3 on log-loss residuals via log-sum-exp, L-BFGS from a
grid of starts) uses 240 of the points: the five excluded are the runs with the highest loss, the five
largest models of the smallest-compute IsoFLOP curve (1e19 FLOPs, losses 3.4-5.0). Published estimates:
E = 1.8172, A = 482.01, B = 2085.43, α = 0.3478, β = 0.3658 (point values as in the paper's Table 1, also
in an independent public re-use). Measured here: E = 1.8172, A = 477.8, B = 2143.4, α = 0.3473, β = 0.3672,
the same optimum an independent scipy implementation of the objective finds; 95 % bootstrap intervals
(200 resamples) E [1.775, 1.873], A [290, 684], B [1079, 6336], α [0.317, 0.369], β [0.334, 0.420], each
holding the published value.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

from scalinglab.cli import main

DATA = Path(__file__).parent / "data" / "chinchilla_svg_extracted.csv"
PUBLISHED = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}  # Besiroglu et al. 2024
HOFFMANN = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}  # Hoffmann et al. 2022, approach 3
N_EXCLUDED = 5  # highest-loss runs left out by Besiroglu et al. (245 → 240 points)
# What the authors' notebook prints for this file (data_analysis.ipynb, training_df): per column
# (min, max, distinct values, standard deviation with ddof=1); 245 rows.
NOTEBOOK_SUMMARY = {
    "N": (57334197.40687078, 16183346310.7305, 142, 2464560600.107564),
    "D": (245105957.9245427, 317754489343.9688, 245, 38025506115.73361),
    "C": (1.3972367362937152e18, 1.2956022673438285e22, 245, 1.0849637947784773e21),
    "loss": (2.0773942450664395, 5.005581996196243, 99, 0.36438696455830627),
}


def _load() -> dict[str, np.ndarray]:
    with open(DATA, newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    c = np.array([float(r["Training FLOP"]) for r in rows])
    return {"N": n, "D": c / (6.0 * n), "C": c, "loss": np.array([float(r["loss"]) for r in rows])}


def _besiroglu_points(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    keep = np.sort(np.argsort(data["loss"])[:-N_EXCLUDED])
    return {k: v[keep] for k, v in data.items()}


def _fit(points: dict[str, np.ndarray], tmp_path: Path, capsys, *flags: str) -> dict:
    """`scalinglab fit --law chinchilla` (approach 3, total parameters, Huber δ 1e-3) on a CSV of ``points``."""
    path = tmp_path / "chinchilla.csv"
    lines = ["params,tokens,loss,flops"]
    cols = zip(points["N"], points["D"], points["loss"], points["C"])
    lines += [",".join(repr(float(x)) for x in row) for row in cols]
    path.write_text("\n".join(lines) + "\n")
    argv = ["fit", str(path), "--law", "chinchilla", "--params", "total", "--huber-delta", "1e-3", "--json", *flags]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _huber_objective(theta: np.ndarray, points: dict[str, np.ndarray], delta: float = 1e-3):
    """Σ Huber_δ(LSE(a − α ln N, b − β ln D, e) − ln L) and its gradient, θ = (a, b, e, α, β) =
    (ln A, ln B, ln E, α, β): written from the papers' description, independently of scalinglab.scaling."""
    a, b, e, alpha, beta = theta
    ln_n, ln_d = np.log(points["N"]), np.log(points["D"])
    terms = np.vstack((a - alpha * ln_n, b - beta * ln_d, np.full_like(ln_n, e)))
    pred = logsumexp(terms, axis=0)
    r = pred - np.log(points["loss"])
    value = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    w = np.exp(terms - pred)
    grad = np.vstack((w, -w[0] * ln_n, -w[1] * ln_d)) @ np.clip(r, -delta, delta)
    return value, grad


def _theta(p: dict) -> np.ndarray:
    return np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])


def test_data_copy_matches_the_authors_notebook():
    data = _load()
    assert all(len(v) == 245 for v in data.values())
    for key, (lo, hi, distinct, sd) in NOTEBOOK_SUMMARY.items():
        x = data[key]
        assert x.min() == pytest.approx(lo, rel=1e-12) and x.max() == pytest.approx(hi, rel=1e-12), key
        assert len(np.unique(x)) == distinct and x.std(ddof=1) == pytest.approx(sd, rel=1e-12), key
    excluded = np.sort(np.argsort(data["loss"])[-N_EXCLUDED:])
    assert np.all(data["C"][excluded] < 1.01e19) and np.all(data["N"][excluded] > 2e9)  # the 1e19 curve's largest
    assert np.all(data["loss"][excluded] > 3.44)


def test_fit_recovers_besiroglu_refit(tmp_path, capsys):
    points = _besiroglu_points(_load())
    fit = _fit(points, tmp_path, capsys)
    assert fit["params_convention"] == "total" and fit["huber_delta"] == 1e-3
    for name in ("E", "alpha", "beta"):  # measured: |Δ| ≤ 0.0014 (0.4 %)
        assert fit[name] == pytest.approx(PUBLISHED[name], rel=0.005), name
    for name in ("A", "B"):  # weakly identified scales (95 % interval of B spans 6x); measured 0.9 %, 2.8 %
        assert fit[name] == pytest.approx(PUBLISHED[name], rel=0.05), name
    # an independent implementation of the objective: scalinglab's solution is its minimum, at least as low
    # as at the published values, and Hoffmann et al.'s published law fits these points 4x worse (their finding)
    ours = _theta(fit)
    f_ours, _ = _huber_objective(ours, points)
    tight = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
    polished = minimize(_huber_objective, ours, args=(points,), jac=True, method="L-BFGS-B", options=tight)
    assert np.max(np.abs(polished.x - ours)) < 1e-4 and polished.fun > f_ours * (1 - 1e-9)
    assert f_ours <= _huber_objective(_theta(PUBLISHED), points)[0]
    assert _huber_objective(_theta(HOFFMANN), points)[0] > 3 * f_ours


@pytest.mark.slow
def test_published_values_inside_bootstrap_intervals_and_outliers_move_beta(tmp_path, capsys):
    """95 % bootstrap intervals of the 240-point fit hold every published value; with the five excluded
    runs kept (245 points) the optimum moves to β ≈ 0.45, outside that interval: the selection matters."""
    data = _load()
    fit = _fit(_besiroglu_points(data), tmp_path, capsys, "--bootstrap", "200", "--seed", "0")
    for name, value in PUBLISHED.items():
        lo, hi = fit["ci"][name]
        assert lo < value < hi, (name, lo, value, hi)
    assert fit["optimizer"]["bootstrap"]["n_hit_max_iter"] == 0
    everything = _fit(data, tmp_path, capsys)
    assert everything["beta"] > fit["ci"]["beta"][1] and everything["beta"] == pytest.approx(0.453, abs=0.005)
    # scipy from the published start agrees, given tolerances for an objective of order 1e-3 (with scipy's
    # defaults it stops at β = 0.365: the early stop Besiroglu et al. found in Hoffmann et al.'s fit)
    tight = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000}
    polished = minimize(_huber_objective, _theta(PUBLISHED), args=(data,), jac=True, method="L-BFGS-B", options=tight)
    assert polished.x[4] == pytest.approx(everything["beta"], abs=1e-3)
