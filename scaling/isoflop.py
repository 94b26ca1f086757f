"""Chinchilla approach 2: IsoFLOP profiles.

Runs are grouped into FLOP budgets (:func:`scalinglab.scaling.budgets.group_budgets`); in each
budget with at least 3 distinct model sizes the final loss is fitted by a parabola in
``x = ln N`` (N parameters), ``L ≈ p0 + p1·x + p2·x²`` (optionally on the points near the
budget's lowest loss only, :func:`select_near_minimum`); its vertex gives ``N_opt(C)``, and
``D_opt(C) = C / (k·N_opt)`` with ``k = C/(N·D)`` of the budget's runs interpolated at the
vertex (6 when FLOPs = 6ND). A budget whose vertex lies outside its sampled sizes is an
extrapolation, not a measurement: it is excluded, with a warning.
Power laws ``N_opt = k_N·C^a`` and ``D_opt = k_D·C^b`` (C in FLOPs) are fitted in log space.

Bootstrap: points are resampled with replacement *within each budget* (count weights), every
parabola is refitted (one batched weighted least-squares solve) and so are the power laws
(a resampled vertex outside the sizes drops that budget from that resample).
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


def select_near_minimum(
    x_N: np.ndarray, y_N: np.ndarray, *, keep: int | None = None, loss_window: float | None = None
) -> np.ndarray:
    """Indices of the points of one budget used for its parabola (sorted by x = ln N).

    ``keep``: the ``keep`` points nearest in rank to the lowest observed loss (a window of sizes
    centred on the argmin, shifted inwards at the ends of the sampled range); ``loss_window``:
    points whose loss is at most ``(1 + loss_window)`` × the lowest. Both: the intersection,
    widened back to 3 points around the argmin if it has fewer. Neither: every point. This is
    the local fit of Porian et al. (2024), who interpolate each IsoFLOP curve near its minimum
    rather than fit one parabola to sizes far from it, where L vs ln N is not a parabola.
    """
    order = np.argsort(x_N, kind="stable")
    n = order.size
    i_min = int(np.argmin(y_N[order]))
    lo, hi = 0, n
    if keep is not None and keep < n:
        k = max(int(keep), 3)
        lo = min(max(i_min - k // 2, 0), n - k)
        hi = lo + k
    chosen = np.arange(lo, hi)
    if loss_window is not None:
        chosen = chosen[y_N[order][chosen] <= y_N[order][i_min] * (1.0 + loss_window)]
        if np.unique(x_N[order][chosen]).size < 3:
            lo3 = min(max(i_min - 1, 0), max(n - 3, 0))
            chosen = np.union1d(chosen, np.arange(lo3, min(lo3 + 3, n)))
    return order[chosen]


def isoflop_profiles(
    n_params,
    n_tokens,
    flops,
    loss,
    *,
    rtol: float = DEFAULT_RTOL,
    min_points: int = 3,
    keep: int | None = None,
    loss_window: float | None = None,
):
    """Per-budget parabola fits: ``(profiles, labels, excluded)``.

    ``profiles``: a list of dicts (flops, n_points, N_opt, D_opt, loss_opt, coef,
    flops_per_param_token, in_range, index) for budgets with ``min_points`` distinct sizes among
    the selected points (:func:`select_near_minimum`), an upward parabola and a vertex inside the
    selected sizes. ``D_opt = C / (k·N_opt)`` with ``k = C/(N·D)`` interpolated linearly in ln N
    between the budget's runs at the vertex (k varies with N: head, attention and embeddings).
    ``excluded``: ``{"flops", "reason", ...}`` for every budget left out (vertex outside the
    sampled sizes, parabola opening downwards, too few sizes).
    """
    n, d, c, l = (
        check_positive(k, v) for k, v in (("params", n_params), ("tokens", n_tokens), ("flops", flops), ("loss", loss))
    )
    labels, budgets = group_budgets(c, rtol)
    profiles, excluded = [], []
    for g, budget in enumerate(budgets):
        all_idx = np.flatnonzero(labels == g)
        if np.unique(n[all_idx]).size < min_points:
            if all_idx.size > 1:
                excluded.append(
                    {
                        "flops": float(budget),
                        "reason": f"fewer than {min_points} distinct sizes",
                        "n_points": int(all_idx.size),
                    }
                )
            continue
        idx = all_idx[select_near_minimum(np.log(n[all_idx]), l[all_idx], keep=keep, loss_window=loss_window)]
        if np.unique(n[idx]).size < min_points:
            excluded.append(
                {
                    "flops": float(budget),
                    "reason": f"fewer than {min_points} distinct sizes near the minimum",
                    "n_points": int(idx.size),
                }
            )
            continue
        x = np.log(n[idx])
        coef = parabola_fits(x, l[idx], np.ones((1, idx.size)))[0]
        xs, ys = _vertices(coef[None])
        if not np.isfinite(xs[0]):
            excluded.append({"flops": float(budget), "reason": "parabola opens downwards", "n_points": int(idx.size)})
            continue
        n_opt = float(np.exp(xs[0]))
        if not x.min() <= xs[0] <= x.max():
            side = "below" if xs[0] < x.min() else "above"
            excluded.append(
                {
                    "flops": float(budget),
                    "reason": f"vertex N = {n_opt:.3g} {side} the sampled sizes "
                    f"[{np.exp(x.min()):.3g}, {np.exp(x.max()):.3g}]",
                    "N_vertex": n_opt,
                    "n_points": int(idx.size),
                }
            )
            continue
        k = _k_at(x, c[idx] / (n[idx] * d[idx]), xs[0])
        profiles.append(
            {
                "flops": float(budget),
                "n_points": int(idx.size),
                "n_points_budget": int(all_idx.size),
                "N_opt": n_opt,
                "D_opt": float(budget / (k * n_opt)),
                "loss_opt": float(ys[0]),
                "coef": [float(v) for v in coef],
                "flops_per_param_token": k,
                "in_range": True,
                "index": idx.tolist(),
                "residuals": (coef[0] + coef[1] * x + coef[2] * x**2 - l[idx]).tolist(),
            }
        )
    return profiles, labels, excluded


def _k_at(x_N: np.ndarray, k_N: np.ndarray, x_star):
    """``C/(N·D)`` at ln N = ``x_star`` (scalar or array): per size the geometric mean over its
    runs, then linear interpolation in (ln N, ln k), constant beyond the end sizes."""
    xs = np.unique(x_N)
    lk = np.array([np.mean(np.log(k_N[x_N == v])) for v in xs])
    return np.exp(np.interp(x_star, xs, lk))


def fit_isoflop(
    n_params,
    n_tokens,
    flops,
    loss,
    *,
    rtol: float = DEFAULT_RTOL,
    n_bootstrap: int = 0,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    keep: int | None = None,
    loss_window: float | None = None,
) -> dict:
    """Approach 2: ``N_opt = k_N·C^a`` and ``D_opt = k_D·C^b`` from IsoFLOP parabola minima.

    ``keep`` / ``loss_window`` select the points near each budget's minimum
    (:func:`select_near_minimum`); budgets whose vertex lies outside their sampled sizes are
    excluded and listed under ``excluded_budgets`` with a line in ``warnings``.

    Returns a JSON-able dict: ``a``, ``b``, ``N_coef`` (k_N), ``D_coef`` (k_D) (also under
    ``params``), ``budgets`` (one entry per usable budget), ``objective`` (sum of squared
    parabola residuals in loss, nats²), ``residuals``, ``n_points``, ``n_budgets``,
    ``selection``, ``excluded_budgets``, ``warnings`` and with ``n_bootstrap > 0`` percentile
    ``ci`` for a, b, N_coef, D_coef.
    """
    if keep is not None and keep < 3:
        raise UserError(f"--isoflop-keep must be at least 3 (a parabola has 3 coefficients), got {keep}")
    if loss_window is not None and not loss_window > 0:
        raise UserError(f"--isoflop-window must be positive, got {loss_window}")
    profiles, labels, excluded = isoflop_profiles(
        n_params, n_tokens, flops, loss, rtol=rtol, keep=keep, loss_window=loss_window
    )
    warnings = [f"approach 2: budget C = {e['flops']:.3g} excluded ({e['reason']})" for e in excluded]
    if len(profiles) < 2:
        raise UserError(
            "isoflop needs at least 2 FLOP budgets with 3 or more distinct model sizes each and the "
            f"parabola's vertex inside them (found {len(profiles)} usable budget(s); budgets group runs "
            f"whose FLOPs agree within {rtol:.0%})" + (f"; {'; '.join(warnings)}" if warnings else "")
        )
    c_g = np.array([p["flops"] for p in profiles])
    fit_n = fit_power_law(c_g, [p["N_opt"] for p in profiles], form="coef", names=("N_coef", "a"))
    fit_d = fit_power_law(c_g, [p["D_opt"] for p in profiles], form="coef", names=("D_coef", "b"))
    resid = np.concatenate([p["residuals"] for p in profiles])
    params = {"a": fit_n["a"], "b": fit_d["b"], "N_coef": fit_n["N_coef"], "D_coef": fit_d["D_coef"]}
    result = {
        "law": "isoflop",
        "formula": "N_opt = N_coef * C^a, D_opt = D_coef * C^b (parabola minima of L vs ln N per FLOP budget)",
        "param_names": list(params),
        "params": params,
        **params,
        "objective": float(np.sum(resid**2)),
        "objective_kind": "sum of squared parabola residuals (loss)",
        "residuals": residual_stats(resid),
        "power_law_residuals": {"N_opt": fit_n["residuals"], "D_opt": fit_d["residuals"]},
        "n_points": int(sum(p["n_points"] for p in profiles)),
        "n_budgets": len(profiles),
        "selection": {
            "keep": keep,
            "loss_window": loss_window,
            "rule": "all points" if keep is None and loss_window is None else "near the minimum",
        },
        "budgets": [{k: v for k, v in p.items() if k not in ("index", "residuals")} for p in profiles],
        "excluded_budgets": excluded,
        "warnings": warnings,
    }
    if n_bootstrap > 0:
        result.update(bootstrap_fields(_bootstrap(profiles, n_params, n_tokens, flops, loss, n_bootstrap, seed), level))
    return result


def _bootstrap(profiles, n_params, n_tokens, flops, loss, n_bootstrap, seed) -> dict[str, np.ndarray]:
    """Points resampled within each used budget (its selected points); a resample whose vertex
    leaves the sampled sizes or whose parabola opens downwards is NaN for that budget, and the
    power laws are refitted on the remaining budgets (NaN when fewer than 2 remain)."""
    n = np.asarray(n_params, np.float64)
    k_all = np.asarray(flops, np.float64) / (n * np.asarray(n_tokens, np.float64))
    l = np.asarray(loss, np.float64)
    log_n_opt = np.empty((n_bootstrap, len(profiles)))
    log_d_opt = np.empty_like(log_n_opt)
    for j, p in enumerate(profiles):
        idx = np.asarray(p["index"])
        x = np.log(n[idx])
        counts = resample_counts(idx.size, n_bootstrap, seed=seed + 7919 * j)
        xs, _ = _vertices(parabola_fits(x, l[idx], counts))
        xs = np.where((xs >= x.min()) & (xs <= x.max()), xs, np.nan)
        log_n_opt[:, j] = xs
        k = _k_at(x, k_all[idx], np.where(np.isfinite(xs), xs, x.mean()))
        log_d_opt[:, j] = np.log(p["flops"] / k) - xs
    log_c = np.log([p["flops"] for p in profiles])
    ok = np.isfinite(log_n_opt)
    ni, a = fit_loglinear(log_c, np.where(ok, log_n_opt, 0.0), ok.astype(float))
    di, b = fit_loglinear(log_c, np.where(ok, log_d_opt, 0.0), ok.astype(float))
    return {"a": a, "b": b, "N_coef": np.exp(ni), "D_coef": np.exp(di)}


def predict_optimum(result: dict, flops) -> tuple[np.ndarray, np.ndarray]:
    """``(N_opt, D_opt)`` of an approach-1 or approach-2 result at ``flops`` (FLOPs)."""
    c = np.asarray(flops, np.float64)
    return result["N_coef"] * c ** result["a"], result["D_coef"] * c ** result["b"]
