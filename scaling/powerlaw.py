"""Two-parameter power laws fitted by least squares in log space, with vectorised bootstrap.

Forms (``x``, ``y`` positive; units are whatever the caller passes: parameters, tokens,
FLOPs, sequences...):

- ``"coef"``:  ``y = A · x^k``            → params ``A``, ``k``
- ``"scale"``: ``y = (x_c / x)^alpha``   → params ``x_c``, ``alpha`` (Kaplan's notation)

Both are the straight line ``log y = c + s · log x``:  ``A = e^c, k = s`` and
``alpha = −s, x_c = e^(c / alpha)``.  The line has a closed-form weighted least-squares
solution, so 1000 bootstrap resamples are one broadcast numpy expression over count
weights ``[K, N]`` (see :mod:`scalinglab.scaling.bootstrap`).

Every fit returns a plain JSON-able dict (see :func:`fit_power_law`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL, percentile_intervals, resample_counts
from scalinglab.scaling.residuals import residual_stats

FORMS = ("coef", "scale")
DEFAULT_NAMES = {"coef": ("A", "k"), "scale": ("x_c", "alpha")}


def fit_loglinear(
    logx_N: np.ndarray, logy_N: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares line ``logy = intercept + slope · logx``.

    ``weights`` is ``None``, ``float[N]`` or ``float[K, N]`` (K fits at once, e.g. bootstrap
    count weights); returns ``(intercept, slope)`` of shape ``()`` or ``[K]``.  A fit whose
    weighted ``logx`` has no spread (fewer than two distinct x) gives NaN.
    """
    x = np.asarray(logx_N, dtype=np.float64)
    y = np.asarray(logy_N, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # all weights zero (a resample): NaN, no warning
        mx = (w * x).sum(axis=-1, keepdims=True) / sw
        my = (w * y).sum(axis=-1, keepdims=True) / sw
        sxx = (w * (x - mx) ** 2).sum(axis=-1)
        sxy = (w * (x - mx) * (y - my)).sum(axis=-1)
        # Relative threshold: a spread below ~1e-12 of the scale of log x is "no spread".
        tiny = 1e-24 * np.maximum(1.0, (w * x**2).sum(axis=-1))
        slope = np.where(sxx > tiny, sxy / np.where(sxx > tiny, sxx, 1.0), np.nan)
    intercept = my[..., 0] - slope * mx[..., 0]
    return intercept, slope


def _to_params(form: str, intercept: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if form == "coef":
        return np.exp(intercept), slope
    alpha = -slope
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x_c = np.exp(intercept / alpha)
    return x_c, alpha


def power_law_predict(result: dict, x: np.ndarray) -> np.ndarray:
    """Evaluate a :func:`fit_power_law` result at ``x`` (same units as the fitted x)."""
    x = np.asarray(x, dtype=np.float64)
    p1, p2 = (result["params"][n] for n in result["param_names"])
    if result["form"] == "coef":
        return p1 * x**p2
    return (p1 / x) ** p2


def check_positive(name: str, values: np.ndarray) -> np.ndarray:
    """Return ``values`` as float64, raising UserError unless all are finite and > 0."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise UserError(f"{name} must be finite and positive for a log-space fit")
    return arr


def fit_power_law(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    form: str = "coef",
    names: tuple[str, str] | None = None,
    n_bootstrap: int = 0,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    law: str | None = None,
) -> dict:
    """Fit ``y = A·x^k`` (``form="coef"``) or ``y = (x_c/x)^alpha`` (``form="scale"``).

    Least squares on ``log y`` (so residuals are relative errors).  With ``n_bootstrap > 0``
    the points are resampled with replacement that many times (vectorised) and each
    parameter gets a percentile interval at ``level``.

    Returns a JSON-able dict::

        {"law", "form", "formula", "param_names", "params": {name: value}, <name>: value...,
         "objective" (sum of squared log residuals), "residuals" (rms/mean/max_abs/median_abs
         of log(pred) − log(y)), "n_points", and when bootstrapped "ci" {name: [low, high]},
         "ci_level", "n_bootstrap", "bootstrap_samples" {name: [K values]}}
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}")
    names = tuple(names or DEFAULT_NAMES[form])
    x = check_positive("x", x)
    y = check_positive("y", y)
    if x.shape != y.shape or x.ndim != 1:
        raise UserError("x and y must be 1-D and of equal length")
    if np.unique(x).size < 2:
        raise UserError(f"a power law needs at least 2 distinct x values, got {np.unique(x).size}")
    lx, ly = np.log(x), np.log(y)
    intercept, slope = fit_loglinear(lx, ly)
    p1, p2 = _to_params(form, intercept, slope)
    resid = intercept + slope * lx - ly
    result: dict = {
        "law": law or f"power_law_{form}",
        "form": form,
        "formula": f"y = {names[0]} * x^{names[1]}" if form == "coef" else f"y = ({names[0]} / x)^{names[1]}",
        "param_names": list(names),
        "params": {names[0]: float(p1), names[1]: float(p2)},
        names[0]: float(p1),
        names[1]: float(p2),
        "objective": float(np.sum(resid**2)),
        "objective_kind": "sum of squared log residuals",
        "residuals": residual_stats(resid),
        "n_points": int(x.size),
    }
    if n_bootstrap > 0:
        counts_KN = resample_counts(x.size, n_bootstrap, seed=seed)
        bi, bs = fit_loglinear(lx, ly, counts_KN)
        b1, b2 = _to_params(form, bi, bs)
        samples = {names[0]: b1, names[1]: b2}
        result.update(bootstrap_fields(samples, level))
    return result


def bootstrap_fields(samples: dict[str, np.ndarray], level: float) -> dict:
    """The bootstrap part of a fit result: ``ci``, ``ci_level``, ``n_bootstrap``, samples."""
    stacked = np.stack([np.asarray(v, dtype=np.float64) for v in samples.values()])
    n = stacked.shape[1]
    return {
        "ci": percentile_intervals(samples, level),
        "ci_level": float(level),
        "n_bootstrap": int(n),
        # resamples whose fit failed (e.g. all draws at one x): excluded from the intervals
        "n_bootstrap_failed": int(np.sum(~np.all(np.isfinite(stacked), axis=0))),
        "bootstrap_samples": {k: [float(s) for s in np.asarray(v)] for k, v in samples.items()},
    }


def strip_samples(result: dict) -> dict:
    """A copy of a fit result without the (long) ``bootstrap_samples`` lists, for printing."""
    return {k: strip_samples(v) if isinstance(v, dict) else v for k, v in result.items() if k != "bootstrap_samples"}
