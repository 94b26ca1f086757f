"""GNS estimator vs closed form on linear regression, and vs the per-example diagnostic.

Model: x ~ N(0, I_d), y = x·w* + ε, ε ~ N(0, σ²), loss ½(x·w − y)². With δ = w − w*, the
per-example gradient g = (x·δ − ε)x has mean G = δ and covariance
Σ = (|δ|² + σ²) I + δδᵀ (Isserlis), so tr Σ = d(|δ|² + σ²) + |δ|², B_simple = tr Σ / |δ|².
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from scalinglab.train import gns
from scalinglab.train import step as step_lib


def per_example_estimate(loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any) -> dict[str, jax.Array]:
    """Exact diagnostic from per-example gradients (vmap of grad): the independent reference.

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


D, SIGMA = 16, 1.0
WINDOW = 200 * 64  # examples per B_simple window: 200 steps of 64, so 600 steps close three windows


def loss_fn(params, batch):
    r = batch["x"] @ params["w"] - batch["y"]
    return 0.5 * jnp.mean(r**2)


def problem(seed=0):
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=D).astype(np.float32)
    delta = rng.normal(size=D).astype(np.float32)
    delta *= 1.0 / np.linalg.norm(delta)  # |δ|² = 1
    w = w_star + delta
    g2 = float(delta @ delta)
    trace = D * (g2 + SIGMA**2) + g2
    return w_star, {"w": jnp.asarray(w)}, {"g2": g2, "trace": trace, "b_simple": trace / g2}


def sample(key, w_star, n):
    kx, ke = jax.random.split(key)
    x = jax.random.normal(kx, (n, D))
    y = x @ w_star + SIGMA * jax.random.normal(ke, (n,))
    return {"x": x, "y": y}


def test_unbiased_estimates_invert_expectations():
    # E|g_b|² = |G|² + tr Σ / b exactly → the estimator returns (|G|², tr Σ).
    g2, trace = 2.5, 40.0
    s, b = g2 + trace / 8, g2 + trace / 64
    est_g2, est_trace = gns.unbiased_estimates(s, b, 8, 64)
    np.testing.assert_allclose([est_g2, est_trace], [g2, trace], rtol=1e-6)


def test_ema_bias_correction():
    st = gns.init_state()
    for i in range(3):
        st = gns.update(st, 2.0, 6.0, n_examples=8, step=i + 1, window=0, decay=0.9)
    g2, trace, b, step = gns.estimate(st)
    np.testing.assert_allclose([g2, trace, b, step], [2.0, 6.0, 3.0, 3.0], rtol=1e-6)
    st2 = gns.update(st, jnp.nan, jnp.nan, n_examples=8, step=4, window=0, decay=0.9, ok=False)
    assert int(st2.count) == 3 and float(st2.g2_acc) == float(st.g2_acc)


def test_windows_sum_numerator_and_denominator_and_keep_negatives():
    """Windows of 32 examples at 8 per step close every 4 steps; the estimate is Σ tr / Σ |G|² over the
    window (not a mean of ratios), attributed to the window's centre step; negative sums are kept."""
    g2s = [1.0, -0.5, 2.0, 0.5, -1.0, -0.2, 0.4, 0.1, 3.0]
    traces = [10.0, 4.0, -2.0, 8.0, 5.0, 6.0, 7.0, 2.0, 1.0]
    st = gns.init_state()
    seen = []
    for i, (g2, tr) in enumerate(zip(g2s, traces)):
        st = gns.update(st, g2, tr, n_examples=8, step=i + 1, window=32)
        seen.append([float(x) for x in gns.estimate(st)])
    assert all(np.isnan(v).all() for v in seen[:3])  # no window closed yet
    np.testing.assert_allclose(seen[3], [3.0 / 4, 20.0 / 4, 20.0 / 3.0, 2.5], rtol=1e-6)
    np.testing.assert_allclose(seen[6], seen[3])  # the second window is still open
    np.testing.assert_allclose(seen[7], [-0.7 / 4, 20.0 / 4, 20.0 / -0.7, 6.5], rtol=1e-6)  # negative: kept
    assert float(st.weight) == 1.0 and float(st.examples) == 8.0 and float(st.start) == 9.0  # third window open


def _data_parallel_step(opt):
    """Small batch = each data shard's gradient on a (data=4, fsdp=2) mesh of the forced CPU devices."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from scalinglab.models.sharding import make_mesh

    mesh = make_mesh(data=4, fsdp=2)
    step = step_lib.make_train_step(
        loss_fn,
        opt,
        optax.constant_schedule(0.0),
        gns_window=WINDOW,
        gns_groups=4,
        group_sharding=NamedSharding(mesh, P("data", "fsdp")),
    )
    rep = NamedSharding(mesh, P())
    batch_sh = {"x": NamedSharding(mesh, P(("data", "fsdp"), None)), "y": NamedSharding(mesh, P(("data", "fsdp")))}
    return jax.jit(step, in_shardings=(rep, batch_sh), out_shardings=(rep, rep))


@pytest.mark.parametrize("mode", ["accum", "groups", "data_shards"])
def test_in_loop_b_simple_matches_closed_form(mode):
    w_star, params, truth = problem()
    opt = optax.sgd(0.0)  # parameters stay fixed: G and Σ are constant
    if mode == "data_shards":
        step = _data_parallel_step(opt)
    else:
        kwargs = dict(grad_accum=4) if mode == "accum" else dict(gns_groups=4)
        step = jax.jit(
            step_lib.make_train_step(loss_fn, opt, optax.constant_schedule(0.0), gns_window=WINDOW, **kwargs)
        )
    state = step_lib.init_state(params, opt)
    key = jax.random.key(1)
    for i in range(600):
        state, m = step(state, sample(jax.random.fold_in(key, i), w_star, 64))
    assert float(m["gns_step"]) == pytest.approx(500.5)  # centre of the last window, steps 401..600
    assert abs(float(m["gns_b_simple"]) / truth["b_simple"] - 1) < 0.10
    assert abs(float(m["gns_trace"]) / truth["trace"] - 1) < 0.10
    assert abs(float(m["gns_g2"]) / truth["g2"] - 1) < 0.15
    diag = per_example_estimate(loss_fn, params, sample(jax.random.key(7), w_star, 8192))
    assert abs(float(diag["b_simple"]) / truth["b_simple"] - 1) < 0.10
    assert abs(float(diag["trace"]) / truth["trace"] - 1) < 0.05
    # in-loop and exact diagnostic agree with each other
    assert abs(float(m["gns_b_simple"]) / float(diag["b_simple"]) - 1) < 0.15
