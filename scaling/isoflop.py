"""Chinchilla approach 2: IsoFLOP profiles.

Runs are grouped into FLOP budgets (:func:`scalinglab.scaling.budgets.group_budgets`); in each
budget with at least 3 distinct model sizes the final loss is fitted by a parabola in
``x = ln N`` (N parameters), ``L ≈ p0 + p1·x + p2·x²``; its vertex gives ``N_opt(C)``, and
``D_opt(C) = C / (k·N_opt)`` with ``k = C/(N·D)`` of that budget (6 when FLOPs = 6ND).
Power laws ``N_opt = k_N·C^a`` and ``D_opt = k_D·C^b`` (C in FLOPs) are fitted in log space.

Bootstrap: points are resampled with replacement *within each budget* (count weights), every
parabola is refitted (one batched weighted least-squares solve) and so are the power laws.
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL, resample_counts
from scalinglab.scaling.budgets import DEFAULT_RTOL, group_budgets
from scalinglab.scaling.powerlaw import bootstrap_fields, check_positive, fit_loglinear, fit_power_law
from scalinglab.scaling.residuals import residual_stats


def parabola_fits(x_N, y_N, weights_KN) -> np.ndarray:
    """Weighted least-squares parabolas ``y = p0 + p1 x + p2 x²``: returns ``float[K, 3]``
    (NaN rows where the weighted design is singular, e.g. fewer than 3 distinct x drawn)."""
    x = np.asarray(x_N, np.float64)
    xc = x.mean()  # centre for conditioning; converted back below
    V = np.stack([np.ones_like(x), x - xc, (x - xc) ** 2], axis=1)  # [N, 3]
    W = np.atleast_2d(np.asarray(weights_KN, np.float64))
    G = np.einsum("kn,ni,nj->kij", W, V, V)
    r = np.einsum("kn,ni,n->ki", W, V, np.asarray(y_N, np.float64))
    out = np.full((W.shape[0], 3), np.nan)
    ok = np.abs(np.linalg.det(G)) > 1e-12 * np.maximum(1.0, np.abs(G).max(axis=(1, 2)) ** 3)
    if ok.any():
        q = np.linalg.solve(G[ok], r[ok][..., None])[..., 0]
        q0, q1, q2 = q[:, 0], q[:, 1], q[:, 2]
        out[ok] = np.stack([q0 - q1 * xc + q2 * xc**2, q1 - 2 * q2 * xc, q2], axis=1)
    return out


def _vertices(coef_K3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x*, y*) of each parabola; NaN when it does not open upwards."""
    p0, p1, p2 = coef_K3[:, 0], coef_K3[:, 1], coef_K3[:, 2]
    with np.errstate(all="ignore"):
        xs = np.where(p2 > 0, -p1 / (2 * p2), np.nan)
    return xs, p0 + p1 * xs + p2 * xs**2


def isoflop_profiles(n_params, n_tokens, flops, loss, *, rtol: float = DEFAULT_RTOL, min_points: int = 3):
    """Per-budget parabola fits: list of dicts (flops, n_points, N_opt, D_opt, loss_opt, coef,
    in_range, index) for budgets with ``min_points`` distinct sizes and an upward parabola."""
    n, d, c, l = (check_positive(k, v) for k, v in
                  (("params", n_params), ("tokens", n_tokens), ("flops", flops), ("loss", loss)))
    labels, budgets = group_budgets(c, rtol)
    profiles = []
    for g, budget in enumerate(budgets):
        idx = np.flatnonzero(labels == g)
        if np.unique(n[idx]).size < min_points:
            continue
        x = np.log(n[idx])
        coef = parabola_fits(x, l[idx], np.ones((1, idx.size)))[0]
        xs, ys = _vertices(coef[None])
        if not np.isfinite(xs[0]):
            continue
        k = float(np.median(c[idx] / (n[idx] * d[idx])))
        n_opt = float(np.exp(xs[0]))
        profiles.append({
            "flops": float(budget), "n_points": int(idx.size), "N_opt": n_opt, "D_opt": float(budget / (k * n_opt)),
            "loss_opt": float(ys[0]), "coef": [float(v) for v in coef], "flops_per_param_token": k,
            "in_range": bool(x.min() <= xs[0] <= x.max()), "index": idx.tolist(),
            "residuals": (coef[0] + coef[1] * x + coef[2] * x**2 - l[idx]).tolist(),
        })
    return profiles, labels


def fit_isoflop(n_params, n_tokens, flops, loss, *, rtol: float = DEFAULT_RTOL, n_bootstrap: int = 0,
                level: float = DEFAULT_LEVEL, seed: int = 0) -> dict:
    """Approach 2: ``N_opt = k_N·C^a`` and ``D_opt = k_D·C^b`` from IsoFLOP parabola minima.

    Returns a JSON-able dict: ``a``, ``b``, ``N_coef`` (k_N), ``D_coef`` (k_D) (also under
    ``params``), ``budgets`` (one entry per usable budget), ``objective`` (sum of squared
    parabola residuals in loss, nats²), ``residuals``, ``n_points``, ``n_budgets``, and with
    ``n_bootstrap > 0`` percentile ``ci`` for a, b, N_coef, D_coef.
    """
    profiles, labels = isoflop_profiles(n_params, n_tokens, flops, loss, rtol=rtol)
    if len(profiles) < 2:
        raise UserError("isoflop needs at least 2 FLOP budgets with 3 or more distinct model sizes each "
                        f"(found {len(profiles)} usable budget(s); budgets group runs whose FLOPs agree within {rtol:.0%})")
    c_g = np.array([p["flops"] for p in profiles])
    fit_n = fit_power_law(c_g, [p["N_opt"] for p in profiles], form="coef", names=("N_coef", "a"))
    fit_d = fit_power_law(c_g, [p["D_opt"] for p in profiles], form="coef", names=("D_coef", "b"))
    resid = np.concatenate([p["residuals"] for p in profiles])
    params = {"a": fit_n["a"], "b": fit_d["b"], "N_coef": fit_n["N_coef"], "D_coef": fit_d["D_coef"]}
    result = {
        "law": "isoflop",
        "formula": "N_opt = N_coef * C^a, D_opt = D_coef * C^b (parabola minima of L vs ln N per FLOP budget)",
        "param_names": list(params), "params": params, **params,
        "objective": float(np.sum(resid**2)), "objective_kind": "sum of squared parabola residuals (loss)",
        "residuals": residual_stats(resid),
        "power_law_residuals": {"N_opt": fit_n["residuals"], "D_opt": fit_d["residuals"]},
        "n_points": int(sum(p["n_points"] for p in profiles)), "n_budgets": len(profiles),
        "budgets": [{k: v for k, v in p.items() if k not in ("index", "residuals")} for p in profiles],
    }
    if n_bootstrap > 0:
        result.update(bootstrap_fields(_bootstrap(profiles, n_params, loss, n_bootstrap, seed), level))
    return result


def _bootstrap(profiles, n_params, loss, n_bootstrap, seed) -> dict[str, np.ndarray]:
    n = np.asarray(n_params, np.float64)
    l = np.asarray(loss, np.float64)
    log_n_opt = np.empty((n_bootstrap, len(profiles)))
    log_d_opt = np.empty_like(log_n_opt)
    for j, p in enumerate(profiles):
        idx = np.asarray(p["index"])
        counts = resample_counts(idx.size, n_bootstrap, seed=seed + 7919 * j)
        xs, _ = _vertices(parabola_fits(np.log(n[idx]), l[idx], counts))
        log_n_opt[:, j] = xs
        log_d_opt[:, j] = np.log(p["flops"] / p["flops_per_param_token"]) - xs
    log_c = np.log([p["flops"] for p in profiles])
    ni, a = fit_loglinear(log_c, log_n_opt)
    di, b = fit_loglinear(log_c, log_d_opt)
    return {"a": a, "b": b, "N_coef": np.exp(ni), "D_coef": np.exp(di)}


def predict_optimum(result: dict, flops) -> tuple[np.ndarray, np.ndarray]:
    """``(N_opt, D_opt)`` of an approach-1 or approach-2 result at ``flops`` (FLOPs)."""
    c = np.asarray(flops, np.float64)
    return result["N_coef"] * c ** result["a"], result["D_coef"] * c ** result["b"]
