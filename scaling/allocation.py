"""Compute-optimal allocation from a fitted law: given training FLOPs C, the parameter count
N_opt, token count D_opt (for approach 3 under the runs' exact C(N, D) when the fit carries a
``flops_model``, else C = 6·N·D), tokens per parameter and, for approach 3,
the predicted loss (nats/token); intervals from the fit's bootstrap samples (percentiles)."""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError
from scalinglab.scaling import chinchilla, isoflop
from scalinglab.scaling.bootstrap import percentile_interval


def allocate(result: dict, flops: float) -> dict:
    """``{"flops", "N_opt", "D_opt", "tokens_per_param", ["loss"], ["ci": {...}]}`` at ``flops``.

    ``result`` is a chinchilla (approach 3), isoflop (approach 2) or envelope (approach 1) fit.
    """
    c = float(flops)
    if not np.isfinite(c) or c <= 0:
        raise UserError(f"FLOP budget must be positive, got {flops}")
    law = result.get("law")
    if law == "chinchilla":
        n_opt, d_opt = chinchilla.compute_optimal(result["params"], c, result.get("flops_model"))
        out = {
            "flops": c,
            "N_opt": float(n_opt),
            "D_opt": float(d_opt),
            "loss": float(chinchilla.predict_loss(result["params"], n_opt, d_opt)),
        }
    elif law in ("isoflop", "envelope"):
        n_opt, d_opt = isoflop.predict_optimum(result["params"], c)
        out = {"flops": c, "N_opt": float(n_opt), "D_opt": float(d_opt)}
    else:
        raise UserError(f"compute-optimal allocation needs a chinchilla, isoflop or envelope fit, not {law}")
    out["tokens_per_param"] = out["D_opt"] / out["N_opt"]
    if law == "chinchilla":
        fm = result.get("flops_model")
        exact = "C = D*(c1*N + c0*N^gamma) (the runs' exact FLOPs)"
        out["constraint"] = (
            "C = 6*N*D" if fm is None else (f"C = D*{fm['c1']:.4g}*N" if fm.get("c0", 0.0) == 0.0 else exact)
        )
    if result.get("params_convention"):
        out["params_convention"] = result["params_convention"]
    samples = result.get("bootstrap_samples")
    if samples:
        s = {k: np.asarray(v, np.float64) for k, v in samples.items()}
        if law == "chinchilla":
            n_k, d_k = chinchilla.compute_optimal(s, c, result.get("flops_model"))
            extra = {"loss": chinchilla.predict_loss(s, n_k, d_k)}
        else:
            n_k, d_k = isoflop.predict_optimum(s, c)
            extra = {}
        level = result.get("ci_level", 0.95)
        out["ci"] = {
            "N_opt": percentile_interval(n_k, level),
            "D_opt": percentile_interval(d_k, level),
            "tokens_per_param": percentile_interval(d_k / n_k, level),
            **{k: percentile_interval(v, level) for k, v in extra.items()},
        }
        out["ci_level"] = level
    return out
