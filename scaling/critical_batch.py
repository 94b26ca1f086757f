"""Empirical critical batch size from a batch-size sweep (pure analysis of run logs).

The sweep's runs come in as smoothed, monotone loss curves from :mod:`scalinglab.scaling.batch_load`
(step 1 below); nothing here imports models or training or reads files.

Pipeline (units: steps = optimizer updates, examples = sequences, tokens = examples·seq_len,
losses in nats/token):

1. **Smoothed, monotone loss curve per run** (:mod:`scalinglab.scaling.batch_load`): a centred running
   mean of the logged loss (half-width ``rel_width × step``, no lag), made non-increasing so that each
   target is crossed once; or the eval loss (``source``).
2. **Steps to a target loss L:** the crossing of that curve below L, linearly interpolated between
   the two logged steps around it; examples ``E = B·S``. When a batch size was trained at several
   learning rates (a grid sweep), its steps are the **minimum over its learning rates**, per target
   (McCandlish et al. 2018; Shallue et al. 2019; Zhang et al. 2024), and a minimum at the smallest or
   largest learning rate of the grid is flagged (``lr_at_edge``): the tuned optimum may lie outside.
3. **Trade-off per target.** McCandlish et al. (2018): (S/S_min − 1)(E/E_min − 1) = 1. With
   E = B·S this is exactly ``S(B) = S_min + E_min/B = S_min·(1 + B_crit/B)`` with
   ``B_crit = E_min/S_min``. We fit ``(log S_min, log B_crit)`` by least squares on log S (equal to
   the log-E residual, since B is exact). For fixed B_crit the optimal log S_min is a closed-form
   mean, so the fit is a 1-D profile over log B_crit: a dense grid (global, no local minima, vectorised
   over bootstrap samples) refined by parabolic interpolation. ``linear_init`` is the closed-form
   alternative (S linear in 1/B), exact on noise-free data and used as a cross-check.
4. **B_crit(L) = B*/L^(1/α_B)** (Kaplan et al. 2020): a power law fitted in log space.
5. **Intervals** by bootstrap over runs, done jointly for all targets so the B_crit(L) fit sees
   correlated resamples: case resampling of runs (resamples with fewer than 3 distinct batch sizes
   are redrawn) when the sweep has ≥ 5 runs; with 3–4 runs that would leave almost no distinct
   resamples, so the residual bootstrap is used instead (log-residuals of each run, resampled by run,
   inflated by sqrt(n/(n−2)) for the two fitted parameters).
6. **B_simple at the same losses:** the in-loop ``gns_b_simple`` (McCandlish's simple noise scale,
   in sequences) of the run that set each batch size's steps, interpolated at the step where it
   crosses the target (at the centre step of each logged window, ``gns_step``, where logged); the
   median over batch sizes is reported, plus each value. Non-positive values are kept: the windowed
   estimate's numerator or denominator can come out negative when the gradient noise swamps it, and
   dropping those would select the windows where noise happened to push the estimate up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.batch_load import MIN_BATCH_SIZES, RunCurve, check_sweep
from scalinglab.scaling.bootstrap import percentile_interval, resample_counts
from scalinglab.scaling.crossing import min_over_lr
from scalinglab.scaling.powerlaw import fit_loglinear, fit_power_law

DEFAULT_N_TARGETS = 6
DEFAULT_N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
# Default targets span [L_lo, L_hi] in log loss: L_lo is just above the highest final loss (reached by
# every run), L_hi is this fraction of the way (in log) from L_lo up to the lowest starting loss, which
# keeps the warm-up transient (where S barely depends on B) out of the fit.
UPPER_FRACTION = 0.5
LOWER_MARGIN = 0.02  # fraction of the log-loss range kept clear of the highest final loss
WARMUP_MARGIN = 3  # default targets are crossed by every run only after this many × its warmup steps


# ------------------------------------------------------------------------------------------
# Curves: steps-to-target
# ------------------------------------------------------------------------------------------
def steps_to_target(steps_T: np.ndarray, loss_T: np.ndarray, target: float) -> float:
    """First step at which ``loss_T`` reaches ``target``, linearly interpolated between logged steps.

    NaN when the curve never gets to ``target``, or already starts at or below it (the crossing is
    then before the first logged step and cannot be located).
    """
    loss_T = np.asarray(loss_T, dtype=np.float64)
    below = np.nonzero(loss_T <= target)[0]
    if len(below) == 0 or below[0] == 0:
        return math.nan
    i = below[0]
    s0, s1 = float(steps_T[i - 1]), float(steps_T[i])
    y0, y1 = float(loss_T[i - 1]), float(loss_T[i])
    return s0 + (y0 - target) / (y0 - y1) * (s1 - s0)


def interp_at_step(steps_T: np.ndarray, values_T: np.ndarray, step: float) -> float:
    """``values_T`` linearly interpolated at ``step``, using its finite entries (of any sign: a
    non-positive noise-scale estimate is noise, and dropping it would bias the rest upward)."""
    values_T = np.asarray(values_T, dtype=np.float64)
    ok = np.isfinite(values_T) & np.isfinite(steps_T)
    if not ok.any() or not math.isfinite(step):
        return math.nan
    s, v = steps_T[ok], values_T[ok]
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    if step < s[0] or step > s[-1]:
        return math.nan
    return float(np.interp(step, s, v))


def default_targets(curves: Sequence[RunCurve], n: int = DEFAULT_N_TARGETS) -> np.ndarray:
    """``n`` target losses evenly spaced in log loss, all reached at every batch size (descending).

    From just above the highest loss that the best run of every batch size reaches
    (:meth:`RunCurve.reliable_min`; a grid's poor learning rates need not get there) up to
    ``UPPER_FRACTION`` of the way (in log) to the lowest starting loss, and no higher than any run's
    loss at ``WARMUP_MARGIN`` × its warmup, so that every crossing happens after the warmup transient.
    """
    best: dict[int, float] = {}
    for c in curves:
        best[c.batch_size] = min(best.get(c.batch_size, math.inf), c.reliable_min())
    lo = max(best.values())  # every batch size gets at least this low
    start = min(float(c.loss[0]) for c in curves)
    if not start > lo:
        raise UserError(
            "the runs' loss curves do not overlap: no loss is both below every start and reached by every run"
        )
    log_lo, log_start = math.log(lo), math.log(start)
    span = log_start - log_lo
    log_hi = log_lo + UPPER_FRACTION * span
    after_warmup = [
        float(np.interp(WARMUP_MARGIN * c.warmup, c.steps, c.loss))
        for c in curves
        if c.warmup > 0 and WARMUP_MARGIN * c.warmup <= c.steps[-1]
    ]
    if after_warmup and math.log(min(after_warmup)) > log_lo + 4 * LOWER_MARGIN * span:
        log_hi = min(log_hi, math.log(min(after_warmup)))
    return np.exp(np.linspace(log_hi, log_lo + LOWER_MARGIN * span, n))


def steps_matrix(curves: Sequence[RunCurve], targets_K: np.ndarray) -> np.ndarray:
    """Steps to reach each target for each run, shape [K, R] (NaN where not reached)."""
    return np.array([[steps_to_target(c.steps, c.loss, t) for c in curves] for t in targets_K])


# ------------------------------------------------------------------------------------------
# The hyperbola S(B) = S_min + E_min/B
# ------------------------------------------------------------------------------------------
def hyperbola_steps(batch_size, s_min, e_min):
    """Steps predicted by (S/S_min − 1)(E/E_min − 1) = 1 at batch size B: S = S_min + E_min/B."""
    return s_min + e_min / np.asarray(batch_size, dtype=np.float64)


def linear_init(batch_sizes_R: np.ndarray, steps_R: np.ndarray) -> tuple[float, float]:
    """Closed-form start: S = a + b/B by least squares weighted by 1/S² (relative errors) → (a, b)."""
    b_R = np.asarray(batch_sizes_R, dtype=np.float64)
    s_R = np.asarray(steps_R, dtype=np.float64)
    design = np.stack([1.0 / s_R, 1.0 / (b_R * s_R)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(s_R), rcond=None)
    return float(a), float(b)


def _profile_grid(batch_sizes_R: np.ndarray, n_grid: int) -> np.ndarray:
    """Grid of log B_crit: from 1e-3·B_min to 1e3·B_max (beyond that B_crit is unidentified)."""
    b = np.asarray(batch_sizes_R, dtype=np.float64)
    return np.linspace(math.log(b.min()) - 3 * math.log(10), math.log(b.max()) + 3 * math.log(10), n_grid)


def fit_hyperbola_batch(
    batch_sizes_R: np.ndarray,
    steps_NR: np.ndarray,
    weights_NR: np.ndarray | None = None,
    *,
    n_grid: int = 1201,
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares fit of log S = log S_min + log(1 + B_crit/B) for N problems at once.

    ``batch_sizes_R`` [R] (sequences), ``steps_NR`` [N, R] (NaN = run did not reach the target,
    ignored), ``weights_NR`` [N, R] (e.g. bootstrap counts; default 1). Returns ``(s_min_N,
    b_crit_N, at_bound_N)``. For fixed B_crit the optimal log S_min is the weighted mean of
    log S − log(1 + B_crit/B), so B_crit is profiled on a log grid (global minimum) and refined by a
    parabola through the three grid points around the minimum; ``at_bound`` marks fits whose
    optimum is at the edge of the grid (B_crit then only bounded, not determined). Problems with
    fewer than 3 distinct batch sizes of positive weight give NaN.
    """
    b_R = np.asarray(batch_sizes_R, dtype=np.float64)
    y_NR = np.log(np.asarray(steps_NR, dtype=np.float64))
    w_NR = np.ones_like(y_NR) if weights_NR is None else np.asarray(weights_NR, dtype=np.float64)
    w_NR = np.where(np.isfinite(y_NR), w_NR, 0.0)
    y_NR = np.where(w_NR > 0, y_NR, 0.0)
    grid_G = _profile_grid(b_R, n_grid)
    g_RG = np.log1p(np.exp(grid_G)[None, :] / b_R[:, None])
    parts = [
        _fit_chunk(b_R, g_RG, grid_G, y_NR[i : i + chunk], w_NR[i : i + chunk]) for i in range(0, len(y_NR), chunk)
    ]
    s_min, b_crit, bound = (np.concatenate(p) for p in zip(*parts))
    distinct_N = np.array([len(np.unique(b_R[w > 0])) for w in w_NR])
    bad = distinct_N < MIN_BATCH_SIZES
    return np.where(bad, np.nan, s_min), np.where(bad, np.nan, b_crit), bound & ~bad


def _fit_chunk(b_R, g_RG, grid_G, y_NR, w_NR):
    sw_N = np.maximum(w_NR.sum(1), 1e-300)

    def profile(r_NRG):  # residuals before removing log S_min → (weighted SSE, optimal log S_min)
        mean_NG = (w_NR[:, :, None] * r_NRG).sum(1) / sw_N[:, None]
        return (w_NR[:, :, None] * (r_NRG - mean_NG[:, None, :]) ** 2).sum(1), mean_NG

    sse_NG, _ = profile(y_NR[:, :, None] - g_RG[None])
    n_g = len(grid_G)
    k_N = np.argmin(sse_NG, axis=1)
    at_bound = (k_N == 0) | (k_N == n_g - 1)
    kc = np.clip(k_N, 1, n_g - 2)
    rows = np.arange(len(y_NR))
    h = grid_G[1] - grid_G[0]
    log_c_N = grid_G[kc] + _parabola_vertex(sse_NG[rows, kc - 1], sse_NG[rows, kc], sse_NG[rows, kc + 1], h)
    for _ in range(2):  # two finer parabolic passes around the estimate: error ~ (h/40)^3
        h = h / 20
        pts_N3 = log_c_N[:, None] + h * np.array([-1.0, 0.0, 1.0])
        g_NR3 = np.log1p(np.exp(pts_N3)[:, None, :] / b_R[None, :, None])
        f_N3, _ = profile(y_NR[:, :, None] - g_NR3)
        log_c_N = log_c_N + _parabola_vertex(f_N3[:, 0], f_N3[:, 1], f_N3[:, 2], h)
    log_c_N = np.where(at_bound, grid_G[k_N], log_c_N)
    g_NR1 = np.log1p(np.exp(log_c_N)[:, None] / b_R[None, :])[:, :, None]
    _, log_smin = profile(y_NR[:, :, None] - g_NR1)
    return np.exp(log_smin[:, 0]), np.exp(log_c_N), at_bound


def _parabola_vertex(f0, f1, f2, h):
    """Offset from the middle point of the vertex of the parabola through (−h, f0), (0, f1), (h, f2),
    clipped to [−h, h] (0 where the three points are not convex)."""
    denom = f0 - 2 * f1 + f2
    shift = np.where(denom > 0, 0.5 * h * (f0 - f2) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(shift, -h, h)


def fit_hyperbola(batch_sizes_R: Sequence[float], steps_R: Sequence[float]) -> dict[str, Any]:
    """Fit one trade-off curve → ``S_min`` (steps), ``E_min`` (examples), ``B_crit`` (sequences).

    Needs ≥ 3 distinct batch sizes with finite steps (else UserError). See :func:`fit_hyperbola_batch`.
    """
    b = np.asarray(batch_sizes_R, dtype=np.float64)
    s = np.asarray(steps_R, dtype=np.float64)
    ok = np.isfinite(s) & (s > 0)
    if len(np.unique(b[ok])) < MIN_BATCH_SIZES:
        raise UserError(f"need steps at >= {MIN_BATCH_SIZES} distinct batch sizes to fit S_min, E_min")
    s_min, b_crit, at_bound = fit_hyperbola_batch(b, np.where(ok, s, np.nan)[None])
    return {
        "S_min": float(s_min[0]),
        "E_min": float(s_min[0] * b_crit[0]),
        "B_crit": float(b_crit[0]),
        "at_bound": bool(at_bound[0]),
    }


# ------------------------------------------------------------------------------------------
# B_crit(L) = B* / L^(1/α_B)
# ------------------------------------------------------------------------------------------
def fit_bcrit_power_law(loss_K: Sequence[float], b_crit_K: Sequence[float]) -> dict[str, float]:
    """Fit B_crit(L) = B*/L^(1/α_B) in log space (the shared power-law helper).

    Returns ``B_star`` (sequences, the value at L = 1 nat/token), ``alpha_B`` and ``inv_alpha_B``
    (= 1/α_B, the log-log slope with its sign flipped; finite even when B_crit is flat in L).
    """
    fit = fit_power_law(loss_K, b_crit_K, form="coef", names=("B_star", "k"), law="B_crit(L)")
    return {"B_star": fit["B_star"], "alpha_B": _alpha(fit["k"]), "inv_alpha_B": -fit["k"]}


def _alpha(slope):
    """α_B from the log-log slope k = −1/α_B (NaN where the slope is 0)."""
    slope = np.asarray(slope, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(slope != 0, -1.0 / np.where(slope != 0, slope, 1.0), np.nan)
    return float(alpha) if alpha.ndim == 0 else alpha


# ------------------------------------------------------------------------------------------
# The whole analysis
# ------------------------------------------------------------------------------------------
def bootstrap_fits(
    batch_sizes_R: np.ndarray,
    steps_KR: np.ndarray,
    s_min_K: np.ndarray,
    b_crit_K: np.ndarray,
    n_boot: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Joint bootstrap over runs → (S_min [n_boot, K], B_crit [n_boot, K], method).

    ``"cases"`` (≥ 5 runs): runs resampled with replacement as count weights, the same draw for every
    target; resamples with < 3 distinct batch sizes give NaN (left out of the intervals).
    ``"residuals"`` (3–4 runs): each run's log residuals (inflated by sqrt(n/(n−2))) resampled by run
    and added to the fitted curve.
    """
    n_runs, n_k = len(batch_sizes_R), len(steps_KR)
    if n_runs >= 5:
        counts_NR = resample_counts(n_runs, n_boot, seed=seed).astype(np.float64)
        steps = np.broadcast_to(steps_KR[None], (n_boot, n_k, n_runs))
        weights = np.broadcast_to(counts_NR[:, None, :], (n_boot, n_k, n_runs))
        method = "cases"
    else:
        fitted_KR = hyperbola_steps(batch_sizes_R[None], s_min_K[:, None], (s_min_K * b_crit_K)[:, None])
        resid_KR = np.log(steps_KR) - np.log(fitted_KR)
        n_ok = np.isfinite(resid_KR).sum(1, keepdims=True)
        resid_KR = resid_KR * np.sqrt(n_ok / np.maximum(n_ok - 2, 1))
        idx_NR = np.random.default_rng(seed).integers(0, n_runs, size=(n_boot, n_runs))
        r_NKR = np.nan_to_num(np.transpose(resid_KR[:, idx_NR], (1, 0, 2)), nan=0.0)
        steps = np.where(np.isfinite(steps_KR)[None], fitted_KR[None] * np.exp(r_NKR), np.nan)
        weights = None
        method = "residuals"
    flat_w = None if weights is None else weights.reshape(n_boot * n_k, n_runs)
    s_min, b_crit, _ = fit_hyperbola_batch(batch_sizes_R, steps.reshape(n_boot * n_k, n_runs), flat_w)
    return s_min.reshape(n_boot, n_k), b_crit.reshape(n_boot, n_k), method


def _interval(samples: np.ndarray) -> list[float] | None:
    lo, hi = percentile_interval(samples, CI_LEVEL)
    return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else None


def _advice(batch_sizes_R, steps_R, fit: dict[str, float], seq_len: int) -> dict[str, Any]:
    """Measured batch sizes minimising examples / steps, and the fitted 2× trade-off point B = B_crit."""
    ok = np.isfinite(steps_R)
    b, s = batch_sizes_R[ok], steps_R[ok]
    i_e, i_s = int(np.argmin(b * s)), int(np.argmin(s))

    def point(batch, steps):
        return {
            "batch_size": float(batch),
            "steps": float(steps),
            "examples": float(batch * steps),
            "tokens": float(batch * steps * seq_len),
        }

    return {
        "min_examples": point(b[i_e], s[i_e]),  # measured in the sweep; the fitted limit is E_min (B → 0)
        "min_steps": point(b[i_s], s[i_s]),  # measured in the sweep; the fitted limit is S_min (B → ∞)
        "trade_off": point(fit["B_crit"], 2 * fit["S_min"]),  # B_crit: 2·S_min steps, 2·E_min examples
    }


def best_over_lr(curves: Sequence[RunCurve], steps_KR: np.ndarray) -> dict[str, np.ndarray]:
    """Reduce per-run steps [K, R] to per-batch-size steps [K, B]: the minimum over each batch size's
    learning rates (:func:`scalinglab.scaling.crossing.min_over_lr`).

    Returns ``batch_sizes`` [B] (sorted), ``steps`` [K, B], ``lr`` [K, B], ``run`` [K, B] (index
    into ``curves`` of the run that set it, −1 where no run reached the target), ``at_edge`` [K, B]
    and ``lrs`` (a list of [B] arrays: each batch size's learning rates, sorted).
    """
    sizes = sorted({c.batch_size for c in curves})
    n_k = steps_KR.shape[0]
    out = {k: np.full((n_k, len(sizes)), np.nan) for k in ("steps", "lr")}
    out["run"] = np.full((n_k, len(sizes)), -1, dtype=np.int64)
    out["at_edge"] = np.zeros((n_k, len(sizes)), dtype=bool)
    lrs_list = []
    for j, b in enumerate(sizes):
        idx = np.array([i for i, c in enumerate(curves) if c.batch_size == b])
        lrs = np.array([np.nan if curves[i].lr is None else curves[i].lr for i in idx], dtype=np.float64)
        known = np.all(np.isfinite(lrs))
        res = min_over_lr(lrs if known else np.arange(len(idx), dtype=np.float64), steps_KR[:, idx])
        out["steps"][:, j] = res["steps"]
        out["lr"][:, j] = np.where(res["index"] >= 0, lrs[np.maximum(res["index"], 0)], np.nan)
        out["run"][:, j] = np.where(res["index"] >= 0, idx[np.maximum(res["index"], 0)], -1)
        out["at_edge"][:, j] = res["at_edge"] & known & (len(np.unique(lrs)) >= 2)
        lrs_list.append(np.sort(lrs))
    out["batch_sizes"] = np.array(sizes, dtype=np.float64)
    out["lrs"] = lrs_list
    return out


def analyze_sweep(
    curves: Sequence[RunCurve],
    targets: Sequence[float] | None = None,
    *,
    n_targets: int = DEFAULT_N_TARGETS,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the trade-off per target loss, B_crit(L), and B_simple at the same losses (fit-batch JSON).

    ``curves`` may hold several runs per batch size (learning rates of a grid): each batch size's
    steps to a target are the minimum over them (:func:`best_over_lr`). Non-finite numbers are
    returned as NaN; :func:`scalinglab.fileio.json_safe` turns them into null for output.
    """
    check_sweep(curves)
    curves = sorted(curves, key=lambda c: (c.batch_size, c.lr if c.lr is not None else 0.0))
    seq_len = curves[0].seq_len
    if targets is None:
        targets_K = default_targets(curves, n_targets)
    else:
        targets_K = np.array(sorted({float(t) for t in targets}, reverse=True), dtype=np.float64)
        if len(targets_K) == 0 or not np.all(np.isfinite(targets_K) & (targets_K > 0)):
            raise UserError("target losses must be positive numbers")
    best = best_over_lr(curves, steps_matrix(curves, targets_K))
    b_R, steps_KR = best["batch_sizes"], best["steps"]
    for t, s_R in zip(targets_K, steps_KR):
        ok = np.isfinite(s_R)
        if not ok.any():
            lowest = min(float(np.min(c.loss)) for c in curves)
            raise UserError(f"no run reaches target loss {t:.4g} (the lowest smoothed loss of any run is {lowest:.4g})")
        n_b = len(np.unique(b_R[ok]))
        if n_b < MIN_BATCH_SIZES:
            raise UserError(
                f"target loss {t:.4g} is reached (after the first logged step) at only {n_b} batch size(s); "
                f"need >= {MIN_BATCH_SIZES}"
            )

    n_k = len(targets_K)
    smin_K, bcrit_K, bound_K = fit_hyperbola_batch(b_R, steps_KR)
    emin_K = smin_K * bcrit_K
    nan_law = {"B_star": math.nan, "alpha_B": math.nan, "inv_alpha_B": math.nan}
    law = fit_bcrit_power_law(targets_K, bcrit_K) if n_k >= 2 else nan_law
    smin_NK, bcrit_NK, ci_method = bootstrap_fits(b_R, steps_KR, smin_K, bcrit_K, n_bootstrap, seed)
    if n_k >= 2:
        ok_N = np.all(np.isfinite(bcrit_NK), axis=1)
        logb = np.log(np.where(ok_N[:, None], bcrit_NK, 1.0))
        icpt_N, slope_N = fit_loglinear(np.log(targets_K), logb)
        icpt_N, slope_N = np.where(ok_N, icpt_N, np.nan), np.where(ok_N, slope_N, np.nan)
    else:
        icpt_N = slope_N = np.full(len(bcrit_NK), np.nan)

    # the in-loop simple noise scale of the run that set each batch size's steps, where it crosses each target
    def b_simple_at(i: int, step: float) -> float:
        if i < 0:
            return math.nan
        c = curves[i]
        return interp_at_step(c.steps if c.b_simple_step is None else c.b_simple_step, c.b_simple, step)

    bsimple_KR = np.array(
        [[b_simple_at(i, s) for i, s in zip(run_R, s_R)] for run_R, s_R in zip(best["run"], steps_KR)]
    )
    sizes = [int(b) for b in b_R]
    warnings = [
        f"batch size {b}: the best learning rate is at the {'low' if lr == lrs[0] else 'high'} edge of its grid "
        f"({lr:.3g}) for target loss {t:.4g}; extend the grid (batch-sweep --extend-grid)"
        for k, t in enumerate(targets_K)
        for b, lr, lrs, edge in zip(sizes, best["lr"][k], best["lrs"], best["at_edge"][k])
        if edge
    ]

    out_targets = []
    for k, loss in enumerate(targets_K):
        fit = {"S_min": float(smin_K[k]), "E_min": float(emin_K[k]), "B_crit": float(bcrit_K[k])}
        bs_ok = bsimple_KR[k][np.isfinite(bsimple_KR[k])]
        out_targets.append(
            {
                "loss": float(loss),
                **fit,
                "B_crit_tokens": fit["B_crit"] * seq_len,
                "E_min_tokens": fit["E_min"] * seq_len,
                "at_bound": bool(bound_K[k]),
                "ci": {
                    "S_min": _interval(smin_NK[:, k]),
                    "E_min": _interval(smin_NK[:, k] * bcrit_NK[:, k]),
                    "B_crit": _interval(bcrit_NK[:, k]),
                },
                "b_simple": float(np.median(bs_ok)) if len(bs_ok) else None,
                "b_simple_by_run": {str(b): float(v) for b, v in zip(sizes, bsimple_KR[k])},
                "runs": [
                    {
                        "batch_size": b,
                        "steps": float(s),
                        "examples": float(b * s),
                        "tokens": float(b * s * seq_len),
                        "lr": float(lr),
                        "run": curves[i].name if i >= 0 else None,
                        "lr_at_edge": bool(edge),
                    }
                    for b, s, lr, i, edge in zip(sizes, steps_KR[k], best["lr"][k], best["run"][k], best["at_edge"][k])
                ],
                "advice": _advice(b_R, steps_KR[k], fit, seq_len),
            }
        )

    return {
        "kind": "fit-batch",
        "seq_len": seq_len,
        "units": {
            "loss": "nats/token",
            "S": "steps",
            "E": "examples (sequences)",
            "B": "sequences",
            "*_tokens": "tokens (sequences x seq_len)",
        },
        "batch_sizes": sizes,
        "loss_curve": {"source": curves[0].source, "smooth_rel_width": curves[0].rel_width, "monotone": True},
        "runs": [
            {
                "name": c.name,
                "batch_size": c.batch_size,
                "lr": c.lr,
                "complete": c.complete,
                "last_step": float(c.steps[-1]),
                "min_smoothed_loss": float(np.min(c.loss)),
            }
            for c in curves
        ],
        "lr_by_batch": {
            str(b): {
                "lrs": [float(x) for x in lrs],
                "best_lr": [float(x) for x in best["lr"][:, j]],
                "at_edge": [bool(x) for x in best["at_edge"][:, j]],
            }
            for j, (b, lrs) in enumerate(zip(sizes, best["lrs"]))
        },
        "warnings": warnings,
        "targets": out_targets,
        "B_star": law["B_star"],
        "B_star_tokens": law["B_star"] * seq_len,
        "alpha_B": law["alpha_B"],
        "inv_alpha_B": law["inv_alpha_B"],
        "ci": {
            "B_star": _interval(np.exp(icpt_N)),
            "alpha_B": _interval(_alpha(slope_N)),
            "inv_alpha_B": _interval(-slope_N),
        },
        "b_simple": {
            "loss": [float(t) for t in targets_K],
            "B_simple": [o["b_simple"] for o in out_targets],
            "negative_values": "kept (noise; never filtered by sign)",
        },
        "bcrit_rises_as_loss_falls": bool(np.all(np.diff(bcrit_K) > 0)) if n_k >= 2 else None,
        "bootstrap": {
            "n": int(n_bootstrap),
            "method": ci_method,
            "level": CI_LEVEL,
            "seed": seed,
            "n_failed": int(np.sum(~np.all(np.isfinite(bcrit_NK), axis=1))),
            "unit": "batch sizes (each with its best learning rate per target)",
        },
    }
