"""Chinchilla approach 1: the minimum-loss envelope over runs per FLOP budget.

With loss curves (run directories): on a log-spaced grid of FLOP budgets C, every run whose
curve spans C gives its loss at C (log-log interpolation along its curve); the run with the
lowest loss sets ``N_opt(C)`` (its parameters) and ``D_opt(C)`` (its tokens at C).  With final
points only (a CSV): runs are grouped into FLOP budgets and the lowest-loss run of each budget
with at least two runs is taken; if no budget has two runs, the Pareto frontier (each point
with lower loss than every point of smaller compute) is used.  Then ``N_opt = k_N·C^a`` and
``D_opt = k_D·C^b`` are fitted in log space (C in FLOPs, N parameters, D tokens).
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL
from scalinglab.scaling.budgets import DEFAULT_RTOL, group_budgets
from scalinglab.scaling.load import Curve, RunTable
from scalinglab.scaling.powerlaw import fit_power_law

N_GRID = 60


def envelope_points(table: RunTable, *, rtol: float = DEFAULT_RTOL, use_curves: bool = True) -> dict:
    """Envelope ``{"flops", "N_opt", "D_opt", "loss", "run", "method"}`` (arrays over budgets)."""
    curves = table.curves if use_curves and table.curves is not None else None
    if curves is not None and all(cv is not None and cv.flops.size >= 2 for cv in curves) and len(table) >= 2:
        return _from_curves(table, curves)
    labels, budgets = group_budgets(table.flops, rtol)
    rows = []
    for g, budget in enumerate(budgets):
        idx = np.flatnonzero(labels == g)
        if idx.size >= 2:
            rows.append((budget, idx[np.argmin(table.loss[idx])]))
    if len(rows) >= 2:
        c = np.array([r[0] for r in rows])
        best = np.array([r[1] for r in rows])
        method = "per-budget minimum"
    else:  # Pareto frontier of final points
        order = np.argsort(table.flops, kind="stable")
        best, running = [], np.inf
        for i in order:
            if table.loss[i] < running:
                best.append(i)
                running = table.loss[i]
        best = np.array(best)
        c = table.flops[best]
        method = "pareto frontier"
    return {"flops": c, "N_opt": table.params[best], "D_opt": table.tokens[best] * c / table.flops[best],
            "loss": table.loss[best], "run": [table.names[i] for i in best], "method": method}


def _interp_loglog(curve: Curve, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss and tokens of one run at FLOPs ``c`` (NaN outside the logged range)."""
    lf = np.log(curve.flops)
    order = np.argsort(lf)
    lf = lf[order]
    inside = (np.log(c) >= lf[0]) & (np.log(c) <= lf[-1])
    loss = np.exp(np.interp(np.log(c), lf, np.log(curve.loss[order])))
    tokens = np.exp(np.interp(np.log(c), lf, np.log(curve.tokens[order])))
    return np.where(inside, loss, np.nan), np.where(inside, tokens, np.nan)


def _from_curves(table: RunTable, curves: list[Curve]) -> dict:
    lo = min(cv.flops.min() for cv in curves)
    hi = max(cv.flops.max() for cv in curves)
    grid = np.geomspace(lo, hi, N_GRID)
    loss_RC = np.full((len(curves), grid.size), np.nan)
    tok_RC = np.full_like(loss_RC, np.nan)
    for r, cv in enumerate(curves):
        loss_RC[r], tok_RC[r] = _interp_loglog(cv, grid)
    covered = np.sum(np.isfinite(loss_RC), axis=0) >= 2  # a minimum over one run says nothing
    grid, loss_RC, tok_RC = grid[covered], loss_RC[:, covered], tok_RC[:, covered]
    best = np.argmin(np.where(np.isfinite(loss_RC), loss_RC, np.inf), axis=0)
    cols = np.arange(grid.size)
    return {"flops": grid, "N_opt": table.params[best], "D_opt": tok_RC[best, cols], "loss": loss_RC[best, cols],
            "run": [table.names[i] for i in best], "method": "loss curves"}


def fit_envelope(table: RunTable, *, rtol: float = DEFAULT_RTOL, n_bootstrap: int = 0,
                 level: float = DEFAULT_LEVEL, seed: int = 0, use_curves: bool = True) -> dict:
    """Approach 1: ``a``, ``b``, ``N_coef``, ``D_coef`` from the envelope (see module doc).

    The bootstrap resamples envelope points (budgets), so its intervals ignore that adjacent
    budgets of a curve envelope are correlated (they are optimistic for dense grids).
    """
    env = envelope_points(table, rtol=rtol, use_curves=use_curves)
    if np.unique(env["flops"]).size < 2 or np.unique(env["N_opt"]).size < 2:
        raise UserError("envelope needs at least 2 FLOP budgets whose best runs differ in size "
                        f"(found {np.unique(env['N_opt']).size} distinct optimal size(s))")
    fit_n = fit_power_law(env["flops"], env["N_opt"], form="coef", names=("N_coef", "a"),
                          n_bootstrap=n_bootstrap, level=level, seed=seed)
    fit_d = fit_power_law(env["flops"], env["D_opt"], form="coef", names=("D_coef", "b"),
                          n_bootstrap=n_bootstrap, level=level, seed=seed)
    params = {"a": fit_n["a"], "b": fit_d["b"], "N_coef": fit_n["N_coef"], "D_coef": fit_d["D_coef"]}
    result = {
        "law": "envelope",
        "formula": "N_opt = N_coef * C^a, D_opt = D_coef * C^b (lowest-loss run per FLOP budget)",
        "param_names": list(params), "params": params, **params,
        "objective": fit_n["objective"] + fit_d["objective"],
        "objective_kind": "sum of squared log residuals of the N_opt and D_opt power laws",
        "residuals": {"N_opt": fit_n["residuals"], "D_opt": fit_d["residuals"]},
        "n_points": int(len(table)), "n_budgets": int(env["flops"].size), "method": env["method"],
        "budgets": [{"flops": float(c), "N_opt": float(n), "D_opt": float(d), "loss": float(l), "run": r}
                    for c, n, d, l, r in zip(env["flops"], env["N_opt"], env["D_opt"], env["loss"], env["run"])],
    }
    if n_bootstrap > 0:
        result["ci"] = {**fit_n["ci"], **fit_d["ci"]}
        result["ci_level"] = level
        result["n_bootstrap"] = n_bootstrap
        result["bootstrap_samples"] = {**fit_n["bootstrap_samples"], **fit_d["bootstrap_samples"]}
    return result
