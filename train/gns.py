"""Gradient noise scale (McCandlish et al. 2018, "simple" noise scale B_simple).

Pure math, no model. Batch sizes are in examples (sequences for a language model),
so B_simple = tr(Σ)/|G|² is in sequences (multiply by seq_len for tokens).

Given the squared norm of a gradient averaged over ``b_small`` examples and of one
averaged over ``b_big`` examples (both estimates of the same true gradient G with
per-example covariance Σ), E|g_b|² = |G|² + tr(Σ)/b, so the unbiased estimates are

    |G|²  ≈ (b_big·|g_big|² − b_small·|g_small|²) / (b_big − b_small)
    tr(Σ) ≈ (|g_small|² − |g_big|²) / (1/b_small − 1/b_big)

Both are noisy; each is smoothed by an exponential moving average (bias-corrected,
as in Adam) before taking the ratio.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


def unbiased_estimates(sq_norm_small, sq_norm_big, b_small, b_big):
    """(|G|², tr Σ) from mean squared norms at batch sizes ``b_small < b_big`` (examples)."""
    b_small = jnp.asarray(b_small, jnp.float32)
    b_big = jnp.asarray(b_big, jnp.float32)
    g2 = (b_big * sq_norm_big - b_small * sq_norm_small) / (b_big - b_small)
    trace = (sq_norm_small - sq_norm_big) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


class GNSState(NamedTuple):
    """EMA accumulators (not bias-corrected) and the number of updates folded in."""

    g2_ema: jax.Array
    trace_ema: jax.Array
    count: jax.Array  # int32


def init_state() -> GNSState:
    return GNSState(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))


def update(state: GNSState, g2, trace, decay: float, ok=True) -> GNSState:
    """Fold one (|G|², tr Σ) pair into the EMAs; a step with ``ok`` False leaves the state as is."""
    new = GNSState(
        decay * state.g2_ema + (1.0 - decay) * g2,
        decay * state.trace_ema + (1.0 - decay) * trace,
        state.count + 1,
    )
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)


def corrected(state: GNSState, decay: float):
    """Bias-corrected EMAs and their ratio: (g2, trace, b_simple); NaN before the first update."""
    correction = 1.0 - jnp.power(jnp.float32(decay), state.count.astype(jnp.float32))
    g2 = state.g2_ema / correction
    trace = state.trace_ema / correction
    return g2, trace, trace / g2


def per_example_estimate(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any) -> dict[str, jax.Array]:
    """Exact diagnostic from per-example gradients (vmap of grad), for tests.

    ``loss_fn(params, batch)`` is the mean loss over a batch; ``batch`` is a pytree whose
    leaves have a leading example axis of size n. With per-example gradients g_i, mean ḡ:
    tr Σ ≈ Σ_i |g_i − ḡ|² / (n − 1) (unbiased) and |G|² ≈ |ḡ|² − tr Σ / n (unbiased).
    """

    def one(example):
        return jax.grad(loss_fn)(params, jax.tree.map(lambda x: x[None], example))

    grads = jax.vmap(one)(batch)
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)
    n = flat.shape[0]
    mean = flat.mean(axis=0)
    trace = jnp.sum((flat - mean) ** 2) / (n - 1)
    g2 = jnp.sum(mean**2) - trace / n
    return {"g2": g2, "trace": trace, "b_simple": trace / g2}
