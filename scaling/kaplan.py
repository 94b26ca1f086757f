"""Kaplan et al. (2020) scaling laws.  Units: N non-embedding parameters, D tokens, C FLOPs,
S optimisation steps, L loss (nats/token).

- ``L(N) = (N_c/N)^alpha_N``: for each model size (within 1 %), its lowest loss (the best-
  trained run of that size), fitted in log space.
- ``L(D) = (D_c/D)^alpha_D``: for each token count (within 1 %), the lowest loss over sizes.
- ``L(C) = (C_c/C)^alpha_C``: the compute-efficient frontier (approach-1 envelope) vs C.
  Kaplan's C_min also corrects for the batch size; here C is the FLOPs actually spent.
- ``L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``: all points, least squares on log L
  (multi-start L-BFGS, vmapped, as for approach 3).
- ``L(N, S) = (N_c/N)^alpha_N + (S_c/S_min)^alpha_S``: points (N, S_min, L) along every run's
  curve; S_min is the step count at the critical batch, ``S/(1 + B_crit(L)/B)``, with B_crit(L)
  from a batch sweep's fit or, without one, from the runs' in-loop B_simple
  (:func:`fit_kaplan_ns_table`; the result says which under ``bcrit.source``).
- ``L(C_min) = (C_c/C_min)^alpha_C``: the frontier of curves whose compute is
  ``C_min = C/(1 + B/B_crit(L))`` (:func:`fit_kaplan_cmin`).
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling import multistart
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL, resample_counts
from scalinglab.scaling.budgets import group_budgets
from scalinglab.scaling.load import RunTable
from scalinglab.scaling.powerlaw import bootstrap_fields, check_positive, fit_power_law
from scalinglab.scaling.residuals import residual_stats

GROUP_RTOL = 0.01
MAX_ITER = 400


def _lowest_loss_per(x: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, _ = group_budgets(x, GROUP_RTOL)
    keep = [np.flatnonzero(labels == g)[np.argmin(loss[labels == g])] for g in range(labels.max() + 1)]
    return x[keep], loss[keep]


def fit_kaplan_n(table: RunTable, **kw) -> dict:
    """``L(N) = (N_c/N)^alpha_N`` on the lowest loss of each model size (see module doc)."""
    x, y = _lowest_loss_per(table.params, table.loss)
    return _single(x, y, ("N_c", "alpha_N"), "kaplan-n", "L(N) = (N_c / N)^alpha_N", **kw)


def fit_kaplan_d(table: RunTable, **kw) -> dict:
    """``L(D) = (D_c/D)^alpha_D`` on the lowest loss at each token count."""
    x, y = _lowest_loss_per(table.tokens, table.loss)
    return _single(x, y, ("D_c", "alpha_D"), "kaplan-d", "L(D) = (D_c / D)^alpha_D", **kw)


def fit_kaplan_c(table: RunTable, **kw) -> dict:
    """``L(C) = (C_c/C)^alpha_C`` on the compute-efficient frontier (approach-1 envelope)."""
    from scalinglab.scaling.envelope import envelope_points

    env = envelope_points(table)
    return _single(env["flops"], env["loss"], ("C_c", "alpha_C"), "kaplan-c", "L(C) = (C_c / C)^alpha_C", **kw)


def _single(x, y, names, law, formula, **kw) -> dict:
    if np.unique(x).size < 2:
        raise UserError(f"law {law} needs at least 2 distinct x values, got {np.unique(x).size}")
    res = fit_power_law(x, y, form="scale", names=names, law=law, **kw)
    res["formula"] = formula
    res["fitted_points"] = {"x": [float(v) for v in x], "loss": [float(v) for v in y]}
    return res


# ---- joint laws: log-space least squares, multi-start L-BFGS --------------------------------


def _log_pred_nd(x_P, log_n, log_d):
    ln_nc, ln_dc, alpha_n, alpha_d = x_P[0], x_P[1], x_P[2], x_P[3]
    return alpha_d * jnp.logaddexp(alpha_n / alpha_d * (ln_nc - log_n), ln_dc - log_d)


def _log_pred_ns(x_P, log_n, log_s):
    ln_nc, ln_sc, alpha_n, alpha_s = x_P[0], x_P[1], x_P[2], x_P[3]
    return jnp.logaddexp(alpha_n * (ln_nc - log_n), alpha_s * (ln_sc - log_s))


def _loss_nd(x_P, data, w):
    r = _log_pred_nd(x_P, data["log_x"], data["log_y"]) - data["log_l"]
    return jnp.sum(w * r**2) / jnp.sum(w)


def _loss_ns(x_P, data, w):
    r = _log_pred_ns(x_P, data["log_x"], data["log_y"]) - data["log_l"]
    return jnp.sum(w * r**2) / jnp.sum(w)


def _loss_nd_value_and_grad(x_P, data, w):
    """``(_loss_nd, its gradient)`` in closed form (one pass; tests check it against autodiff)."""
    ln_nc, ln_dc, alpha_n, alpha_d = x_P[0], x_P[1], x_P[2], x_P[3]
    u = ln_nc - data["log_x"]
    p, q = alpha_n / alpha_d * u, ln_dc - data["log_y"]
    z = jnp.logaddexp(p, q)
    sp = jnp.exp(p - z)  # d z / d p
    r = alpha_d * z - data["log_l"]
    c = 2.0 * w * r / jnp.sum(w)
    grad = jnp.stack(
        [jnp.sum(c * alpha_n * sp), jnp.sum(c * alpha_d * (1.0 - sp)), jnp.sum(c * sp * u), jnp.sum(c * (z - sp * p))]
    )
    return jnp.sum(w * r**2) / jnp.sum(w), grad


def _loss_ns_value_and_grad(x_P, data, w):
    """``(_loss_ns, its gradient)`` in closed form (one pass; tests check it against autodiff)."""
    ln_nc, ln_sc, alpha_n, alpha_s = x_P[0], x_P[1], x_P[2], x_P[3]
    un, us = ln_nc - data["log_x"], ln_sc - data["log_y"]
    z = jnp.logaddexp(alpha_n * un, alpha_s * us)
    sn = jnp.exp(alpha_n * un - z)  # d z / d (alpha_n·un)
    r = z - data["log_l"]
    c = 2.0 * w * r / jnp.sum(w)
    grad = jnp.stack(
        [
            jnp.sum(c * sn * alpha_n),
            jnp.sum(c * (1.0 - sn) * alpha_s),
            jnp.sum(c * sn * un),
            jnp.sum(c * (1.0 - sn) * us),
        ]
    )
    return jnp.sum(w * r**2) / jnp.sum(w), grad


VALUE_AND_GRAD = {_loss_nd: _loss_nd_value_and_grad, _loss_ns: _loss_ns_value_and_grad}

JOINT = {
    "kaplan-nd": (
        _loss_nd,
        _log_pred_nd,
        ("N_c", "D_c", "alpha_N", "alpha_D"),
        "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
    ),
    "kaplan-ns": (
        _loss_ns,
        _log_pred_ns,
        ("N_c", "S_c", "alpha_N", "alpha_S"),
        "L(N, S) = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S",
    ),
}


def joint_starts() -> np.ndarray:
    """3×3×3×3 starts (ln x_c, ln y_c, exponent, exponent) spanning Kaplan-like magnitudes."""
    return np.array(list(itertools.product([15.0, 25.0, 35.0], [5.0, 20.0, 35.0], [0.05, 0.2, 0.6], [0.05, 0.2, 0.6])))


def fit_joint(
    law: str,
    x,
    y,
    loss,
    *,
    n_bootstrap: int = 0,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    starts: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> dict:
    """Fit ``kaplan-nd`` (x = N, y = D) or ``kaplan-ns`` (x = N, y = S_min) to all points.

    ``groups`` (int[N], e.g. the run of each curve point): the bootstrap resamples groups, not
    points, so points of one training curve come and go together."""
    loss_fn, _, names, formula = JOINT[law]
    x, y, l = check_positive("x", x), check_positive("y", y), check_positive("loss", loss)
    if x.size < len(names):
        raise UserError(f"law {law} has {len(names)} parameters but the table has {x.size} point(s)")
    data = {"log_x": np.log(x), "log_y": np.log(y), "log_l": np.log(l)}
    starts = joint_starts() if starts is None else np.asarray(starts, np.float64)
    ones = np.ones(x.size)
    # 4 parameters, smooth least squares: lock-step L-BFGS from every start (float64), then the
    # strong-Wolfe polish of the rows that did not converge
    fine = _minimize(loss_fn, starts, np.broadcast_to(ones, (len(starts), x.size)), data)
    if not np.any(np.isfinite(fine.value_M)):
        raise UserError(f"law {law} diverged from every start")
    best = int(np.nanargmin(np.where(np.isfinite(fine.value_M), fine.value_M, np.inf)))
    xb = fine.params_MP[best]
    vals = _named(xb[None], names)
    params = {k: float(v[0]) for k, v in vals.items()}
    result = {
        "law": law,
        "formula": formula,
        "param_names": list(names),
        "params": params,
        **params,
    }
    kw = {"n_params": x, "n_tokens": y} if law == "kaplan-nd" else {"n_params": x, "steps": y}
    resid = np.log(predict_loss(result, **kw)) - data["log_l"]
    result.update(
        {
            "objective": float(np.sum(resid**2)),
            "objective_kind": "sum of squared log residuals",
            "residuals": residual_stats(resid),
            "n_points": int(x.size),
            "n_starts": int(len(starts)),
        }
    )
    if n_bootstrap > 0:
        if groups is None:
            counts = resample_counts(x.size, n_bootstrap, seed=seed)
        else:
            _, g = np.unique(np.asarray(groups), return_inverse=True)
            counts = resample_counts(int(g.max()) + 1, n_bootstrap, seed=seed)[:, g]
        s0 = fine.params_MP[np.argsort(np.where(np.isfinite(fine.value_M), fine.value_M, np.inf))[:2]]
        res = _minimize(loss_fn, np.tile(s0, (n_bootstrap, 1)), np.repeat(counts, len(s0), 0), data)
        v = np.where(np.isfinite(res.value_M), res.value_M, np.inf).reshape(n_bootstrap, len(s0))
        xk = res.params_MP.reshape(n_bootstrap, len(s0), -1)[np.arange(n_bootstrap), np.argmin(v, 1)]
        xk[~np.isfinite(v.min(1))] = np.nan
        result.update(bootstrap_fields(_named(xk, names), level))
    return result


def _minimize(loss_fn, x0_MP, weights_MN, data) -> multistart.BatchResult:
    """Every row to |grad| <= 1e-10 or a full L-BFGS step that no longer changes the objective, in
    float64 (:func:`multistart.minimize_converged`: lock-step L-BFGS with the closed-form gradient,
    the stragglers compacted, then the strong-Wolfe polish of any row that did not converge)."""
    return multistart.minimize_converged(
        loss_fn,
        x0_MP,
        weights_MN,
        data,
        gtol=1e-10,
        max_iter=MAX_ITER,
        value_and_grad_fn=VALUE_AND_GRAD[loss_fn],
        polish_iter=MAX_ITER,
        polish_ftol=0.0,
    )[0]


def _named(x_KP: np.ndarray, names) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore"):
        return {names[0]: np.exp(x_KP[:, 0]), names[1]: np.exp(x_KP[:, 1]), names[2]: x_KP[:, 2], names[3]: x_KP[:, 3]}


def fit_kaplan_nd(table: RunTable, **kw) -> dict:
    """Joint ``L(N, D)`` on every run of the table."""
    return fit_joint("kaplan-nd", table.params, table.tokens, table.loss, **kw)


def fit_kaplan_ns(n_params, s_min, loss, **kw) -> dict:
    """``L(N, S) = (N_c/N)^alpha_N + (S_c/S_min)^alpha_S`` on points (N, S_min steps, L)."""
    return fit_joint("kaplan-ns", n_params, s_min, loss, **kw)


def s_min_from_steps(steps, batch_size, b_crit) -> np.ndarray:
    """Kaplan's ``S_min = S / (1 + B_crit/B)`` (B, B_crit in the same unit: sequences or tokens)."""
    return np.asarray(steps, np.float64) / (1.0 + np.asarray(b_crit, np.float64) / np.asarray(batch_size, np.float64))


def predict_loss(result: dict, n_params=None, n_tokens=None, flops=None, steps=None) -> np.ndarray:
    """Evaluate any Kaplan result (by its ``law``) at the given N / D / C / S_min."""
    p = result["params"]
    law = result["law"]
    if law == "kaplan-n":
        return (p["N_c"] / np.asarray(n_params, np.float64)) ** p["alpha_N"]
    if law == "kaplan-d":
        return (p["D_c"] / np.asarray(n_tokens, np.float64)) ** p["alpha_D"]
    if law == "kaplan-c":
        return (p["C_c"] / np.asarray(flops, np.float64)) ** p["alpha_C"]
    if law == "kaplan-nd":
        n, d = np.asarray(n_params, np.float64), np.asarray(n_tokens, np.float64)
        return ((p["N_c"] / n) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / d) ** p["alpha_D"]
    if law == "kaplan-ns":
        n, s = np.asarray(n_params, np.float64), np.asarray(steps, np.float64)
        return (p["N_c"] / n) ** p["alpha_N"] + (p["S_c"] / s) ** p["alpha_S"]
    raise ValueError(f"not a Kaplan law: {law}")


# ---- B_crit(L), S_min and C_min (Kaplan et al. 2020, section 5) ----------------------------

LOSS_BIN_WIDTH = 0.05  # in ln L: B_crit ∝ L^-4.8 (Kaplan) varies by only ~25 % across a bin
MIN_STEP_FRACTION = 0.1


def bcrit_at(bcrit: dict, loss) -> np.ndarray:
    """``B_crit(L) = B*·L^(−1/α_B)`` (sequences) for a law ``{"B_star", "inv_alpha_B"}``."""
    return bcrit["B_star"] * np.asarray(loss, np.float64) ** (-bcrit["inv_alpha_B"])


def bcrit_from_b_simple(table: RunTable, bin_width: float = LOSS_BIN_WIDTH) -> dict:
    """B_crit(L) from the runs' own in-loop noise scale: every logged (loss, tr(Σ), |G|²) of every
    run, binned in ln L (``bin_width`` wide); per bin ``B_simple = Σ tr(Σ) / Σ |G|²`` (numerator and denominator
    summed, never filtered by sign), then ``B_simple = B*·L^(−1/α_B)`` fitted to the positive bins.
    McCandlish et al. (2018): B_simple approximates B_crit (exactly for a well-conditioned
    Hessian); Kaplan et al. use it the same way when no sweep exists. Units: sequences."""
    loss, tr, g2 = [], [], []
    for cv in table.curves or []:
        if cv is not None and cv.gns_loss.size:
            loss.append(cv.gns_loss)
            tr.append(cv.gns_trace)
            g2.append(cv.gns_g2)
    if not loss:
        raise UserError(
            "L(N, S_min) and L(C_min) need B_crit(L): give a batch sweep (--sweep DIR) or runs that "
            "logged the in-loop noise scale (gns_trace, gns_g2 in metrics.jsonl)"
        )
    loss, tr, g2 = (np.concatenate(v) for v in (loss, tr, g2))
    ok = np.isfinite(loss) & np.isfinite(tr) & np.isfinite(g2) & (loss > 0)
    loss, tr, g2 = loss[ok], tr[ok], g2[ok]
    which = np.floor((np.log(loss) - np.log(loss.min())) / bin_width).astype(np.int64)
    l_bin, b_bin, dropped = [], [], 0
    for k in np.unique(which):
        m = which == k
        if not m.any():
            continue
        num, den = tr[m].sum(), g2[m].sum()
        if num > 0 and den > 0:
            l_bin.append(float(np.exp(np.mean(np.log(loss[m])))))
            b_bin.append(float(num / den))
        else:
            dropped += 1
    if len(l_bin) < 2:
        raise UserError(
            "in-loop B_simple gives fewer than 2 loss bins with a positive noise scale; "
            "give a batch sweep (--sweep DIR)"
        )
    fit = fit_power_law(l_bin, b_bin, form="coef", names=("B_star", "k"))
    return {
        "B_star": fit["B_star"],
        "inv_alpha_B": -fit["k"],
        "alpha_B": -1.0 / fit["k"] if fit["k"] else np.inf,
        "source": "in-loop B_simple of the runs (sum tr(Sigma) / sum |G|^2 per loss bin)",
        "loss": l_bin,
        "B_simple": b_bin,
        "n_bins_dropped": dropped,
    }


def bcrit_from_sweep(sweep_dir) -> dict:
    """B_crit(L) fitted by ``fit-batch`` on a batch-size sweep directory (sequences)."""
    from scalinglab.scaling.batch_load import load_sweep
    from scalinglab.scaling.critical_batch import analyze_sweep

    # the law only: one resample (analyze_sweep needs at least one)
    return bcrit_from_analysis(analyze_sweep(load_sweep(sweep_dir), n_bootstrap=1), sweep_dir)


def bcrit_from_analysis(cb: dict, sweep_dir) -> dict:
    """The B_crit(L) law of a sweep already analysed (``analyze_sweep``'s dict)."""
    if not (np.isfinite(cb.get("B_star", np.nan)) and np.isfinite(cb.get("inv_alpha_B", np.nan))):
        raise UserError(f"{sweep_dir}: the sweep gives no B_crit(L) law (fewer than 2 usable target losses)")
    return {
        "B_star": float(cb["B_star"]),
        "inv_alpha_B": float(cb["inv_alpha_B"]),
        "alpha_B": float(cb["alpha_B"]),
        "source": f"batch-size sweep {sweep_dir} (fit-batch: B_crit = E_min/S_min per target loss)",
    }


def _curve_points(table: RunTable, min_step_fraction: float):
    """Per curve point (after the first ``min_step_fraction`` of each run's steps, Kaplan's
    transient): run index, N, steps S, loss L, FLOPs C, batch size B (sequences)."""
    if table.curves is None or table.batch_size is None:
        raise UserError(
            "L(N, S_min) and L(C_min) need loss curves with steps and batch sizes (run directories, "
            "or a CSV with run, step and batch_size columns)"
        )
    out = []
    for r, cv in enumerate(table.curves):
        b = float(table.batch_size[r])
        if cv is None or not np.isfinite(b) or b <= 0:
            continue
        keep = np.isfinite(cv.step) & (cv.step >= min_step_fraction * np.nanmax(cv.step)) & (cv.step > 0)
        for s, l, c in zip(cv.step[keep], cv.loss[keep], cv.flops[keep]):
            out.append((r, table.params[r], s, l, c, b))
    if not out:
        raise UserError("no curve points with steps and batch sizes to fit L(N, S_min)")
    return np.array(out, dtype=np.float64).T


def fit_kaplan_ns_table(table: RunTable, bcrit: dict, *, min_step_fraction: float = MIN_STEP_FRACTION, **kw) -> dict:
    """``L(N, S_min) = (N_c/N)^alpha_N + (S_c/S_min)^alpha_S`` on every curve point of every run,
    ``S_min = S/(1 + B_crit(L)/B)`` with B_crit(L) from ``bcrit`` (:func:`bcrit_from_sweep` or
    :func:`bcrit_from_b_simple`); the bootstrap resamples runs."""
    run, n, s, loss, _, b = _curve_points(table, min_step_fraction)
    s_min = s_min_from_steps(s, b, bcrit_at(bcrit, loss))
    res = fit_kaplan_ns(n, s_min, loss, groups=run, **kw)
    res["bootstrap_unit"] = "runs"
    res["bcrit"] = {k: v for k, v in bcrit.items() if k in ("B_star", "inv_alpha_B", "alpha_B", "source")}
    res["min_step_fraction"] = min_step_fraction
    return res


def fit_kaplan_cmin(table: RunTable, bcrit: dict, **kw) -> dict:
    """``L(C_min) = (C_c/C_min)^alpha_C`` on the compute frontier of the runs' curves with every
    point's compute replaced by ``C_min = C/(1 + B/B_crit(L))`` (the compute at the critical
    batch, Kaplan et al. eq. 5.5; B in sequences, C in FLOPs)."""
    from dataclasses import replace

    from scalinglab.scaling.envelope import envelope_points

    if table.curves is None or table.batch_size is None:
        raise UserError(
            "L(C_min) needs loss curves and batch sizes (run directories, or a CSV with run and batch_size columns)"
        )
    curves = []
    for r, cv in enumerate(table.curves):
        b = float(table.batch_size[r])
        if cv is None or not np.isfinite(b) or b <= 0:
            raise UserError(f"run {table.names[r]} has no loss curve or batch size for C_min")
        curves.append(replace(cv, flops=cv.flops / (1.0 + b / bcrit_at(bcrit, cv.loss))))
    env = envelope_points(replace(table, curves=curves))
    res = _single(
        env["flops"], env["loss"], ("C_c", "alpha_C"), "kaplan-cmin", "L(C_min) = (C_c / C_min)^alpha_C", **kw
    )
    res["bcrit"] = {k: v for k, v in bcrit.items() if k in ("B_star", "inv_alpha_B", "alpha_B", "source")}
    return res
