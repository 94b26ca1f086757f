"""Gradient noise scale (McCandlish et al. 2018, "simple" noise scale B_simple).

Pure math, no model. Batch sizes are in examples (sequences for a language model),
so B_simple = tr(Σ)/|G|² is in sequences (multiply by seq_len for tokens).

Given the squared norm of a gradient averaged over ``b_small`` examples and of one
averaged over ``b_big`` examples (both estimates of the same true gradient G with
per-example covariance Σ), E|g_b|² = |G|² + tr(Σ)/b, so the unbiased estimates are

    |G|²  ≈ (b_big·|g_big|² − b_small·|g_small|²) / (b_big − b_small)
    tr(Σ) ≈ (|g_small|² − |g_big|²) / (1/b_small − 1/b_big)

Both are noisy (at small batch either can come out negative), so they are averaged before
taking the ratio, and never filtered by sign (dropping negative values would select the windows
where noise pushed the estimate up). Default: **windows of examples** — the per-step estimates are
summed, numerator and denominator separately, until the window holds at least ``window`` examples;
then B_simple = Σ tr Σ / Σ |G|² for that window, attributed to the window's centre step, and a new
window starts. A fixed number of examples per window gives every batch size of a sweep a similar
amount of data per estimate (a fixed EMA of steps averages 16× fewer examples at B = 4 than at
B = 64). ``window = 0`` keeps the older bias-corrected EMA (decay per step), updated every step.
"""

from __future__ import annotations

from typing import NamedTuple

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
    """Accumulators of the open window (or the EMA) and the last completed estimate.

    ``g2_acc``/``trace_acc``: Σ of the per-step estimates (EMA: Σ decay^k·x); ``weight``: Σ of their
    weights (steps in the window; EMA: Σ decay^k); ``examples``: examples in the open window;
    ``start``: first step of the open window; ``last_g2``/``last_trace``/``last_step``: the means of
    the last completed window and its centre step (NaN before the first); ``count``: steps folded in.
    """

    g2_acc: jax.Array
    trace_acc: jax.Array
    weight: jax.Array
    examples: jax.Array
    start: jax.Array
    last_g2: jax.Array
    last_trace: jax.Array
    last_step: jax.Array
    count: jax.Array  # int32


def init_state() -> GNSState:
    zero = lambda: jnp.zeros((), jnp.float32)  # noqa: E731 - distinct buffers (the state is donated)
    nan = lambda: jnp.full((), jnp.nan, jnp.float32)  # noqa: E731
    return GNSState(zero(), zero(), zero(), zero(), zero(), nan(), nan(), nan(), jnp.zeros((), jnp.int32))


def update(state: GNSState, g2, trace, *, n_examples, step, window: int = 0, decay: float = 0.95, ok=True) -> GNSState:
    """Fold one step's (|G|², tr Σ) into the state; a step with ``ok`` False leaves it as is.

    ``n_examples``: the step's (big) batch in examples; ``step``: its 1-based step number;
    ``window`` > 0: examples per window (the estimate updates when a window closes), else an EMA
    with ``decay`` per step (the estimate updates every step).
    """
    d = jnp.float32(1.0 if window > 0 else decay)
    g2_acc = d * state.g2_acc + g2
    trace_acc = d * state.trace_acc + trace
    weight = d * state.weight + 1.0
    examples = state.examples + jnp.float32(n_examples)
    step = jnp.float32(step)
    start = jnp.where(state.weight == 0, step, state.start)
    close = examples >= window if window > 0 else jnp.bool_(True)
    centre = 0.5 * (start + step) if window > 0 else step
    reset = close & (window > 0)
    keep_open = lambda x: jnp.where(reset, jnp.zeros_like(x), x)  # noqa: E731
    new = GNSState(
        keep_open(g2_acc),
        keep_open(trace_acc),
        keep_open(weight),
        keep_open(examples),
        start,
        jnp.where(close, g2_acc / weight, state.last_g2),
        jnp.where(close, trace_acc / weight, state.last_trace),
        jnp.where(close, centre, state.last_step),
        state.count + 1,
    )
    return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)


def estimate(state: GNSState):
    """(g2, trace, b_simple, step) of the last completed window (or the EMA); NaN before the first."""
    return state.last_g2, state.last_trace, state.last_trace / state.last_g2, state.last_step
