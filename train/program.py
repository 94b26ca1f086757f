"""The compiled training program of one run: mesh, shardings, abstract state, train and eval steps.

:func:`build_program` turns a :class:`TrainConfig` and the resolved :class:`ModelConfig` into a
:class:`TrainProgram`; it needs no data and allocates no weights (the train step is compiled
ahead of time against the abstract, sharded state), so the loop, and anything that only wants
to compile or inspect the step, start from the same object.

Shapes: the global batch is ``int32[batch_size, seq_len + 1]`` sharded over (data, fsdp); the
state is the dict pytree of :mod:`scalinglab.train.step` with parameters sharded by the
logical-axis rules of :mod:`scalinglab.models.sharding` and everything else replicated.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scalinglab.errors import UserError
from scalinglab.models import accounting, sharding
from scalinglab.models.config import ModelConfig
from scalinglab.models.transformer import Transformer, matmul_impl_for
from scalinglab.train import step as step_lib
from scalinglab.train.config import TrainConfig
from scalinglab.train.loss import make_lm_loss
from scalinglab.train.optimizer import optimizer_from_config
from scalinglab.train.schedules import schedule_from_config


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    """Everything the loop runs, built once per run by :func:`build_program`."""

    model_cfg: ModelConfig
    mesh: Mesh
    mesh_shape: dict[str, int]  # {"data", "fsdp", "tensor"} axis sizes
    batch_sharding: NamedSharding  # of a global batch int32[B, seq_len + 1]
    state_sharding: Any  # pytree of NamedSharding shaped like the state
    abstract_state: Any  # pytree of jax.ShapeDtypeStruct with shardings (what checkpoints restore into)
    init_state: Callable[[], dict[str, Any]]  # the initial state (seeded weights, zero counters), unsharded
    train_step: Callable  # compiled: (state, batch) -> (state, metrics); the state is donated
    eval_step: Callable  # jitted: (params, batch) -> mean cross-entropy, nats/token
    eval_batch_size: int  # global sequences per eval batch
    schedule: optax.Schedule  # step -> learning rate

    def fresh_state(self) -> dict[str, Any]:
        """The initial state, created directly in its shardings."""
        return jax.jit(self.init_state, out_shardings=self.state_sharding)()


@dataclasses.dataclass(frozen=True)
class LoweredStep:
    """The train step lowered for a device set, not yet compiled (``scalinglab aot`` compiles it for a
    TPU topology it does not have)."""

    lowered: Any  # jax.stages.Lowered of the jitted, state-donating step
    abstract_state: Any
    mesh_shape: dict[str, int]
    micro_steps: int  # iterations of the step's microbatch loop (accumulation, sequential GNS halves); 1: none


def build_program(
    cfg: TrainConfig, model_cfg: ModelConfig, *, devices: Sequence[Any] | None = None, n_processes: int | None = None
) -> TrainProgram:
    """Mesh, shardings, abstract state and compiled steps for ``cfg`` (validated) and ``model_cfg``.

    ``devices`` default to all of ``jax.devices()``, ``n_processes`` to ``jax.process_count()``.
    Raises UserError when the batch sizes do not divide over the mesh and the processes.
    """
    parts = _lowered_parts(cfg, model_cfg, devices, n_processes)
    parts.pop("micro_steps")
    return TrainProgram(train_step=parts.pop("lowered").compile(), **parts)


def lower_train_step(
    cfg: TrainConfig, model_cfg: ModelConfig, *, devices: Sequence[Any], n_processes: int | None = None
) -> LoweredStep:
    """The train step of :func:`build_program`, lowered for ``devices`` (e.g. compile-only TPU devices)."""
    parts = _lowered_parts(cfg, model_cfg, devices, n_processes)
    return LoweredStep(parts["lowered"], parts["abstract_state"], parts["mesh_shape"], parts["micro_steps"])


def _lowered_parts(
    cfg: TrainConfig, model_cfg: ModelConfig, devices: Sequence[Any] | None, n_processes: int | None
) -> dict[str, Any]:
    devices = list(jax.devices() if devices is None else devices)
    n_proc = jax.process_count() if n_processes is None else int(n_processes)
    mesh_shape = cfg.mesh_shape(len(devices), n_proc)
    mesh = sharding.make_mesh(**mesh_shape, devices=devices)
    dp = mesh_shape["data"] * mesh_shape["fsdp"]
    if cfg.batch_size % (dp * n_proc // math.gcd(dp, n_proc)):
        raise UserError(
            f"--batch-size {cfg.batch_size} must be divisible by data×fsdp={dp} and the process count {n_proc}"
        )
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    if eval_bs % dp or eval_bs % n_proc:
        raise UserError(f"eval batch size {eval_bs} must be divisible by data×fsdp={dp} and {n_proc} processes")
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32

    matmul_impl = matmul_impl_for(devices[0].platform)
    graphdef, abstract_vars = accounting.abstract_model(model_cfg, dtype, remat=cfg.remat, matmul_impl=matmul_impl)
    params_sh = nnx.to_pure_dict(sharding.state_shardings(abstract_vars, mesh))
    replicated = NamedSharding(mesh, P())
    batch_sh = sharding.batch_sharding(mesh)

    schedule = schedule_from_config(cfg)
    optimizer = optimizer_from_config(cfg, schedule, model_cfg)
    rng_data = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))

    def init_state():
        model = Transformer(
            model_cfg, rngs=nnx.Rngs(params=cfg.seed), dtype=dtype, remat=cfg.remat, matmul_impl=matmul_impl
        )
        state = step_lib.init_state(nnx.to_pure_dict(nnx.state(model, nnx.Param)), optimizer)
        state["rng"] = jnp.asarray(rng_data)
        return state

    abstract_state = jax.eval_shape(init_state)
    opt_sh = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        abstract_state["opt_state"],
        params_sh,
        transform_non_params=lambda _: replicated,
    )
    state_sh = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
    state_sh["params"] = params_sh
    state_sh["opt_state"] = opt_sh
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_sh
    )

    # the GNS small batch: the microbatch (grad accumulation), the data shard, or the batch half
    loss_fn = make_lm_loss(graphdef, cfg.z_loss)
    gns_on = cfg.gns
    groups, group_sh = 1, None
    if cfg.grad_accum == 1 and gns_on:
        if mesh_shape["data"] >= 2:
            groups, group_sh = mesh_shape["data"], NamedSharding(mesh, P("data", "fsdp"))
        elif cfg.batch_size % 2 == 0 and (cfg.batch_size // 2) % dp == 0:
            groups = 2
        else:
            gns_on = False
    step_fn = step_lib.make_train_step(
        loss_fn,
        optimizer,
        schedule,
        grad_accum=cfg.grad_accum,
        gns=gns_on,
        gns_groups=groups,
        gns_window=cfg.gns_window,
        gns_ema=cfg.gns_ema,
        group_sharding=group_sh,
        has_aux=True,
        mesh=mesh,
        params_sharding=params_sh,
    )
    abstract_batch = jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len + 1), jnp.int32, sharding=batch_sh)
    lowered = step_lib.jit_train_step(step_fn, state_sh, batch_sh).lower(abstract_state, abstract_batch)
    eval_step = step_lib.make_eval_step(lambda p, b: loss_fn(p, b)[1], params_sh, batch_sh)
    micro_steps = cfg.grad_accum if cfg.grad_accum > 1 else (groups if gns_on and group_sh is None else 1)
    return dict(
        model_cfg=model_cfg,
        mesh=mesh,
        mesh_shape=mesh_shape,
        batch_sharding=batch_sh,
        state_sharding=state_sh,
        abstract_state=abstract_state,
        init_state=init_state,
        lowered=lowered,
        eval_step=eval_step,
        eval_batch_size=eval_bs,
        schedule=schedule,
        micro_steps=micro_steps,
    )
