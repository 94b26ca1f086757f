"""Chinchilla approach 1: the minimum-loss envelope over runs per FLOP budget.

With loss curves (run directories, or a CSV with a ``run`` column): on a log-spaced grid of
FLOP budgets C, every run whose curve spans C gives its loss at C (log-log interpolation along
its curve); the run with the lowest loss sets ``N_opt(C)`` (its parameters) and ``D_opt(C)``
(its tokens at C).  With final points only (a CSV): runs are grouped into FLOP budgets and the
lowest-loss run of each budget with at least two runs is taken; if no budget has two runs, the
Pareto frontier (each point with lower loss than every point of smaller compute) is used.  Then
``N_opt = k_N·C^a`` and ``D_opt = k_D·C^b`` are fitted in log space (C in FLOPs, N
parameters, D tokens).

``method="hull"``: instead of the minimum at each budget, the lower convex hull of (ln C, ln L)
over every logged point (or final point), up to the lowest loss, over the compute where at
least two runs have points; along curves it is read on the same log-spaced grid, each budget
taking the run of the nearest hull vertex. A run whose curve touches the minimum envelope
only where a mixture of two other runs does better never counts as optimal.

Bootstrap: runs are resampled with replacement (a run's envelope points come and go together,
so the intervals see that neighbouring budgets of one curve are not independent points); each
resample's envelope is recomputed from the drawn runs and its points weighted by the run's
draw count.
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL, resample_counts
from scalinglab.scaling.budgets import DEFAULT_RTOL, group_budgets
from scalinglab.scaling.load import Curve, RunTable
from scalinglab.scaling.powerlaw import bootstrap_fields, fit_loglinear, fit_power_law

N_GRID = 60
METHODS = ("min", "hull")


def envelope_points(
    table: RunTable, *, rtol: float = DEFAULT_RTOL, use_curves: bool = True, method: str = "min"
) -> dict:
    """Envelope ``{"flops", "N_opt", "D_opt", "loss", "run", "method"}`` (arrays over budgets)."""
    return _Envelope(table, rtol=rtol, use_curves=use_curves, method=method)(np.ones(len(table), bool))


class _Envelope:
    """The envelope of any subset of the table's runs (precomputes the curves on the grid once)."""

    def __init__(self, table: RunTable, *, rtol: float, use_curves: bool, method: str):
        if method not in METHODS:
            raise UserError(f"unknown envelope method {method!r}; choose from {', '.join(METHODS)}")
        self.table, self.method = table, method
        curves = table.curves if use_curves and table.curves is not None else None
        self.use_curves = (
            curves is not None and all(cv is not None and cv.flops.size >= 2 for cv in curves) and len(table) >= 2
        )
        if self.use_curves:
            self.curves = curves
            lo = min(cv.flops.min() for cv in curves)
            hi = max(cv.flops.max() for cv in curves)
            self.grid = np.geomspace(lo, hi, N_GRID)
            self.loss_RC = np.full((len(curves), self.grid.size), np.nan)
            self.tok_RC = np.full_like(self.loss_RC, np.nan)
            for r, cv in enumerate(curves):
                self.loss_RC[r], self.tok_RC[r] = _interp_loglog(cv, self.grid)
        else:
            self.labels, self.budgets = group_budgets(table.flops, rtol)

    def __call__(self, present_R: np.ndarray) -> dict:
        t = self.table
        if self.method == "hull":
            return self._hull(present_R)
        if self.use_curves:
            loss_RC = np.where(present_R[:, None], self.loss_RC, np.nan)
            covered = np.sum(np.isfinite(loss_RC), axis=0) >= 2  # a minimum over one run says nothing
            best = np.argmin(np.where(np.isfinite(loss_RC), loss_RC, np.inf), axis=0)[covered]
            cols = np.flatnonzero(covered)
            return {
                "flops": self.grid[covered],
                "N_opt": t.params[best],
                "D_opt": self.tok_RC[best, cols],
                "loss": loss_RC[best, cols],
                "run": [t.names[i] for i in best],
                "run_index": best,
                "method": "loss curves",
            }
        rows = []
        for g, budget in enumerate(self.budgets):
            idx = np.flatnonzero((self.labels == g) & present_R)
            if idx.size >= 2:
                rows.append((budget, idx[np.argmin(t.loss[idx])]))
        if len(rows) >= 2:
            c = np.array([r[0] for r in rows])
            best = np.array([r[1] for r in rows])
            method = "per-budget minimum"
        else:  # Pareto frontier of final points
            order = [i for i in np.argsort(t.flops, kind="stable") if present_R[i]]
            best, running = [], np.inf
            for i in order:
                if t.loss[i] < running:
                    best.append(i)
                    running = t.loss[i]
            best = np.array(best, dtype=np.int64)
            c = t.flops[best]
            method = "pareto frontier"
        return {
            "flops": c,
            "N_opt": t.params[best],
            "D_opt": t.tokens[best] * c / t.flops[best],
            "loss": t.loss[best],
            "run": [t.names[i] for i in best],
            "run_index": best,
            "method": method,
        }

    def _hull(self, present_R: np.ndarray) -> dict:
        t = self.table
        if self.use_curves:
            run = np.concatenate([np.full(cv.flops.size, r) for r, cv in enumerate(self.curves)])
            c = np.concatenate([cv.flops for cv in self.curves])
            loss = np.concatenate([cv.loss for cv in self.curves])
            tok = np.concatenate([cv.tokens for cv in self.curves])
            # like the minimum, only where at least two runs have points: below the second-smallest
            # start (above the second-largest end) one run's curve would be the hull on its own
            lo_R = np.array([cv.flops.min() for cv in self.curves])[present_R]
            hi_R = np.array([cv.flops.max() for cv in self.curves])[present_R]
            if lo_R.size < 2:
                return {
                    "flops": np.array([]),
                    "N_opt": np.array([]),
                    "D_opt": np.array([]),
                    "loss": np.array([]),
                    "run": [],
                    "run_index": np.array([], np.int64),
                    "method": "lower convex hull of loss curves",
                }
            lo, hi = np.sort(lo_R)[1], np.sort(hi_R)[-2]
            keep = present_R[run] & (c >= lo) & (c <= hi)
            run, c, loss, tok = run[keep], c[keep], loss[keep], tok[keep]
            label = "lower convex hull of loss curves"
        else:
            run = np.flatnonzero(present_R)
            c, loss, tok = t.flops[run], t.loss[run], t.tokens[run]
            label = "lower convex hull of final points"
        v = lower_hull(np.log(c), np.log(loss))
        if not self.use_curves or v.size < 2:
            return {
                "flops": c[v],
                "N_opt": t.params[run[v]],
                "D_opt": tok[v],
                "loss": loss[v],
                "run": [t.names[i] for i in run[v]],
                "run_index": run[v],
                "method": label,
            }
        # along curves: the hull read on the log-spaced grid (as the minimum is), each budget taking
        # the run of the hull vertex nearest in ln C, so a run's many logged points weigh as the
        # stretch of compute it is optimal for, not as how often it was logged
        grid = self.grid[(self.grid >= c[v[0]]) & (self.grid <= c[v[-1]])]
        lc, lv = np.log(grid), np.log(c[v])
        j = np.clip(np.searchsorted(lv, lc), 1, v.size - 1)
        near = np.where(lc - lv[j - 1] <= lv[j] - lc, j - 1, j)
        best = run[v[near]]
        hull_loss = np.exp(np.interp(lc, lv, np.log(loss[v])))
        cols = np.searchsorted(self.grid, grid)
        tok_at = self.tok_RC[best, cols]
        d_opt = np.where(np.isfinite(tok_at), tok_at, tok[v[near]] * grid / c[v[near]])
        return {
            "flops": grid,
            "N_opt": t.params[best],
            "D_opt": d_opt,
            "loss": hull_loss,
            "run": [t.names[i] for i in best],
            "run_index": best,
            "method": label,
        }


def lower_hull(x_P: np.ndarray, y_P: np.ndarray) -> np.ndarray:
    """Indices of the vertices of the lower convex hull of points (x, y), by increasing x, from
    the smallest x up to the lowest y (Andrew's monotone chain; ties in x keep the lowest y)."""
    order = np.lexsort((y_P, x_P))
    hull: list[int] = []
    for i in order:
        if hull and x_P[hull[-1]] == x_P[i]:
            continue  # same x, higher (or equal) y
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (x_P[a] - x_P[o]) * (y_P[i] - y_P[o]) - (y_P[a] - y_P[o]) * (x_P[i] - x_P[o])
            if cross > 0:
                break
            hull.pop()
        hull.append(int(i))
    h = np.array(hull, dtype=np.int64)
    return h[: int(np.argmin(y_P[h])) + 1] if h.size else h


def _interp_loglog(curve: Curve, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loss and tokens of one run at FLOPs ``c`` (NaN outside the logged range)."""
    lf = np.log(curve.flops)
    order = np.argsort(lf)
    lf = lf[order]
    inside = (np.log(c) >= lf[0]) & (np.log(c) <= lf[-1])
    loss = np.exp(np.interp(np.log(c), lf, np.log(curve.loss[order])))
    tokens = np.exp(np.interp(np.log(c), lf, np.log(curve.tokens[order])))
    return np.where(inside, loss, np.nan), np.where(inside, tokens, np.nan)


def fit_envelope(
    table: RunTable,
    *,
    rtol: float = DEFAULT_RTOL,
    n_bootstrap: int = 0,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    use_curves: bool = True,
    method: str = "min",
) -> dict:
    """Approach 1: ``a``, ``b``, ``N_coef``, ``D_coef`` from the envelope (see module doc);
    ``method`` ``"min"`` (Hoffmann et al.) or ``"hull"`` (lower convex hull); the bootstrap
    resamples runs."""
    env_of = _Envelope(table, rtol=rtol, use_curves=use_curves, method=method)
    env = env_of(np.ones(len(table), bool))
    if np.unique(env["flops"]).size < 2 or np.unique(env["N_opt"]).size < 2:
        raise UserError(
            "envelope needs at least 2 FLOP budgets whose best runs differ in size "
            f"(found {np.unique(env['N_opt']).size} distinct optimal size(s))"
        )
    fit_n = fit_power_law(env["flops"], env["N_opt"], form="coef", names=("N_coef", "a"))
    fit_d = fit_power_law(env["flops"], env["D_opt"], form="coef", names=("D_coef", "b"))
    params = {"a": fit_n["a"], "b": fit_d["b"], "N_coef": fit_n["N_coef"], "D_coef": fit_d["D_coef"]}
    result = {
        "law": "envelope",
        "formula": "N_opt = N_coef * C^a, D_opt = D_coef * C^b ("
        + ("lowest-loss run per FLOP budget)" if method == "min" else "lower convex hull of log L vs log C)"),
        "param_names": list(params),
        "params": params,
        **params,
        "objective": fit_n["objective"] + fit_d["objective"],
        "objective_kind": "sum of squared log residuals of the N_opt and D_opt power laws",
        "residuals": {"N_opt": fit_n["residuals"], "D_opt": fit_d["residuals"]},
        "n_points": int(len(table)),
        "n_budgets": int(env["flops"].size),
        "method": env["method"],
        "envelope": method,
        "n_distinct_optimal_sizes": int(np.unique(env["N_opt"]).size),
        "budgets": [
            {"flops": float(c), "N_opt": float(n), "D_opt": float(d), "loss": float(l), "run": r}
            for c, n, d, l, r in zip(env["flops"], env["N_opt"], env["D_opt"], env["loss"], env["run"])
        ],
    }
    if n_bootstrap > 0:
        samples = _bootstrap_runs(env_of, len(table), n_bootstrap, seed)
        result.update(bootstrap_fields(samples, level))
        result["bootstrap_unit"] = "runs"
    return result


def _bootstrap_runs(env_of: _Envelope, n_runs: int, n_bootstrap: int, seed: int) -> dict[str, np.ndarray]:
    """Resample runs with replacement; refit both power laws to each resample's envelope (its
    points weighted by their run's draw count). NaN for a resample whose envelope has fewer
    than 2 distinct budgets or optimal sizes."""
    counts_KR = resample_counts(n_runs, n_bootstrap, seed=seed)
    out = {k: np.full(n_bootstrap, np.nan) for k in ("a", "b", "N_coef", "D_coef")}
    for k in range(n_bootstrap):
        env = env_of(counts_KR[k] > 0)
        if np.unique(env["flops"]).size < 2 or np.unique(env["N_opt"]).size < 2:
            continue
        w = counts_KR[k][env["run_index"]].astype(np.float64)
        lc = np.log(env["flops"])
        ni, a = fit_loglinear(lc, np.log(env["N_opt"]), w)
        di, b = fit_loglinear(lc, np.log(env["D_opt"]), w)
        out["a"][k], out["b"][k], out["N_coef"][k], out["D_coef"][k] = a, b, np.exp(ni), np.exp(di)
    return out
