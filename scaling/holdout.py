"""Extrapolation check: refit without the largest-compute runs and score the prediction on them.

- Loss laws (chinchilla, kaplan-*): hold out the ``k`` runs with the most training FLOPs;
  errors are relative loss errors ``pred/actual − 1`` on those runs.
- ``isoflop``: hold out the ``k`` largest FLOP budgets (all their runs); the error is
  ``ln(N_opt predicted / N_opt measured)`` with the measured optimum the parabola vertex of
  the held-out budget.
- ``envelope``: hold out the ``k`` largest budgets; measured optima are the full table's
  envelope points above the remaining compute.
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.budgets import group_budgets
from scalinglab.scaling.envelope import envelope_points
from scalinglab.scaling.isoflop import isoflop_profiles, predict_optimum
from scalinglab.scaling.laws import LOSS_LAWS, fit_law, predict_table, resolve_convention
from scalinglab.scaling.load import RunTable


def holdout(table: RunTable, law: str, k: int, **fit_kw) -> dict:
    """Refit ``law`` without the ``k`` largest-compute runs (or budgets) and report errors.

    Returns ``{"k", "unit", "fit" (the refit, without bootstrap samples), "points": [...],
    "mean_abs_error", "max_abs_error", "error_kind"}``.
    """
    if k < 1:
        raise UserError("--holdout must be at least 1")
    convention = resolve_convention(law, fit_kw.get("params"))
    if convention is not None:  # measured optima in the fit's N convention
        table = table.with_params(convention)
    if law in LOSS_LAWS:
        if k >= len(table):
            raise UserError(f"--holdout {k} leaves no runs to fit ({len(table)} in the table)")
        order = np.argsort(table.flops, kind="stable")
        train, test = table.subset(order[:-k]), table.subset(order[-k:])
        fit = fit_law(train, law, **fit_kw)
        pred = predict_table(fit, test)
        err = pred / test.loss - 1.0
        points = [
            {
                "name": test.names[i],
                "params": float(test.params[i]),
                "tokens": float(test.tokens[i]),
                "flops": float(test.flops[i]),
                "loss": float(test.loss[i]),
                "predicted": float(pred[i]),
                "rel_error": float(err[i]),
            }
            for i in range(len(test))
        ]
        unit, kind = "runs", "relative loss error pred/actual - 1"
    else:
        labels, budgets = group_budgets(table.flops)
        if k >= budgets.size:
            raise UserError(f"--holdout {k} leaves no FLOP budgets to fit ({budgets.size} in the table)")
        held = labels >= budgets.size - k
        fit = fit_law(table.subset(~held), law, **fit_kw)
        if law == "isoflop":
            sub = table.subset(held)
            sel = fit.get("selection") or {}
            profs, _, _ = isoflop_profiles(
                sub.params, sub.tokens, sub.flops, sub.loss, keep=sel.get("keep"), loss_window=sel.get("loss_window")
            )
            measured = [(p["flops"], p["N_opt"]) for p in profs]
        else:
            env = envelope_points(table)
            top = table.flops[~held].max()
            measured = [(c, n) for c, n in zip(env["flops"], env["N_opt"]) if c > top]
        if not measured:
            raise UserError("held-out budgets have no measurable optimum (need 3+ sizes per budget)")
        points = []
        for c, n_meas in measured:
            n_pred, _ = predict_optimum(fit["params"], c)
            points.append(
                {
                    "flops": float(c),
                    "N_opt": float(n_meas),
                    "N_opt_predicted": float(n_pred),
                    "log_error": float(np.log(n_pred / n_meas)),
                }
            )
        err = np.array([p["log_error"] for p in points])
        unit, kind = "budgets", "ln(N_opt predicted / N_opt measured)"
    fit = {key: v for key, v in fit.items() if key != "bootstrap_samples"}
    return {
        "k": int(k),
        "unit": unit,
        "error_kind": kind,
        "fit": fit,
        "points": points,
        "mean_abs_error": float(np.mean(np.abs(err))),
        "max_abs_error": float(np.max(np.abs(err))),
    }
