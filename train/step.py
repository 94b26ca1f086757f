"""One training step: gradients (with accumulation), GNS statistics, AdamW update, non-finite skip.

The step is generic over ``loss_fn(params, batch) -> scalar mean loss``, where ``batch``
is a pytree whose leaves have a leading example axis (for a language model,
``int32[batch, seq_len + 1]``). The state is a dict pytree::

    {"params", "opt_state", "step" (int32, batches consumed), "skipped" (int32, total
     non-finite steps), "bad_streak" (int32, consecutive non-finite steps), "gns" (GNSState)}

Gradient noise scale, small vs big batch (see :mod:`scalinglab.train.gns`):

* ``grad_accum ≥ 2``: each microbatch gradient is a small batch (``B/grad_accum`` examples);
* else ``gns_groups = G ≥ 2``: the batch is split into G groups, with ``group_sharding`` the
  per-data-shard gradients under data parallelism (a ``vmap`` whose group axis is sharded
  over ``data``: each device differentiates its own shard, the mean is the all-reduce),
  without it G microbatches taken in sequence (e.g. two halves on one device);
* the big batch is always the full gradient of all ``B`` examples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scalinglab.models.sharding import activation_sharding
from scalinglab.train import gns as gns_lib

LossFn = Callable[[Any, Any], jax.Array]


def global_sq_norm(tree: Any) -> jax.Array:
    """Σ of squared entries over every leaf, in float32."""
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def init_state(params: Any, optimizer: optax.GradientTransformation) -> dict[str, Any]:
    zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731 - distinct buffers (the state is donated)
    return {
        "params": params,
        "opt_state": optimizer.init(params),
        "step": zero(),
        "skipped": zero(),
        "bad_streak": zero(),
        "gns": gns_lib.init_state(),
    }


def _strided_split(batch: Any, n: int) -> Any:
    """[B, ...] → [n, B/n, ...] with group j = examples j, j+n, j+2n, … (keeps the sharded axis local)."""

    def split(x):
        y = x.reshape((x.shape[0] // n, n) + x.shape[1:])
        return jnp.swapaxes(y, 0, 1)

    return jax.tree.map(split, batch)


def _contiguous_split(batch: Any, n: int, sharding: NamedSharding) -> Any:
    """[B, ...] → [n, B/n, ...] with group g = the g-th contiguous block (= the g-th data shard),
    constrained to ``sharding`` (group axis over ``data``)."""

    def split(x):
        y = x.reshape((n, x.shape[0] // n) + x.shape[1:])
        spec = P(*sharding.spec, *([None] * (y.ndim - len(sharding.spec))))
        return jax.lax.with_sharding_constraint(y, NamedSharding(sharding.mesh, spec))

    return jax.tree.map(split, batch)


def make_train_step(
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    grad_accum: int = 1,
    gns: bool = True,
    gns_groups: int = 2,
    gns_window: int = 1024,
    gns_ema: float = 0.95,
    group_sharding: NamedSharding | None = None,
    has_aux: bool = False,
    mesh: Mesh | None = None,
    params_sharding: Any | None = None,
) -> Callable[[dict, Any], tuple[dict, dict]]:
    """Build ``step(state, batch) -> (state, metrics)`` (not jitted; see :func:`jit_train_step`).

    ``group_sharding`` (optional) is the sharding of the ``[G, B/G, ...]`` grouped batch,
    e.g. ``P('data', 'fsdp')`` so each group is one data shard. With ``has_aux``, ``loss_fn``
    returns ``(objective, reported_loss)``: gradients of the objective (e.g. with z-loss),
    the metric ``loss`` is the reported one (e.g. the plain cross-entropy). ``mesh`` (optional):
    the model's activations are batch-sharded on it while traced (``sharding.activation_sharding``).
    ``params_sharding`` (optional): the accumulated microbatch gradients are kept in it (as the
    parameters: sharded under fsdp) rather than left to XLA, which may keep them whole per device.
    metrics: loss, grad_norm (before clipping), lr, finite, skipped, gns_g2, gns_trace,
    gns_b_simple, gns_step (the last completed window of ``gns_window`` examples and its centre
    step; ``gns_window`` 0: a bias-corrected EMA with ``gns_ema`` per step; NaN when GNS is off or
    before the first window closes).
    """
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def pinned(axes: tuple[str, ...]):
        """The model's activations batch-sharded over ``axes`` of ``mesh`` while traced (none without a mesh)."""
        return contextlib.nullcontext() if mesh is None else activation_sharding(mesh, axes)

    def like_params(tree):
        """``tree`` (params-shaped) constrained to ``params_sharding`` (unchanged without one)."""
        return tree if params_sharding is None else jax.lax.with_sharding_constraint(tree, params_sharding)

    def grad_fn(params, batch):
        value, grads = value_and_grad(params, batch)
        return (value[1] if has_aux else value), grads

    def gradients(params, batch):
        n_examples = jax.tree.leaves(batch)[0].shape[0]
        # Without a group sharding the small batches are taken one after the other (a scan over
        # microbatches, like accumulation): the same FLOPs as one big gradient plus one squared norm
        # per microbatch, and no G stacked gradient copies as a vmap over groups would hold (on the
        # 2-core CPU benchmark this step is even faster than one full-batch gradient).
        sequential_groups = gns and gns_groups > 1 and group_sharding is None
        n_micro = grad_accum if grad_accum > 1 else (gns_groups if sequential_groups else 1)
        if n_micro > 1:
            micro = _strided_split(batch, n_micro)

            def body(carry, mb):
                g_sum, loss_sum, sq_sum = carry
                loss, g = grad_fn(params, mb)
                g_sum = like_params(jax.tree.map(jnp.add, g_sum, like_params(g)))
                return (g_sum, loss_sum + loss, sq_sum + global_sq_norm(g)), None

            zeros = like_params(jax.tree.map(jnp.zeros_like, params))
            with pinned(("data", "fsdp")):
                (g_sum, loss_sum, sq_sum), _ = jax.lax.scan(body, (zeros, 0.0, 0.0), micro)
            grads = jax.tree.map(lambda g: g / n_micro, g_sum)
            return loss_sum / n_micro, grads, sq_sum / n_micro, n_examples / n_micro
        if gns and gns_groups > 1:  # one group per data shard: each device takes its own gradient
            groups = _contiguous_split(batch, gns_groups, group_sharding)
            with pinned(("fsdp",)):  # the group axis is on ``data``, each group's batch on ``fsdp``
                losses, group_grads = jax.vmap(grad_fn, in_axes=(None, 0))(params, groups)
            sq_small = jnp.mean(jax.vmap(global_sq_norm)(group_grads))
            grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), group_grads)
            return jnp.mean(losses), grads, sq_small, n_examples / gns_groups
        with pinned(("data", "fsdp")):
            loss, grads = grad_fn(params, batch)
        return loss, grads, jnp.float32(jnp.nan), None

    def step(state: dict, batch: Any) -> tuple[dict, dict]:
        params, opt_state = state["params"], state["opt_state"]
        n_examples = jax.tree.leaves(batch)[0].shape[0]
        loss, grads, sq_small, b_small = gradients(params, batch)
        sq_big = global_sq_norm(grads)
        grad_norm = jnp.sqrt(sq_big)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, new_params, params)
        opt_state = jax.tree.map(keep, new_opt_state, opt_state)

        gns_state = state["gns"]
        if b_small is not None and gns:
            g2, trace = gns_lib.unbiased_estimates(sq_small, sq_big, b_small, n_examples)
            gns_state = gns_lib.update(
                gns_state,
                g2,
                trace,
                n_examples=n_examples,
                step=state["step"] + 1,
                window=gns_window,
                decay=gns_ema,
                ok=finite,
            )
        g2_c, trace_c, b_simple, gns_step = gns_lib.estimate(gns_state)

        applied = state["step"] - state["skipped"]  # optimizer updates applied before this one
        bad = (~finite).astype(jnp.int32)
        new_state = {
            **state,  # anything else (e.g. the run's RNG) passes through unchanged
            "params": params,
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "skipped": state["skipped"] + bad,
            "bad_streak": (state["bad_streak"] + bad) * bad,
            "gns": gns_state,
        }
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": jnp.asarray(schedule(applied), jnp.float32),
            "finite": finite,
            "skipped": new_state["skipped"],
            "bad_streak": new_state["bad_streak"],
            "gns_g2": g2_c,
            "gns_trace": trace_c,
            "gns_b_simple": b_simple,
            "gns_step": gns_step,
        }
        return new_state, metrics

    return step


def jit_train_step(step: Callable, state_shardings: Any, batch_sharding: Any) -> Callable:
    """jit with explicit in/out shardings; the state buffers are donated (updated in place)."""
    replicated = jax.tree.map(lambda s: NamedSharding(s.mesh, P()), batch_sharding)
    metric_sharding = jax.tree.leaves(replicated)[0]
    return jax.jit(
        step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, metric_sharding),
        donate_argnums=(0,),
    )


def make_eval_step(loss_fn: LossFn, params_shardings: Any, batch_sharding: Any) -> Callable:
    """jitted ``eval(params, batch) -> mean loss`` with the training shardings."""
    mesh = jax.tree.leaves(batch_sharding)[0].mesh

    def evaluate(params, batch):
        with activation_sharding(mesh):
            return loss_fn(params, batch)

    return jax.jit(evaluate, in_shardings=(params_shardings, batch_sharding), out_shardings=NamedSharding(mesh, P()))
