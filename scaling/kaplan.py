"""Kaplan et al. (2020) scaling laws.  Units: N non-embedding parameters, D tokens, C FLOPs,
S optimisation steps, L loss (nats/token).

- ``L(N) = (N_c/N)^alpha_N``: for each model size (within 1 %), its lowest loss (the best-
  trained run of that size), fitted in log space.
- ``L(D) = (D_c/D)^alpha_D``: for each token count (within 1 %), the lowest loss over sizes.
- ``L(C) = (C_c/C)^alpha_C``: the compute-efficient frontier (approach-1 envelope) vs C.
  Kaplan's C_min also corrects for the batch size; here C is the FLOPs actually spent.
- ``L(N, D) = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``: all points, least squares on log L
  (multi-start L-BFGS, vmapped, as for approach 3).
- ``L(N, S) = (N_c/N)^alpha_N + (S_c/S_min)^alpha_S``: points (N, S_min, L); S_min is the step
  count at the critical batch, ``S/(1 + B_crit(L)/B)``, when the caller has B_crit, else S.
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


JOINT = {
    "kaplan-nd": (_loss_nd, _log_pred_nd, ("N_c", "D_c", "alpha_N", "alpha_D"),
                  "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D"),
    "kaplan-ns": (_loss_ns, _log_pred_ns, ("N_c", "S_c", "alpha_N", "alpha_S"),
                  "L(N, S) = (N_c / N)^alpha_N + (S_c / S_min)^alpha_S"),
}


def joint_starts() -> np.ndarray:
    """3×3×3×3 starts (ln x_c, ln y_c, exponent, exponent) spanning Kaplan-like magnitudes."""
    return np.array(list(itertools.product([15.0, 25.0, 35.0], [5.0, 20.0, 35.0],
                                           [0.05, 0.2, 0.6], [0.05, 0.2, 0.6])))


def fit_joint(law: str, x, y, loss, *, n_bootstrap: int = 0, level: float = DEFAULT_LEVEL,
              seed: int = 0, starts: np.ndarray | None = None) -> dict:
    """Fit ``kaplan-nd`` (x = N, y = D) or ``kaplan-ns`` (x = N, y = S_min) to all points."""
    loss_fn, _, names, formula = JOINT[law]
    x, y, l = check_positive("x", x), check_positive("y", y), check_positive("loss", loss)
    if x.size < len(names):
        raise UserError(f"law {law} has {len(names)} parameters but the table has {x.size} point(s)")
    data = {"log_x": np.log(x), "log_y": np.log(y), "log_l": np.log(l)}
    starts = joint_starts() if starts is None else np.asarray(starts, np.float64)
    ones = np.ones(x.size)
    # 4 parameters, smooth least squares: one pass from every start converges fully
    fine = multistart.minimize_batch(loss_fn, starts, np.broadcast_to(ones, (len(starts), x.size)), data,
                                     max_iter=MAX_ITER, gtol=1e-10, ftol=0.0)
    if not np.any(np.isfinite(fine.value_M)):
        raise UserError(f"law {law} diverged from every start")
    best = int(np.nanargmin(np.where(np.isfinite(fine.value_M), fine.value_M, np.inf)))
    xb = fine.params_MP[best]
    vals = _named(xb[None], names)
    params = {k: float(v[0]) for k, v in vals.items()}
    result = {
        "law": law, "formula": formula, "param_names": list(names), "params": params, **params,
    }
    kw = {"n_params": x, "n_tokens": y} if law == "kaplan-nd" else {"n_params": x, "steps": y}
    resid = np.log(predict_loss(result, **kw)) - data["log_l"]
    result.update({
        "objective": float(np.sum(resid**2)), "objective_kind": "sum of squared log residuals",
        "residuals": residual_stats(resid), "n_points": int(x.size), "n_starts": int(len(starts)),
    })
    if n_bootstrap > 0:
        counts = resample_counts(x.size, n_bootstrap, seed=seed)
        s0 = fine.params_MP[np.argsort(np.where(np.isfinite(fine.value_M), fine.value_M, np.inf))[:2]]
        res = multistart.minimize_batch(loss_fn, np.tile(s0, (n_bootstrap, 1)), np.repeat(counts, len(s0), 0), data,
                                        max_iter=MAX_ITER, gtol=1e-10, ftol=0.0)
        v = np.where(np.isfinite(res.value_M), res.value_M, np.inf).reshape(n_bootstrap, len(s0))
        xk = res.params_MP.reshape(n_bootstrap, len(s0), -1)[np.arange(n_bootstrap), np.argmin(v, 1)]
        xk[~np.isfinite(v.min(1))] = np.nan
        result.update(bootstrap_fields(_named(xk, names), level))
    return result


def _named(x_KP: np.ndarray, names) -> dict[str, np.ndarray]:
    with np.errstate(over="ignore"):
        return {names[0]: np.exp(x_KP[:, 0]), names[1]: np.exp(x_KP[:, 1]), names[2]: x_KP[:, 2],
                names[3]: x_KP[:, 3]}


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
