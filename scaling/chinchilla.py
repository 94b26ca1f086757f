"""Chinchilla approach 3 (Hoffmann et al. 2022): ``L(N, D) = E + A/N^alpha + B/D^beta``.

Units: ``N`` parameters, ``D`` training tokens, ``L`` loss in nats/token, ``C`` training FLOPs
(``C = 6·N·D``).  Fitted as in the paper: with ``A = e^a, B = e^b, E = e^e`` minimise

    sum_i Huber_delta( LSE(a − alpha·log N_i, b − beta·log D_i, e) − log L_i ),  delta = 1e-3

with L-BFGS from a grid of starts (the paper's grid has 4,500 points, :func:`hoffmann_grid`);
the best start wins.  All starts run at once (``jax.vmap``, float64) for a bounded number of
iterations with a short line search, then the best few distinct optima are polished to tight
tolerances.  The bootstrap
refits every resample (count weights) from the best few optima, also in one batch.

``--huber-delta`` changes delta (carried in the fit's data, so every delta shares one compiled
solver). Bootstrap refits are polished to convergence and the count that hit the iteration
limit is reported under ``optimizer.bootstrap``.

Compute-optimal allocation of the fitted law (minimise L subject to 6·N·D = C):
``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)``, ``G = (alpha·A / (beta·B))^(1/(alpha+beta))``,
``N_opt = G·(C/6)^a``, ``D_opt = (C/6)^b / G``, tokens per parameter ``D_opt/N_opt = G^-2 (C/6)^(b−a)``.
Under the runs' exact ``C = D·f(N)`` (:mod:`scalinglab.scaling.flops_model`) the optimum is found
numerically (:func:`compute_optimal_exact`), so approaches 1–3 allocate under the same C.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scalinglab.errors import UserError
from scalinglab.scaling import multistart
from scalinglab.scaling.bootstrap import DEFAULT_LEVEL, resample_counts
from scalinglab.scaling.powerlaw import bootstrap_fields, check_positive
from scalinglab.scaling.residuals import residual_stats

HUBER_DELTA = 1e-3
LAW_PARAMS = ("E", "A", "B", "alpha", "beta")
DERIVED = ("a", "b", "G")
FORMULA = "L(N, D) = E + A / N^alpha + B / D^beta"


def hoffmann_grid() -> np.ndarray:
    """The paper's grid of starts ``float[4500, 5]`` in (a, b, e, alpha, beta) order:
    alpha, beta ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}."""
    return grid(
        a=np.arange(0, 30, 5.0),
        b=np.arange(0, 30, 5.0),
        e=np.arange(-1, 1.5, 0.5),
        alpha=np.arange(0, 2.5, 0.5),
        beta=np.arange(0, 2.5, 0.5),
    )


def small_grid() -> np.ndarray:
    """A 3×3×2×3×3 = 162-start grid over the same box, for quick fits and tests."""
    return grid(
        a=np.array([0.0, 10.0, 20.0]),
        b=np.array([0.0, 10.0, 20.0]),
        e=np.array([-0.5, 0.5]),
        alpha=np.array([0.2, 0.6, 1.2]),
        beta=np.array([0.2, 0.6, 1.2]),
    )


def grid(*, a, b, e, alpha, beta) -> np.ndarray:
    """Cartesian product of start values ``float[S, 5]`` in (a, b, e, alpha, beta) order."""
    return np.array(list(itertools.product(a, b, e, alpha, beta)), dtype=np.float64)


def log_predict(x_P, log_n, log_d):
    """log L̂ = LSE(a − alpha·log N, b − beta·log D, e) for parameter vector ``x_P`` (jax or numpy)."""
    a, b, e, alpha, beta = (x_P[..., i] for i in range(5))
    terms = [a - alpha * log_n, b - beta * log_d, e + 0.0 * log_n]
    if isinstance(log_n, np.ndarray) and not isinstance(x_P, jax.Array):
        return np.logaddexp(np.logaddexp(terms[0], terms[1]), terms[2])
    return jax.nn.logsumexp(jnp.stack(terms), axis=0)


def _delta(data):
    """Huber delta of a fit: carried in ``data`` as a per-point array (it pads like the points;
    padding is zero, so the max is the delta) so that one compiled solver serves every delta."""
    return jnp.max(data["delta"])


def _loss(x_P, data, weights_N):
    """Weighted mean Huber loss divided by delta (same minimiser as the paper's sum; O(1) scale
    so that one set of tolerances fits every table)."""
    delta = _delta(data)
    pred = log_predict(x_P, data["log_n"], data["log_d"])
    h = optax.losses.huber_loss(pred, data["log_l"], delta=delta)
    return jnp.sum(weights_N * h) / (delta * jnp.sum(weights_N))


def _loss_value_and_grad(x_P, data, weights_N):
    """``(_loss, d _loss / d x_P)`` in closed form: one pass, 3 exp + 1 log per point (autodiff of
    ``_loss`` costs 1.7x (float64) to 5x (float32) more; tests check the two agree)."""
    delta = _delta(data)
    a, b, e, alpha, beta = (x_P[i] for i in range(5))
    log_n, log_d = data["log_n"], data["log_d"]
    u, v = a - alpha * log_n, b - beta * log_d
    m = jnp.maximum(jnp.maximum(u, v), e)
    eu, ev, ee = jnp.exp(u - m), jnp.exp(v - m), jnp.exp(e - m)
    s = eu + ev + ee
    r = m + jnp.log(s) - data["log_l"]
    ar = jnp.abs(r)
    h = jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))
    scale = delta * jnp.sum(weights_N)
    c = weights_N * jnp.clip(r, -delta, delta) / (scale * s)  # dLoss/dpred ÷ s
    cu, cv = c * eu, c * ev
    grad = jnp.stack([jnp.sum(cu), jnp.sum(cv), jnp.sum(c * ee), -jnp.sum(cu * log_n), -jnp.sum(cv * log_d)])
    return jnp.sum(weights_N * h) / scale, grad


def fit_data(n_params, n_tokens, loss, huber_delta: float = HUBER_DELTA) -> dict:
    """The arrays a fit works on: ``log_n``, ``log_d``, ``log_l`` and ``delta`` (all float[N])."""
    n = np.asarray(n_params, np.float64)
    return {
        "log_n": np.log(n),
        "log_d": np.log(np.asarray(n_tokens, np.float64)),
        "log_l": np.log(np.asarray(loss, np.float64)),
        "delta": np.full(n.size, float(huber_delta)),
    }


def huber_objective(x_P: np.ndarray, n_params, n_tokens, loss, huber_delta: float = HUBER_DELTA) -> float:
    """The paper's objective: sum over points of Huber_delta(log L̂ − log L) (numpy, float64)."""
    r = log_predict(np.asarray(x_P, np.float64), np.log(n_params), np.log(n_tokens)) - np.log(loss)
    ar = np.abs(r)
    d = huber_delta
    return float(np.sum(np.where(ar <= d, 0.5 * r**2, d * (ar - 0.5 * d))))


def compute_optimal(params: dict, flops, flops_model: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(N_opt, D_opt)`` (parameters, tokens) minimising the fitted L at training FLOPs ``flops``.

    Without ``flops_model`` (or with a proportional one, ``C = c1·N·D``) the closed form of the
    module doc with 6 replaced by c1; with a fitted ``f(N) = c1·N + c0·N^gamma``
    (:mod:`scalinglab.scaling.flops_model`) the constraint is the exact ``C = D·f(N)`` and the
    optimum is found numerically (:func:`compute_optimal_exact`). ``params`` values may be
    arrays (bootstrap samples) and ``flops`` a scalar or an array broadcasting with them.
    """
    if flops_model is None or flops_model.get("c0", 0.0) == 0.0:
        k = 6.0 if flops_model is None else float(flops_model["c1"])
        a, b, G = derived(params["A"], params["B"], params["alpha"], params["beta"])
        ck = np.asarray(flops, dtype=np.float64) / k
        return G * ck**a, ck**b / G
    return compute_optimal_exact(params, flops, flops_model)


def compute_optimal_exact(
    params: dict, flops, flops_model: dict, *, half_width: float = 12.0, n_grid: int = 2401, n_golden: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``L(N, C/f(N))`` over ln N for each (sample, budget): a grid of ``n_grid`` points
    over ±``half_width`` around the 6ND-style closed form (L along the constraint is unimodal in
    ln N: falling A/N^alpha against rising B·(f(N)/C)^beta), then golden-section search between
    the grid neighbours of the best point. Optima on the grid's edge are NaN."""
    from scalinglab.scaling.flops_model import flops_per_token_of

    A, B, E, alpha, beta = (np.asarray(params[k], np.float64) for k in ("A", "B", "E", "alpha", "beta"))
    c = np.asarray(flops, np.float64)
    shape = np.broadcast_shapes(A.shape, c.shape)
    A, B, E, alpha, beta, c = (np.broadcast_to(v, shape).reshape(-1, 1) for v in (A, B, E, alpha, beta, c))
    n0, _ = compute_optimal({"A": A, "B": B, "alpha": alpha, "beta": beta}, c, {"c1": flops_model["c1"]})
    with np.errstate(all="ignore"):
        x0 = np.where(np.isfinite(n0) & (n0 > 0), np.log(n0), 0.0)

        def objective(x):
            n = np.exp(x)
            f = flops_per_token_of(flops_model, n)
            val = A * n**-alpha + B * (f / c) ** beta
            return np.where((f > 0) & np.isfinite(val), val, np.inf)

        grid = x0 + np.linspace(-half_width, half_width, n_grid)[None, :]
        vals = objective(grid)
        i = np.argmin(vals, axis=1)
        rows = np.arange(grid.shape[0])
        lo = grid[rows, np.clip(i - 1, 0, n_grid - 1)][:, None]
        hi = grid[rows, np.clip(i + 1, 0, n_grid - 1)][:, None]
        g = (np.sqrt(5.0) - 1.0) / 2.0
        x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
        f1, f2 = objective(x1), objective(x2)
        for _ in range(n_golden):
            left = f1 <= f2  # the minimum lies in [lo, x2], else in [x1, hi]
            hi = np.where(left, x2, hi)
            lo = np.where(left, lo, x1)
            x_new = np.where(left, hi - g * (hi - lo), lo + g * (hi - lo))
            f_new = objective(x_new)
            x1, x2, f1, f2 = (
                np.where(left, x_new, x2),
                np.where(left, x1, x_new),
                np.where(left, f_new, f2),
                np.where(left, f1, f_new),
            )
        x = 0.5 * (lo + hi)[:, 0]
        bad = (i == 0) | (i == n_grid - 1) | ~np.isfinite(vals[rows, i])
        n_opt = np.where(bad, np.nan, np.exp(x))
        d_opt = c[:, 0] / flops_per_token_of(flops_model, n_opt)
    return n_opt.reshape(shape), d_opt.reshape(shape)


def derived(A, B, alpha, beta):
    """Compute-optimal exponents and scale: ``(a, b, G)`` (works on arrays of bootstrap samples)."""
    A, B, alpha, beta = (np.asarray(v, dtype=np.float64) for v in (A, B, alpha, beta))
    with np.errstate(all="ignore"):
        a = beta / (alpha + beta)
        b = alpha / (alpha + beta)
        G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    return a, b, G


def predict_loss(params: dict, n_params, n_tokens) -> np.ndarray:
    """``E + A/N^alpha + B/D^beta`` (nats/token) for parameters ``N`` and tokens ``D``."""
    n = np.asarray(n_params, dtype=np.float64)
    d = np.asarray(n_tokens, dtype=np.float64)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def _to_law(x_P: np.ndarray) -> dict[str, np.ndarray]:
    a, b, e, alpha, beta = (np.asarray(x_P)[..., i] for i in range(5))
    with np.errstate(over="ignore"):
        return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}


def fit_approach3(
    n_params,
    n_tokens,
    loss,
    *,
    starts: np.ndarray | None = None,
    n_bootstrap: int = 0,
    bootstrap_starts: int = 2,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    wide_iter: int = 80,
    wide_dtype: str = "float32",
    n_polish: int = 16,
    bootstrap_iter: int = 100,
    bootstrap_dtype: str = "float64",
    huber_delta: float = HUBER_DELTA,
    flops_model: dict | None = None,
    flops_range: tuple[float, float] | None = None,
) -> dict:
    """Fit ``L = E + A/N^alpha + B/D^beta`` to points (N parameters, D tokens, L nats/token).

    ``starts`` is ``float[S, 5]`` in (a, b, e, alpha, beta) order (default: the paper's 4,500
    point grid).  With ``n_bootstrap > 0`` the points are resampled with replacement and each
    resample is refitted from the ``bootstrap_starts`` best distinct full-data optima, then
    polished to convergence (see :func:`bootstrap_approach3`).

    ``flops_model`` (:mod:`scalinglab.scaling.flops_model`) is the runs' exact C(N, D); with
    ``flops_range`` (the runs' smallest and largest FLOPs) the result gets
    ``allocation_exponents``: the slopes of ln N_opt and ln D_opt vs ln C of the fitted law's
    optimum under that exact constraint across the range (comparable with approaches 1 and 2,
    which measure on the same runs). ``a``, ``b`` stay the closed-form β/(α+β), α/(α+β).

    Returns a JSON-able dict with ``E, A, B, alpha, beta, a, b, G`` (also under ``params``),
    ``objective`` (sum of Huber losses, the paper's objective), ``residuals`` (log L̂ − log L),
    ``n_points``, ``n_starts``, the tokens-per-parameter law and, when bootstrapped, ``ci``.
    """
    n = check_positive("params", n_params)
    d = check_positive("tokens", n_tokens)
    l = check_positive("loss", loss)
    if not (n.shape == d.shape == l.shape) or n.ndim != 1:
        raise UserError("params, tokens and loss must be 1-D columns of equal length")
    if n.size < len(LAW_PARAMS):
        raise UserError(f"the chinchilla law has {len(LAW_PARAMS)} parameters but the table has {n.size} points")
    if not (np.isfinite(huber_delta) and huber_delta > 0):
        raise UserError(f"--huber-delta must be positive, got {huber_delta}")
    starts_SP = hoffmann_grid() if starts is None else np.atleast_2d(np.asarray(starts, np.float64))
    data = fit_data(n, d, l, huber_delta)
    ones_N = np.ones(n.size)

    # 1) every start, a bounded number of lock-step L-BFGS iterations (float32 by default: it
    #    only has to reach the right basins); 2) polish the n_polish best distinct end points in
    #    float64 with a strong-Wolfe line search.
    wide = multistart.minimize_batch(
        _loss,
        starts_SP,
        np.broadcast_to(ones_N, (len(starts_SP), n.size)),
        data,
        dtype=wide_dtype,
        max_iter=wide_iter,
        gtol=1e-8,
        method="lockstep",
        value_and_grad_fn=_loss_value_and_grad,
    )
    cand = multistart.best_distinct(wide, max(bootstrap_starts, n_polish))
    if cand.size == 0:
        raise UserError("approach-3 fit diverged from every start (check the table's units)")
    fine = multistart.polish(_loss, wide.params_MP[cand], ones_N, data)
    order = np.argsort(np.where(np.isfinite(fine.value_M), fine.value_M, np.inf))
    x_best = fine.params_MP[order[0]]

    law = {k: float(v) for k, v in _to_law(x_best).items()}
    a, b, G = (float(v) for v in derived(law["A"], law["B"], law["alpha"], law["beta"]))
    params = {**law, "a": a, "b": b, "G": G}
    resid = log_predict(x_best, data["log_n"], data["log_d"]) - data["log_l"]
    result: dict = {
        "law": "chinchilla",
        "formula": FORMULA,
        "param_names": list(LAW_PARAMS + DERIVED),
        "params": params,
        **params,
        "objective": huber_objective(x_best, n, d, l, huber_delta),
        "objective_kind": f"sum of Huber(delta={huber_delta:g}) on log L residuals",
        "huber_delta": float(huber_delta),
        "residuals": residual_stats(resid),
        "n_points": int(n.size),
        "n_starts": int(len(starts_SP)),
        "optimizer": {
            "wide_pass": {
                "dtype": wide_dtype,
                "max_iter": wide_iter,
                "n_hit_max_iter": int(np.sum(wide.n_iter_M >= wide_iter)),
            },
            "polish": {
                "dtype": "float64",
                "n_candidates": int(cand.size),
                "grad_norm": float(fine.grad_norm_M[order[0]]),
                "n_iter": int(fine.n_iter_M[order[0]]),
            },
        },
        # D_opt/N_opt = k · C^(b − a), C in FLOPs, under C = 6ND
        "tokens_per_param": {"coef": float(G**-2 * 6.0 ** (a - b)), "exponent": float(b - a)},
    }
    if flops_model is not None:
        result["flops_model"] = dict(flops_model)
    samples = None
    if n_bootstrap > 0:
        x0_SP = fine.params_MP[order[: max(1, bootstrap_starts)]]
        samples, info = bootstrap_approach3(
            x0_SP,
            data,
            n_bootstrap=n_bootstrap,
            seed=seed,
            max_iter=bootstrap_iter,
            dtype=bootstrap_dtype,
            return_info=True,
        )
        result["optimizer"]["bootstrap"] = info
        result.update(bootstrap_fields(samples, level))
    if flops_model is not None and flops_range is not None:
        result["allocation_exponents"] = allocation_exponents(params, flops_model, flops_range, samples, level)
    return result


ALLOCATION_BUDGETS = 9


def allocation_exponents(
    params: dict, flops_model: dict, flops_range, samples: dict | None = None, level: float = DEFAULT_LEVEL
) -> dict:
    """Slopes ``a``, ``b`` of ln N_opt, ln D_opt vs ln C for the law's optimum under the exact
    C(N, D) at 9 budgets log-spaced over ``flops_range`` (FLOPs), with bootstrap intervals
    from ``samples`` when given. Under C = 6ND these equal β/(α+β) and α/(α+β)."""
    from scalinglab.scaling.bootstrap import percentile_interval
    from scalinglab.scaling.powerlaw import fit_loglinear

    lo, hi = (float(v) for v in flops_range)
    budgets = np.geomspace(lo, hi, ALLOCATION_BUDGETS) if hi > lo else np.array([lo / 3.0, lo * 3.0])
    lc = np.log(budgets)

    def slopes(p):
        n_opt, d_opt = compute_optimal(p, budgets[None, :] if np.ndim(p["A"]) else budgets, flops_model)
        with np.errstate(all="ignore"):
            return fit_loglinear(lc, np.log(n_opt))[1], fit_loglinear(lc, np.log(d_opt))[1]

    a, b = slopes(params)
    out = {
        "a": float(a),
        "b": float(b),
        "flops_range": [float(budgets[0]), float(budgets[-1])],
        "constraint": "6ND" if flops_model.get("c0", 0.0) == 0.0 else "exact C = D*(c1*N + c0*N^gamma)",
    }
    if samples is not None:
        s = {k: np.asarray(samples[k], np.float64)[:, None] for k in ("A", "B", "E", "alpha", "beta")}
        a_k, b_k = slopes(s)
        out["ci"] = {"a": percentile_interval(a_k, level), "b": percentile_interval(b_k, level)}
    return out


def bootstrap_approach3(
    x0_SP: np.ndarray,
    data: dict,
    *,
    n_bootstrap: int,
    seed: int = 0,
    max_iter: int = 100,
    dtype: str = "float64",
    polish_iter: int = 500,
    return_info: bool = False,
):
    """Refit ``n_bootstrap`` resamples, each from every start in ``x0_SP`` (one batch of lock-step
    L-BFGS in ``dtype`` to |grad| <= 1e-6, a full step that no longer changes the objective, or
    ``max_iter``), keep each resample's best end point, then polish those that did not converge in
    float64 with the strong-Wolfe L-BFGS (|grad| <= 1e-9 or a relative objective change below
    1e-15, at most ``polish_iter`` iterations; :func:`multistart.polish_unconverged`).

    Returns ``{param: float[K]}`` for E, A, B, alpha, beta, a, b, G; with ``return_info`` also
    ``{"refit", "n_polished", "max_iter", "n_hit_max_iter", "n_not_converged", "max_grad_norm",
    "median_grad_norm"}`` (a refit that hit the limit is kept, and counted)."""
    n = data["log_n"].size
    counts_KN = resample_counts(n, n_bootstrap, seed=seed)
    s = len(x0_SP)
    x0_MP = np.tile(x0_SP, (n_bootstrap, 1))  # row k*s + j: resample k, start j
    weights_MN = np.repeat(counts_KN, s, axis=0)
    res = multistart.minimize_batch(
        _loss,
        x0_MP,
        weights_MN,
        data,
        dtype=dtype,
        max_iter=max_iter,
        gtol=1e-6,
        method="lockstep",
        value_and_grad_fn=_loss_value_and_grad,
    )
    value_KS = np.where(np.isfinite(res.value_M), res.value_M, np.inf).reshape(n_bootstrap, s)
    best = np.arange(n_bootstrap) * s + np.argmin(value_KS, axis=1)
    refit = multistart.take(res, best)
    refit.params_MP[~np.isfinite(refit.value_M)] = x0_SP[0]  # diverged from every start: polish from the best
    fine, info = multistart.polish_unconverged(_loss, refit, counts_KN, data, max_iter=polish_iter)
    x_KP = np.where(np.isfinite(fine.value_M)[:, None], fine.params_MP, np.nan)
    law = _to_law(x_KP)
    a, b, G = derived(law["A"], law["B"], law["alpha"], law["beta"])
    samples = {**law, "a": a, "b": b, "G": G}
    if not return_info:
        return samples
    gn = fine.grad_norm_M[np.isfinite(fine.grad_norm_M)]
    info = {
        "refit": "lock-step L-BFGS, then float64 strong-Wolfe polish of the refits that did not converge",
        **info,
        "n_not_converged": int(np.sum(~fine.converged_M)),
        "max_grad_norm": float(gn.max()) if gn.size else float("nan"),
        "median_grad_norm": float(np.median(gn)) if gn.size else float("nan"),
    }
    return samples, info
