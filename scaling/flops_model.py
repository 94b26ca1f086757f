"""Training FLOPs per token as a function of N, fitted to a ladder's own runs: the exact C(N, D).

A transformer family's training compute is ``C = D·f(N)`` (D tokens, f FLOPs per token). For
the dense matmuls f ≈ 6N, but the output head (6·V·d_model), the attention logits
(∝ n_layer·n_ctx·d_model) and, under the ``total`` convention, embedding tables that cost no
matmul FLOPs make ``C/(N·D)`` far from 6 at small scale (7.5–26 in the CPU demo). Those extra
terms grow like a power of N below one (d_model ∝ N^(1/3) for a fixed aspect ratio), so the
model fitted here is

    f(N) = c1·N + c0·N^gamma,      0 <= gamma <= 0.9

(exactly ``C = k·N·D`` when the runs' FLOPs are proportional to N·D) else by least squares
on relative errors ``f̂/f − 1`` over the runs (one point per distinct N):
for each gamma on a grid (c1, c0) are linear, and the best gamma wins. With two distinct
sizes gamma is fixed at 0 (``C = D·(c1·N + c0)``); with one, f = k·N. A table whose FLOPs are
6·N·D (a CSV without a ``flops`` column) gives c1 = 6, c0 = 0 exactly.
"""

from __future__ import annotations

import numpy as np

from scalinglab.errors import UserError

GAMMA_GRID = np.round(np.arange(0.0, 0.901, 0.01), 10)
SIX_ND = {"form": "6ND", "c1": 6.0, "c0": 0.0, "gamma": 0.0, "max_rel_error": 0.0, "n_sizes": 0}


def fit_flops_per_token(n_params, flops_per_token) -> dict:
    """Fit ``f(N) = c1·N + c0·N^gamma`` (FLOPs per token vs parameters) to per-run values.

    Returns ``{"form", "c1", "c0", "gamma", "max_rel_error", "n_sizes"}`` (JSON-able); ``form``
    is ``"c1*N + c0*N^gamma"``. Runs of one size are averaged (geometric mean) first.
    """
    n = np.asarray(n_params, np.float64)
    f = np.asarray(flops_per_token, np.float64)
    if n.shape != f.shape or n.size == 0 or not np.all(np.isfinite(n) & np.isfinite(f) & (n > 0) & (f > 0)):
        raise UserError("FLOPs-per-token model needs positive finite N and FLOPs per token for every run")
    sizes = np.unique(n)
    f_s = np.array([np.exp(np.mean(np.log(f[n == s]))) for s in sizes])
    k = float(np.exp(np.mean(np.log(f_s / sizes))))
    if sizes.size == 1 or np.max(np.abs(k * sizes / f_s - 1.0)) < 1e-9:  # C = k·N·D exactly (e.g. 6ND)
        c1, c0, gamma = k, 0.0, 0.0
    else:
        gammas = GAMMA_GRID if sizes.size >= 3 else np.array([0.0])
        best = (np.inf, 0.0, 0.0, 0.0)
        for g in gammas:
            X = np.stack([sizes / f_s, sizes**g / f_s], axis=1)  # relative residual = X @ (c1, c0) − 1
            coef, *_ = np.linalg.lstsq(X, np.ones_like(sizes), rcond=None)
            sse = float(np.sum((X @ coef - 1.0) ** 2))
            if sse < best[0] - 1e-15 and coef[0] > 0:
                best = (sse, float(coef[0]), float(coef[1]), float(g))
        if not np.isfinite(best[0]):  # no fit with a positive leading term: plain proportional model
            best = (0.0, float(np.exp(np.mean(np.log(f_s / sizes)))), 0.0, 0.0)
        _, c1, c0, gamma = best
    model = {"form": "c1*N + c0*N^gamma", "c1": c1, "c0": c0, "gamma": gamma, "n_sizes": int(sizes.size)}
    model["max_rel_error"] = float(np.max(np.abs(flops_per_token_of(model, sizes) / f_s - 1.0)))
    return model


def flops_per_token_of(model: dict, n_params) -> np.ndarray:
    """``f(N)`` (training FLOPs per token) of a fitted model at parameters ``n_params``."""
    n = np.asarray(n_params, np.float64)
    return model["c1"] * n + model["c0"] * n ** model["gamma"]


def tokens_for_budget(model: dict, n_params, flops) -> np.ndarray:
    """``D = C / f(N)``: the tokens a model of N parameters trains on for ``flops`` FLOPs."""
    return np.asarray(flops, np.float64) / flops_per_token_of(model, n_params)


def model_from_table(table) -> dict:
    """The FLOPs model of a :class:`~scalinglab.scaling.load.RunTable` (in its ``params``
    convention): :data:`SIX_ND` when its FLOPs were not given, else :func:`fit_flops_per_token`."""
    if not getattr(table, "flops_given", True):
        return dict(SIX_ND)
    return fit_flops_per_token(table.params, table.flops / table.tokens)
