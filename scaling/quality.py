"""Fit-quality checks shared by ``fit`` and the report: when a number must not be printed as one.

- **Not identified**: a parameter whose bootstrap interval spans more than a factor 10
  (``hi/lo > 10`` for a positive parameter), reaches zero or below for a positive one, or has a
  non-finite bound. Such a fit says nothing about that parameter: it is shown as
  "not identified", never as a number (the JSON keeps the value and lists the name under
  ``not_identified``).
- **Implausible exponent**: outside :data:`PLAUSIBLE` (loose bounds spanning every published
  value; Kaplan's α's are 0.05–0.1, Chinchilla's α, β ≈ 0.3, a, b ≈ 0.5).
- **E above the data**: approach 3's irreducible loss E at or above the lowest observed loss.
- **Rows that cannot identify the law** (all identical, one N, one D): :func:`check_rows`
  raises a UserError before fitting.
"""

from __future__ import annotations

import math

import numpy as np

from scalinglab.errors import UserError

MAX_RATIO = 10.0
PLAUSIBLE = {
    "alpha": (0.05, 2.0),
    "beta": (0.05, 2.0),
    "a": (0.1, 0.9),
    "b": (0.1, 0.9),
    "alpha_N": (0.01, 2.0),
    "alpha_D": (0.01, 2.0),
    "alpha_C": (0.005, 2.0),
    "alpha_S": (0.01, 2.0),
}
# which columns must vary for a law to be identified
NEEDS_SPREAD = {
    "chinchilla": ("params", "tokens"),
    "kaplan-nd": ("params", "tokens"),
    "kaplan-n": ("params",),
    "kaplan-d": ("tokens",),
    "kaplan-ns": ("params",),
}
NOT_IDENTIFIED = "not identified"


def check_rows(table, law: str) -> list[str]:
    """UserError when the rows cannot identify ``law`` (identical rows; a column it needs that
    takes one value); returns warnings for barely identifiable tables (two values)."""
    cols = {"params": table.params, "tokens": table.tokens, "loss": table.loss}
    rows = np.stack([cols["params"], cols["tokens"], table.flops, cols["loss"]], axis=1)
    if len(table) > 1 and np.unique(rows, axis=0).shape[0] == 1:
        raise UserError(
            f"cannot identify {law}: all {len(table)} rows are identical (1 distinct N value); "
            "they cannot identify any law"
        )
    warnings = []
    for col in NEEDS_SPREAD.get(law, ()):
        k = np.unique(cols[col]).size
        name = {"params": "model size N", "tokens": "token count D"}[col]
        if k < 2:
            raise UserError(
                f"cannot identify {law}: every row has the same {name} ({cols[col][0]:.4g}, 1 distinct "
                f"{name[-1]} value); the law's {name} term cannot be identified"
            )
        if k < 3 and law in ("chinchilla", "kaplan-nd"):
            warnings.append(f"only {k} distinct values of {name}: the {name} exponent rests on two points")
    return warnings


# scales and amplitudes: positive by definition (a fitted 0 is an underflow, not a value)
POSITIVE = ("E", "A", "B", "G", "N_c", "D_c", "C_c", "S_c", "N_coef", "D_coef")


def not_identified(result: dict) -> dict[str, str]:
    """``{parameter: reason}`` for parameters whose bootstrap interval (or value) does not
    identify them."""
    out = {}
    params = result.get("params", {})
    for name in POSITIVE:
        if name in params and not (math.isfinite(float(params[name])) and float(params[name]) > 0):
            out[name] = f"fitted value {float(params[name]):.3g} is not a positive finite number"
    for name, bounds in (result.get("ci") or {}).items():
        if name not in params or name in out:
            continue
        lo, hi = (float("nan") if v is None else float(v) for v in bounds)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            out[name] = "bootstrap interval not finite"
        elif lo <= 0 <= hi:
            out[name] = f"interval [{lo:.3g}, {hi:.3g}] reaches zero"
        elif lo > 0 and hi / lo > MAX_RATIO:
            out[name] = f"interval [{lo:.3g}, {hi:.3g}] spans {hi / lo:.3g}x (> {MAX_RATIO:g}x)"
    return out


def assess(result: dict, table=None) -> dict:
    """``{"warnings": [...], "not_identified": {param: reason}}`` for a fit result (and its table:
    E is compared with the lowest observed loss)."""
    warnings = []
    params = result.get("params", {})
    for name, (lo, hi) in PLAUSIBLE.items():
        v = params.get(name)
        if v is not None and not (lo <= float(v) <= hi):
            warnings.append(f"exponent {name} = {float(v):.4g} is outside its plausible range [{lo:g}, {hi:g}]")
    if result.get("law") == "chinchilla" and table is not None and np.size(table.loss):
        lowest = float(np.min(table.loss))
        if float(params["E"]) >= lowest:
            warnings.append(
                f"E = {float(params['E']):.4g} is at or above the lowest observed loss {lowest:.4g}: "
                "the fit puts the loss floor above the data"
            )
    ni = not_identified(result)
    for name, reason in ni.items():
        warnings.append(f"{name} {NOT_IDENTIFIED}: {reason}")
    return {"warnings": warnings, "not_identified": ni}


def apply(result: dict, table=None, row_warnings: list[str] | None = None) -> dict:
    """Add ``warnings`` (appended to any the fit made) and ``not_identified`` to ``result``."""
    q = assess(result, table)
    result["warnings"] = list(result.get("warnings", [])) + list(row_warnings or []) + q["warnings"]
    result["not_identified"] = q["not_identified"]
    return result


def shown(result: dict, name: str, fmt) -> str:
    """A parameter for printing: ``fmt(value)``, or "not identified" (see the module doc)."""
    if name in (result.get("not_identified") or {}):
        return NOT_IDENTIFIED
    return fmt(result["params"][name])


def interval_shown(result: dict, name: str, fmt) -> str:
    """A parameter's interval for printing: ``[lo, hi]``, "not identified", or "—" (none)."""
    if name in (result.get("not_identified") or {}):
        return NOT_IDENTIFIED
    lo_hi = (result.get("ci") or {}).get(name)
    if not lo_hi or any(v is None or not math.isfinite(float(v)) for v in lo_hi):
        return "—"
    return f"[{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]"
