"""The jitted train step on a real tiny transformer: accumulation, learning, non-finite skip."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from scalinglab.models.config import get_config
from scalinglab.models.transformer import Transformer
from scalinglab.train import step as step_lib
from scalinglab.train.loss import make_lm_loss
from scalinglab.train.optimizer import make_optimizer


def _setup(preset="gpt2-tiny", lr=1e-3, seed=0):
    """A one-layer gpt2-tiny (compile time dominates these tests) and its LM loss."""
    model = Transformer(get_config(preset, {"n_layer": 1}), rngs=nnx.Rngs(params=seed))
    graphdef, state = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    schedule = optax.constant_schedule(lr)
    opt = make_optimizer(schedule, weight_decay=0.1, clip=1.0)
    return make_lm_loss(graphdef), params, opt, schedule


def _tokens(batch, seq_len, seed=0, vocab=257):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, size=(batch, seq_len + 1)), jnp.int32)


def _flat(tree):
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_grad_accum_4_equals_one_big_batch():
    # plain SGD (lr 1): the parameter change is exactly the averaged gradient
    loss_fn, params, _, schedule = _setup()
    opt = optax.sgd(1.0)
    batch = _tokens(16, 32)
    outs = {}
    for accum in (1, 4):
        step = jax.jit(step_lib.make_train_step(loss_fn, opt, schedule, grad_accum=accum, gns=False, has_aux=True))
        state, m = step(step_lib.init_state(params, opt), batch)
        outs[accum] = (state, m)
    (s1, m1), (s4, m4) = outs[1], outs[4]
    np.testing.assert_allclose(float(m4["loss"]), float(m1["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m4["grad_norm"]), float(m1["grad_norm"]), rtol=1e-5)
    p0 = _flat(params)
    d1, d4 = _flat(s1["params"]) - p0, _flat(s4["params"]) - p0
    assert np.abs(d1).max() > 1e-3  # the update really moved the parameters
    np.testing.assert_allclose(d4, d1, rtol=1e-4, atol=1e-5 * np.abs(d1).max())
    assert np.linalg.norm(d4 - d1) <= 1e-5 * np.linalg.norm(d1)


@functools.cache
def _adamw_step():
    """One compiled AdamW step (lr 1e-2, GNS on two halves) shared by the tests below."""
    loss_fn, params, opt, schedule = _setup(lr=1e-2)
    return jax.jit(step_lib.make_train_step(loss_fn, opt, schedule, has_aux=True)), params, opt


def test_loss_goes_to_zero_on_one_repeated_batch():
    step, params, opt = _adamw_step()
    batch = _tokens(8, 32, seed=3)
    state = step_lib.init_state(params, opt)
    losses = []
    for _ in range(150):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[0] > np.log(257) - 0.5  # starts near uniform over the byte vocabulary
    assert losses[-1] < 0.05, losses[-10:]


def test_nan_batch_is_skipped_and_counted():
    step, params, opt = _adamw_step()
    state = step_lib.init_state(params, opt)
    good = _tokens(8, 32, seed=1)
    state, m = step(state, good)
    before = _flat(state["params"])
    # token id == vocab_size is out of range: the embedding gather fills NaN → loss NaN
    bad = good.at[0, 3].set(257)
    state, m = step(state, bad)
    assert not bool(m["finite"]) and np.isnan(float(m["loss"]))
    assert int(m["skipped"]) == 1 and int(m["bad_streak"]) == 1 and int(state["step"]) == 2
    np.testing.assert_array_equal(_flat(state["params"]), before)
    assert np.isfinite(_flat(state["opt_state"])).all()
    state, m = step(state, good)
    assert bool(m["finite"]) and int(m["skipped"]) == 1 and int(m["bad_streak"]) == 0
    assert np.abs(_flat(state["params"]) - before).max() > 0


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_master_weights():
    cfg = get_config("gpt2-tiny", {"n_layer": 1})
    batch = _tokens(8, 32, seed=5)
    losses = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        graphdef, state = nnx.split(Transformer(cfg, rngs=nnx.Rngs(params=0), dtype=dtype), nnx.Param)
        params = nnx.to_pure_dict(state)
        opt = make_optimizer(1e-3)
        step = jax.jit(
            step_lib.make_train_step(
                make_lm_loss(graphdef), opt, optax.constant_schedule(1e-3), gns=False, has_aux=True
            )
        )
        new, m = step(step_lib.init_state(params, opt), batch)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["params"]))
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["opt_state"]) if x.ndim)
        losses[dtype] = float(m["loss"])
    # same initial weights: bf16 rounding changes the loss only slightly (relative ~1e-2 at most)
    assert losses[jnp.bfloat16] != losses[jnp.float32]
    assert abs(losses[jnp.bfloat16] - losses[jnp.float32]) < 1e-2 * losses[jnp.float32]
