"""Many L-BFGS minimisations at once: ``optax.lbfgs`` in a ``lax.while_loop``, ``jax.vmap``-ed.

A scaling-law fit is a small smooth problem (a handful of parameters, tens to hundreds of
points) solved from a grid of starting points and, for the bootstrap, once per resample.
Instead of a Python loop over (start, resample) pairs, :func:`minimize_batch` solves M
problems in one jitted call: row ``m`` starts at ``x0_MP[m]`` and weights the data points
by ``weights_MN[m]`` (ones for the plain fit, bootstrap counts for a resample).

Under ``vmap`` every row advances in lock step until the slowest one stops, so the cost is
``M × max_iter`` iterations, and with optax's zoom line search each iteration costs as many
objective evaluations as the worst row's line search needs. ``method="lockstep"`` instead
evaluates every row exactly once per iteration (a trial step that fails Armijo is rejected
and that row's step shortened). Callers run a wide, cheap lock-step pass (float32) over all
starts and then :func:`polish` the best few in float64 with the strong-Wolfe line search.
``jax.enable_x64`` is switched on locally for float64, never globally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree

# loss_fn(params_P, data, weights_N) -> scalar, where data is a pytree of float[N] arrays.
LossFn = Callable[[jax.Array, object, jax.Array], jax.Array]


class BatchResult(NamedTuple):
    """Solutions of M problems (numpy): ``params_MP``, ``value_M``, ``n_iter_M`` (iterations each row
    ran before it stopped), ``grad_norm_M`` and ``converged_M`` (bool: the row stopped on its gradient
    or objective tolerance, not on the iteration limit, a vanishing step or a non-finite value)."""

    params_MP: np.ndarray
    value_M: np.ndarray
    n_iter_M: np.ndarray
    grad_norm_M: np.ndarray
    converged_M: np.ndarray


def _solve_one(loss_fn, max_iter, gtol, ftol, ls_steps, x0_P, weights_N, data):
    """One L-BFGS run (zoom line search, strong Wolfe); stops on a small gradient norm,
    a relative objective change below ``ftol`` between iterates, or ``max_iter``."""

    def fun(p):
        return loss_fn(p, data, weights_N)

    opt = optax.lbfgs(
        memory_size=10,
        linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=ls_steps, initial_guess_strategy="one"),
    )
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        x, state, it, _ = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(x, updates), state, it + 1, value

    def cond(carry):
        _, state, it, f_before = carry
        value = optax.tree.get(state, "value")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        stalled = jnp.abs(f_before - value) <= ftol * jnp.maximum(jnp.abs(value), 1.0)
        converged = (grad_norm <= gtol) | stalled
        return (it == 0) | ((it < max_iter) & ~converged & jnp.isfinite(value))

    inf = jnp.asarray(jnp.inf, x0_P.dtype)
    x, _, it, _ = jax.lax.while_loop(cond, step, (x0_P, opt.init(x0_P), 0, inf))
    value, grad = jax.value_and_grad(fun)(x)
    return x, value, it, optax.tree.norm(grad), (it < max_iter) & jnp.isfinite(value)


def _fast_solve(loss_fn, value_and_grad_fn, max_iter, gtol, memory, x0_MP, weights_MN, data):
    """Batched L-BFGS with one objective evaluation per iteration (all rows in lock step).

    Each iteration takes the L-BFGS direction (two-loop recursion over the last ``memory``
    curvature pairs, newest last) with a per-row step length ``t`` (1 after an accepted step);
    a trial point that fails the Armijo condition (or is not finite) is rejected: the row stays
    where it was and quarters ``t``. No nested line-search loop, so under batching every
    iteration costs exactly one value-and-gradient pass over all rows. ``value_and_grad_fn``
    (same signature as ``loss_fn``, returning ``(value, grad_P)``) replaces autodiff when given.
    """
    value_and_grad = jax.vmap(value_and_grad_fn or jax.value_and_grad(loss_fn), in_axes=(0, None, 0))
    M, P = x0_MP.shape
    dtype = x0_MP.dtype
    f0, g0 = value_and_grad(x0_MP, data, weights_MN)

    def dot(a, b):
        return jnp.sum(a * b, axis=-1)

    def direction(g, S, Y, valid):
        rho = jnp.where(valid, 1.0 / jnp.where(valid, dot(S, Y), 1.0), 0.0)  # [M, m]
        q = g
        alphas = []
        for i in reversed(range(memory)):
            a_i = rho[:, i] * dot(S[:, i], q)
            q = q - a_i[:, None] * Y[:, i]
            alphas.append(a_i)
        alphas = alphas[::-1]
        sy, yy = dot(S[:, -1], Y[:, -1]), dot(Y[:, -1], Y[:, -1])
        gnorm = jnp.sqrt(dot(g, g))
        gamma = jnp.where(valid[:, -1], sy / jnp.where(valid[:, -1], yy, 1.0), 1.0 / jnp.maximum(gnorm, 1.0))
        r = gamma[:, None] * q
        for i in range(memory):
            b_i = rho[:, i] * dot(Y[:, i], r)
            r = r + S[:, i] * (alphas[i] - b_i)[:, None]
        d = -r
        descent = dot(g, d) < 0
        return jnp.where(descent[:, None], d, -g / jnp.maximum(gnorm, 1.0)[:, None])

    def cond(c):
        it, done = c[0], c[-2]
        return (it < max_iter) & ~jnp.all(done)

    def body(c):
        it, x, f, g, S, Y, valid, t, done, conv, n_it = c
        d = direction(g, S, Y, valid)
        # converged before the step: the quasi-Newton model predicts that the full step would lower f
        # by less than 1e-12 relative (g·H⁻¹g / 2, the Newton decrement; needs a curvature pair)
        flat = ~done & valid[:, -1] & (-dot(g, d) <= 2e-12 * jnp.abs(f))
        conv, done = conv | flat, done | flat
        n_it = jnp.where(done, n_it, it + 1)
        x_new = x + t[:, None] * d
        f_new, g_new = value_and_grad(x_new, data, weights_MN)
        finite = jnp.isfinite(f_new) & jnp.all(jnp.isfinite(g_new), axis=-1)
        ok = ~done & finite & (f_new <= f + 1e-4 * t * dot(g, d))  # Armijo
        # a row is done (and frozen) at a small gradient, a vanishing step, or an accepted step that
        # changed f by less than 1e-12 relative (at a kink of a Huber loss the gradient stays large)
        stalled = ok & (jnp.abs(f - f_new) <= 1e-12 * jnp.abs(f))
        # converged: a small gradient, or a full quasi-Newton step (t = 1) that no longer changes f;
        # a stall after shortened steps (t < 1) stops the row too but counts as not converged
        stalled_full = stalled & (t == 1.0)
        s, y = x_new - x, g_new - g
        store = ok & (dot(s, y) > 1e-10 * jnp.sqrt(dot(s, s) * dot(y, y)))
        roll = lambda H, new: jnp.concatenate([H[:, 1:], new[:, None]], axis=1)  # noqa: E731
        S = jnp.where(store[:, None, None], roll(S, s), S)
        Y = jnp.where(store[:, None, None], roll(Y, y), Y)
        valid = jnp.where(store[:, None], jnp.concatenate([valid[:, 1:], store[:, None]], axis=1), valid)
        x = jnp.where(ok[:, None], x_new, x)
        f = jnp.where(ok, f_new, f)
        g = jnp.where(ok[:, None], g_new, g)
        t = jnp.where(ok, 1.0, 0.25 * t).astype(dtype)
        small = jnp.sqrt(dot(g, g)) <= gtol
        conv = conv | (~done & (small | stalled_full))
        done = done | stalled | small | (t <= 1e-10) | ~jnp.isfinite(f)
        return it + 1, x, f, g, S, Y, valid, t, done, conv, n_it

    zeros = jnp.zeros((M, memory, P), dtype)
    conv0 = (jnp.sqrt(dot(g0, g0)) <= gtol) & jnp.isfinite(f0)
    done0 = conv0 | ~jnp.isfinite(f0)
    n_it0 = jnp.zeros((M,), jnp.int32)
    init = (0, x0_MP, f0, g0, zeros, zeros, jnp.zeros((M, memory), bool), jnp.ones((M,), dtype), done0, conv0, n_it0)
    it, x, f, g, *_, conv, n_it = jax.lax.while_loop(cond, body, init)
    return x, f, n_it, jnp.sqrt(dot(g, g)), conv


@functools.lru_cache(maxsize=64)
def _compiled(
    loss_fn: LossFn, method: str, max_iter: int, gtol: float, ftol: float, ls_steps: int, value_and_grad_fn=None
):
    if method == "lockstep":
        return jax.jit(functools.partial(_fast_solve, loss_fn, value_and_grad_fn, max_iter, gtol, 10))
    solve = functools.partial(_solve_one, loss_fn, max_iter, gtol, ftol, ls_steps)
    return jax.jit(jax.vmap(solve, in_axes=(0, 0, None)))


def minimize_batch(
    loss_fn: LossFn,
    x0_MP: np.ndarray,
    weights_MN: np.ndarray,
    data: object,
    *,
    dtype: str = "float64",
    max_iter: int = 500,
    gtol: float = 1e-10,
    ftol: float = 1e-15,
    ls_steps: int = 10,
    method: str = "zoom",
    value_and_grad_fn: Callable | None = None,
) -> BatchResult:
    """Minimise ``loss_fn(x, data, weights_MN[m])`` from ``x0_MP[m]`` for every row m at once.

    ``loss_fn`` must be a module-level function (it keys the compile cache); ``data`` is a
    pytree of arrays shared by all rows; ``dtype`` is ``"float32"`` or ``"float64"``.
    Rows that diverge come back non-finite (callers rank rows by ``value_M``, NaN last).

    The line search is capped at ``ls_steps`` evaluations: under ``vmap`` every row waits for the
    row needing the most, so a short cap keeps an iteration at a few objective evaluations.
    M is padded to a bucket (repeated rows) and N to a power of two (zero-weight points) so
    that tables of similar size share one compilation.

    ``method``: ``"zoom"`` — optax L-BFGS with a strong-Wolfe zoom line search per row (robust;
    under vmap each iteration costs as many evaluations as the slowest row's line search);
    ``"lockstep"`` — :func:`_fast_solve`, one evaluation per iteration for all rows (``ftol`` and
    ``ls_steps`` unused), several times faster for wide batches of starts or resamples;
    ``value_and_grad_fn`` (module-level, like ``loss_fn``) supplies a hand-written gradient.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError("dtype must be float32 or float64")
    if method not in ("zoom", "lockstep"):
        raise ValueError("method must be zoom or lockstep")
    with jax.enable_x64(dtype == "float64"):
        solver = _compiled(loss_fn, method, int(max_iter), float(gtol), float(ftol), int(ls_steps), value_and_grad_fn)
        x0_MP = np.asarray(x0_MP, dtype=np.float64)
        weights_MN = np.asarray(weights_MN, dtype=np.float64)
        m, n = weights_MN.shape
        m_pad, n_pad = _bucket_rows(m), _bucket_points(n)
        rows = np.arange(m_pad) % m
        x0 = jnp.asarray(x0_MP[rows], dtype=dtype)
        w = jnp.asarray(np.pad(weights_MN[rows], ((0, 0), (0, n_pad - n))), dtype=dtype)
        d = jax.tree.map(lambda a: jnp.asarray(np.pad(np.asarray(a, np.float64), (0, n_pad - n)), dtype=dtype), data)
        x, value, it, gnorm, conv = solver(x0, w, d)
        out = BatchResult(
            np.asarray(x, np.float64)[:m],
            np.asarray(value, np.float64)[:m],
            np.asarray(it)[:m],
            np.asarray(gnorm, np.float64)[:m],
            np.asarray(conv, bool)[:m],
        )
    return out


def _bucket_rows(m: int) -> int:
    """Rows padded to a power of two up to 256, then to a multiple of 256."""
    if m <= 256:
        return max(8, 1 << (m - 1).bit_length())
    return -(-m // 256) * 256


def _bucket_points(n: int) -> int:
    """Points padded to a power of two (at least 16)."""
    return max(16, 1 << (n - 1).bit_length())


def best_distinct(result: BatchResult, k: int, *, decimals: int = 3) -> np.ndarray:
    """Indices of the ``k`` lowest-value finite rows whose parameters differ after rounding
    to ``decimals`` (so the k candidates are k different local optima, best first)."""
    order = np.argsort(np.where(np.isfinite(result.value_M), result.value_M, np.inf), kind="stable")
    chosen: list[int] = []
    seen: set[tuple] = set()
    for i in order:
        if not np.isfinite(result.value_M[i]):
            break
        key = tuple(np.round(result.params_MP[i], decimals))
        if key in seen:
            continue
        seen.add(key)
        chosen.append(int(i))
        if len(chosen) == k:
            break
    return np.asarray(chosen, dtype=np.int64)


def polish(
    loss_fn: LossFn,
    x0_KP: np.ndarray,
    weights_N: np.ndarray,
    data: object,
    *,
    max_iter: int = 1000,
) -> BatchResult:
    """Refine a few candidate optima ``x0_KP`` in float64 to tight tolerances (one weight row)."""
    x0_KP = np.atleast_2d(x0_KP)
    weights_KN = np.broadcast_to(np.asarray(weights_N, np.float64), (x0_KP.shape[0], len(weights_N)))
    return minimize_batch(loss_fn, x0_KP, weights_KN, data, dtype="float64", max_iter=max_iter, ls_steps=30)


def take(result: BatchResult, rows: np.ndarray) -> BatchResult:
    """The rows ``rows`` of a batch result (every field indexed alike)."""
    return BatchResult(*(np.asarray(field)[rows] for field in result))


def polish_unconverged(
    loss_fn: LossFn,
    result: BatchResult,
    weights_MN: np.ndarray,
    data: object,
    *,
    max_iter: int = 500,
    gtol: float = 1e-9,
    ftol: float = 1e-15,
) -> tuple[BatchResult, dict]:
    """Refine, in float64 with the strong-Wolfe L-BFGS, only the rows of ``result`` that did not
    converge (``~converged_M``: stopped on the iteration limit, a vanishing step or a stall after
    shortened steps); row m keeps weights ``weights_MN[m]``. A polished end point replaces the
    row's only when its objective is not worse.

    Polishing only those rows keeps the batch small: under ``vmap`` every row of a strong-Wolfe
    batch waits for the slowest one's line search, so polishing already-converged rows costs as
    much as polishing the hard ones. Returns the merged result (``converged_M`` after polish) and
    ``{"n_polished", "n_hit_max_iter", "max_iter"}`` (a row that hit ``max_iter`` is kept, and counted).
    """
    todo = np.flatnonzero(~np.asarray(result.converged_M, bool))
    info = {"n_polished": int(todo.size), "n_hit_max_iter": 0, "max_iter": int(max_iter)}
    if todo.size == 0:
        return result, info
    fine = minimize_batch(
        loss_fn,
        result.params_MP[todo],
        np.asarray(weights_MN)[todo],
        data,
        dtype="float64",
        max_iter=max_iter,
        gtol=gtol,
        ftol=ftol,
        ls_steps=30,
    )
    info["n_hit_max_iter"] = int(np.sum(fine.n_iter_M >= max_iter))
    return _merge(result, todo, fine), info


def _merge(result: BatchResult, rows: np.ndarray, new: BatchResult) -> BatchResult:
    """``result`` with ``rows`` continued by ``new`` (one row of ``new`` per index in ``rows``):
    a row takes the new end point when its objective is finite and not worse; iterations add up;
    the row counts as converged only when the new run converged and was taken."""
    old_value = np.where(np.isfinite(result.value_M[rows]), result.value_M[rows], np.inf)
    better = np.isfinite(new.value_M) & (new.value_M <= old_value)
    merged = BatchResult(*(np.array(field, copy=True) for field in result))
    for field, new_field in zip(merged, new):
        field[rows[better]] = new_field[better]
    merged.n_iter_M[rows] = result.n_iter_M[rows] + new.n_iter_M
    merged.converged_M[rows] = new.converged_M & better
    return merged


def minimize_converged(
    loss_fn: LossFn,
    x0_MP: np.ndarray,
    weights_MN: np.ndarray,
    data: object,
    *,
    gtol: float,
    max_iter: int,
    first_iter: int = 50,
    value_and_grad_fn: Callable | None = None,
    polish_iter: int = 500,
    polish_ftol: float = 1e-15,
) -> tuple[BatchResult, dict]:
    """Every row to convergence at a cost close to the rows' own iteration counts, in float64.

    Lock-step L-BFGS runs ``first_iter`` iterations on all rows; the rows that have not converged
    (typically a few) restart from where they are, compacted into a small batch, for up to
    ``max_iter - first_iter`` more; those still not converged get :func:`polish_unconverged`
    (strong-Wolfe L-BFGS, ``gtol``, ``polish_ftol``, ``polish_iter``). Under ``vmap`` a batch costs
    its slowest row's iterations times its size, so compacting the stragglers is what saves the time.
    Returns the result and the polish's counts (see :func:`polish_unconverged`).
    """
    kw = {"dtype": "float64", "gtol": gtol, "method": "lockstep", "value_and_grad_fn": value_and_grad_fn}
    res = minimize_batch(loss_fn, x0_MP, weights_MN, data, max_iter=min(first_iter, max_iter), **kw)
    todo = np.flatnonzero(~res.converged_M)
    if todo.size and max_iter > first_iter:
        more = minimize_batch(
            loss_fn, res.params_MP[todo], np.asarray(weights_MN)[todo], data, max_iter=max_iter - first_iter, **kw
        )
        res = _merge(res, todo, more)
    return polish_unconverged(loss_fn, res, weights_MN, data, max_iter=polish_iter, gtol=gtol, ftol=polish_ftol)
