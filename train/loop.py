"""The training loop: ``train(cfg) -> summary dict``.

One run = one run directory (``cfg.out``): ``config.json``, ``metrics.jsonl``, ``tb/``,
``checkpoints/`` and, only once the run completed, ``summary.json`` (see docs/interfaces.md).
Callable many times in one process (ladders and sweeps): no module-level mutable state
besides caches of pure measurements.

Per step: the data pipeline yields this process's ``int32[batch/processes, seq+1]`` rows,
assembled into one global array sharded over (data, fsdp) with
``jax.make_array_from_process_local_data``; a single AOT-compiled jitted step with explicit
in/out shardings and donated state does forward, backward, GNS statistics and the AdamW
update (skipped when non-finite).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, atomic_write_text, read_json
from scalinglab.models import accounting, sharding
from scalinglab.models.config import get_config
from scalinglab.models.transformer import Transformer
from scalinglab.train import checkpoint as ckpt_lib
from scalinglab.train.data_feed import ProcessBatches
from scalinglab.train import metrics as metrics_lib
from scalinglab.train import mfu as mfu_lib
from scalinglab.train import step as step_lib
from scalinglab.train.config import TRAIN_SCHEMA, TrainConfig, validate
from scalinglab.train.config_file import RESOLVED_CONFIG, write_config_file
from scalinglab.train.optimizer import optimizer_from_config
from scalinglab.train.schedules import schedule_from_config, wsd_decay_steps

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"


class _Preemption:
    """SIGTERM → a flag the loop polls; the previous handler is restored on exit."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _any_process(flag: bool) -> bool:
    """``flag`` OR-ed over all processes (every process must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


# ---- model / loss -------------------------------------------------------------------------
def make_lm_loss(graphdef: nnx.GraphDef, z_loss: float = 0.0):
    """``loss(params, tokens_BT1) -> (objective, cross_entropy)``: next-token CE in nats/token,
    objective = CE + z_loss·mean(logsumexp(logits)²) (PaLM's z-loss)."""

    def loss_fn(params, tokens_BT1):
        logits_BTV = nnx.merge(graphdef, params)(tokens_BT1[:, :-1])
        targets_BT = tokens_BT1[:, 1:]
        lse_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
        target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
        ce = jnp.mean(lse_BT - target_logit_BT)
        objective = ce + z_loss * jnp.mean(lse_BT**2) if z_loss else ce
        return objective, ce

    return loss_fn


def _resolve_model(cfg: TrainConfig, ds) -> Any:
    overrides = dict(cfg.overrides or {})
    overrides.setdefault("vocab_size", ds.vocab_size)
    model_cfg = get_config(cfg.preset, overrides)
    if int(model_cfg.vocab_size) < int(ds.vocab_size):
        raise UserError(f"vocab_size={model_cfg.vocab_size} is smaller than the dataset's {ds.vocab_size}")
    if cfg.seq_len > model_cfg.n_ctx:
        raise UserError(f"--seq-len {cfg.seq_len} exceeds n_ctx={model_cfg.n_ctx}; add --set n_ctx={cfg.seq_len}")
    return model_cfg


def _epochs(cfg: TrainConfig, ds) -> float:
    """Passes this run makes over the dataset's train split (> 1: the data repeats)."""
    from scalinglab.data.prepared import epochs

    return epochs(ds.n_tokens("train"), cfg.seq_len, cfg.batch_size, cfg.total_steps())


def _config_json(cfg: TrainConfig, model_cfg, ds) -> dict[str, Any]:
    counts = accounting.param_counts(model_cfg)
    train = cfg.to_dict()
    train["steps"] = cfg.total_steps()
    train["tokens"] = cfg.total_steps() * cfg.tokens_per_step
    train["warmup"] = cfg.warmup_steps()
    return {
        "name": cfg.name or Path(cfg.out).name,
        "model": {**model_cfg.to_dict(), "preset": cfg.preset},
        "train": train,
        "data": {
            "dataset": cfg.dataset,
            "tokenizer": getattr(ds, "tokenizer_name", None),
            "vocab_size": int(ds.vocab_size),
            "entropy_rate": getattr(ds, "entropy_rate", None),
            "train_tokens": int(ds.n_tokens("train")),
            "epochs": _epochs(cfg, ds),
        },
        "accounting": {
            "non_embedding": int(counts["non_embedding"]),
            "total": int(counts["total"]),
            "embedding": int(counts["embedding"]),
            "train_flops_per_token": int(accounting.train_flops_per_token(model_cfg, cfg.seq_len)),
            "forward_flops_per_token": {
                k: int(v) for k, v in accounting.forward_flops_per_token(model_cfg, cfg.seq_len).items()
            },
        },
    }


def _branch_config(cfg: TrainConfig) -> TrainConfig:
    """The cooldown run branched from ``cfg.branch_from`` at ``cfg.branch_step``.

    Model, data, batch and optimizer settings come from the parent run; the schedule is
    the parent's WSD with the decay starting at the branch step and lasting until
    ``cfg.steps`` (or, when no length is given, ``wsd_decay`` of the new run's length).
    """
    parent_path = Path(cfg.branch_from) / CONFIG_FILE
    if not parent_path.exists():
        raise UserError(f"--branch-from {cfg.branch_from}: no {CONFIG_FILE} there (not a run directory)")
    parent = TrainConfig.from_dict(read_json(parent_path)["train"])
    if parent.schedule != "wsd":
        raise UserError(f"--branch-from needs a WSD run, {cfg.branch_from} used schedule {parent.schedule!r}")
    s = int(cfg.branch_step)
    parent_decay_start = parent.wsd_decay_start
    if parent_decay_start is None:
        parent_decay_start = parent.total_steps() - wsd_decay_steps(parent.total_steps(), parent.wsd_decay)
    if not parent.warmup_steps() <= s <= parent_decay_start:
        raise UserError(
            f"--branch-step {s} is not in the stable phase of {cfg.branch_from} "
            f"(steps {parent.warmup_steps()}..{parent_decay_start})"
        )
    if cfg.steps is not None:
        total = int(cfg.steps)
    elif cfg.tokens is not None:
        total = max(1, math.ceil(cfg.tokens / parent.tokens_per_step))
    else:
        total = s + max(1, round(cfg.wsd_decay * s / (1.0 - cfg.wsd_decay)))
    if total <= s:
        raise UserError(f"the branched run must be longer than --branch-step {s}, got {total} steps")
    return dataclasses.replace(
        parent,
        name=cfg.name,
        out=cfg.out,
        steps=total,
        tokens=None,
        wsd_decay_start=s,
        wsd_decay_shape=cfg.wsd_decay_shape,
        resume=False,
        branch_from=str(cfg.branch_from),
        branch_step=s,
        eval_every=cfg.eval_every,
        log_every=cfg.log_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
    )


def _wsd_keep_steps(cfg: TrainConfig) -> list[int]:
    """Checkpoint steps of the WSD stable phase: kept beyond keep-last-N as branch points."""
    if cfg.schedule != "wsd" or not cfg.checkpoint_every or cfg.branch_from:
        return []
    total = cfg.total_steps()
    start = cfg.wsd_decay_start
    if start is None:
        start = total - wsd_decay_steps(total, cfg.wsd_decay)
    return list(range(cfg.checkpoint_every, start + 1, cfg.checkpoint_every))


# ---- the loop -----------------------------------------------------------------------------
def train(cfg: TrainConfig, progress: bool | None = None) -> dict[str, Any]:
    """Run (or resume, or branch) one training run; returns the summary dict.

    ``progress``: show a tqdm bar (None → only when stderr is a TTY).
    Returns ``summary.json``'s content when the run completed; a dict with
    ``status: "preempted"`` after SIGTERM (a checkpoint was saved; rerun with resume).
    Raises UserError on bad input or after ``max_bad_steps`` consecutive non-finite steps.
    """
    from scalinglab.data import pipeline  # imported lazily: only the loop needs the data stack

    cfg = validate(cfg)
    if cfg.branch_from is not None:
        cfg = validate(_branch_config(cfg))
    run_dir = Path(cfg.out)
    if (run_dir / SUMMARY_FILE).exists() and cfg.resume:
        return read_json(run_dir / SUMMARY_FILE)
    ckpt_dir = run_dir / "checkpoints"
    if not cfg.resume and ckpt_dir.exists() and any(ckpt_dir.iterdir()):
        raise UserError(f"{run_dir} already holds checkpoints; pass --resume or choose a new --out")

    ds = pipeline.load_dataset(cfg.dataset, cfg.data_dir)
    model_cfg = _resolve_model(cfg, ds)
    total_steps = cfg.total_steps()
    is_main = jax.process_index() == 0
    if is_main and _epochs(cfg, ds) > 1:
        sys.stderr.write(f"note: this run reads the train split of {cfg.dataset} {_epochs(cfg, ds):.2f} times "
                         f"({ds.n_tokens('train'):,} tokens): the data repeats\n")
    n_proc = jax.process_count()

    # ---- mesh and shardings
    mesh_shape = cfg.mesh_shape(jax.device_count(), n_proc)
    mesh = sharding.make_mesh(**mesh_shape)
    dp = mesh_shape["data"] * mesh_shape["fsdp"]
    micro = cfg.batch_size // cfg.grad_accum
    if cfg.batch_size % (dp * n_proc // math.gcd(dp, n_proc)):
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by data×fsdp={dp} and the process count {n_proc}")
    eval_bs = cfg.eval_batch_size or cfg.batch_size
    if eval_bs % dp or eval_bs % n_proc:
        raise UserError(f"eval batch size {eval_bs} must be divisible by data×fsdp={dp} and {n_proc} processes")
    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32

    def init_params():
        model = Transformer(model_cfg, rngs=nnx.Rngs(params=cfg.seed), dtype=dtype)
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    abstract_model = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(params=cfg.seed), dtype=dtype))
    graphdef, abstract_vars = nnx.split(abstract_model, nnx.Param)
    params_sh = nnx.to_pure_dict(sharding.state_shardings(abstract_vars, mesh))
    replicated = NamedSharding(mesh, P())
    batch_sh = sharding.batch_sharding(mesh)

    schedule = schedule_from_config(cfg)
    optimizer = optimizer_from_config(cfg, schedule)
    rng_data = np.asarray(jax.random.key_data(jax.random.key(cfg.seed)))

    def init_state():
        state = step_lib.init_state(init_params(), optimizer)
        state["rng"] = jnp.asarray(rng_data)
        return state

    abstract_state = jax.eval_shape(init_state)
    opt_sh = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_state["opt_state"], params_sh,
        transform_non_params=lambda _: replicated,
    )
    state_sh = {k: jax.tree.map(lambda _: replicated, v) for k, v in abstract_state.items()}
    state_sh["params"] = params_sh
    state_sh["opt_state"] = opt_sh
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state, state_sh
    )

    # ---- the step: small batch for GNS = microbatch, data shard, or batch half
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
        loss_fn, optimizer, schedule, grad_accum=cfg.grad_accum, gns=gns_on, gns_groups=groups,
        gns_window=cfg.gns_window, gns_ema=cfg.gns_ema, group_sharding=group_sh, has_aux=True,
    )
    abstract_batch = jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len + 1), jnp.int32, sharding=batch_sh)
    train_step = step_lib.jit_train_step(step_fn, state_sh, batch_sh).lower(abstract_state, abstract_batch).compile()
    ce_only = lambda p, b: loss_fn(p, b)[1]  # noqa: E731
    eval_step = step_lib.make_eval_step(ce_only, params_sh, batch_sh)
    eval_np = pipeline.make_eval_batches(ds, seq_len=cfg.seq_len, batch_size=eval_bs, n_batches=cfg.eval_batches)
    rows = eval_bs // n_proc
    pid = jax.process_index()
    eval_batches = [
        jax.make_array_from_process_local_data(batch_sh, np.asarray(b[pid * rows:(pid + 1) * rows]))
        for b in eval_np
    ]

    def evaluate(params) -> float:
        return float(np.mean([float(eval_step(params, b)) for b in eval_batches]))

    # ---- data, checkpoints, state
    it = ProcessBatches(
        ds, seq_len=cfg.seq_len, global_batch_size=cfg.batch_size, seed=cfg.seed,
        shards=cfg.data_shards or n_proc, process_index=pid, process_count=n_proc,
    )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / CONFIG_FILE, _config_json(cfg, model_cfg, ds))
        write_config_file(run_dir / RESOLVED_CONFIG, TRAIN_SCHEMA.dump(cfg))
    ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints, keep_steps=_wsd_keep_steps(cfg))
    start_step, state, resumed = 0, None, False
    extra: dict[str, Any] = {}
    try:
        if cfg.resume:
            found = ckpt.restore_latest(abstract_state)
            if found is not None:
                start_step, state, extra = found
                resumed = True
        elif cfg.branch_from is not None:
            parent = ckpt_lib.Checkpointer(Path(cfg.branch_from) / "checkpoints", read_only=True)
            if cfg.branch_step not in parent.all_steps():
                raise UserError(
                    f"{cfg.branch_from} has no checkpoint at step {cfg.branch_step}; saved steps: {parent.all_steps()}"
                )
            state, extra = parent.restore(cfg.branch_step, abstract_state)
            parent.close()
            start_step, resumed = cfg.branch_step, True
            if is_main:
                lines = [r for r in metrics_lib.read_metrics(cfg.branch_from) if r.get("step", 0) <= start_step]
                atomic_write_text(run_dir / metrics_lib.METRICS_FILE, "".join(json.dumps(r) + "\n" for r in lines))
        if state is None:
            state = jax.jit(init_state, out_shardings=state_sh)()
        if extra.get("data") is not None:
            it.set_global_state(extra["data"])
        summary = _run(cfg, model_cfg, ds, state, it, ckpt, train_step, evaluate, schedule,
                       start_step=start_step, total_steps=total_steps, resumed=resumed, progress=progress,
                       is_main=is_main, batch_sh=batch_sh, extra=extra)
    finally:
        ckpt.close()
        it.close()
    return summary


def _run(cfg, model_cfg, ds, state, it, ckpt, train_step, evaluate, schedule, *, start_step, total_steps,
         resumed, progress, is_main, batch_sh, extra) -> dict[str, Any]:
    run_dir = Path(cfg.out)
    counts = accounting.param_counts(model_cfg)
    flops_per_token = accounting.train_flops_per_token(model_cfg, cfg.seq_len)
    tokens_per_step = cfg.tokens_per_step
    peak = mfu_lib.peak_flops(dtype=cfg.dtype)
    sinks = []
    if is_main and cfg.wandb:
        from scalinglab.train.wandb_log import WandbLogger

        wandb_config = {"train": cfg.to_dict(), "model": {**model_cfg.to_dict(), "preset": cfg.preset},
                        "non_embedding": int(counts["non_embedding"]), "train_flops_per_token": int(flops_per_token)}
        sinks.append(WandbLogger(cfg.wandb, run_dir, name=cfg.name or run_dir.name, config=wandb_config,
                                 resume=resumed))
    writer = metrics_lib.MetricsWriter(run_dir, total_steps=total_steps, start_step=start_step, resume=resumed,
                                       enabled=is_main, progress=progress, sinks=sinks)
    best_eval = extra.get("best_eval_loss")
    last_eval = extra.get("last_eval_loss")
    last_loss = None
    status = "complete"

    def save(step: int) -> None:
        ckpt.save(step, state, {"data": it.global_state(), "step": step, "seed": cfg.seed,
                                "best_eval_loss": best_eval, "last_eval_loss": last_eval})

    window_t0, window_steps = time.perf_counter(), 0
    try:
        with _Preemption() as preempt:
            for step in range(start_step, total_steps):
                local = next(it)
                batch = jax.make_array_from_process_local_data(batch_sh, np.asarray(local, np.int32))
                state, m = train_step(state, batch)
                m = jax.device_get(m)
                done = step + 1
                window_steps += 1
                loss = float(m["loss"])
                if not bool(m["finite"]):
                    warnings.warn(f"step {done}: non-finite loss or gradient (loss={loss}); update skipped",
                                  stacklevel=2)
                    if int(m["bad_streak"]) >= cfg.max_bad_steps:
                        steps = ckpt.all_steps()
                        raise UserError(
                            f"stopped at step {done}: {cfg.max_bad_steps} consecutive non-finite steps "
                            f"(loss or gradient NaN/inf); last good checkpoint: "
                            f"{'step ' + str(steps[-1]) if steps else 'none'} in {run_dir / 'checkpoints'}"
                        )
                else:
                    last_loss = loss
                is_last = done == total_steps
                do_eval = is_last or (cfg.eval_every and done % cfg.eval_every == 0)
                if do_eval or done % cfg.log_every == 0:
                    elapsed = time.perf_counter() - window_t0
                    tokens_per_s = window_steps * tokens_per_step / elapsed if elapsed > 0 else None
                    record = {
                        "step": done,
                        "tokens": done * tokens_per_step,
                        "flops": done * tokens_per_step * flops_per_token,
                        "loss": loss,
                        "lr": float(m["lr"]),
                        "grad_norm": float(m["grad_norm"]),
                        "gns_b_simple": float(m["gns_b_simple"]),
                        "gns_g2": float(m["gns_g2"]),
                        "gns_trace": float(m["gns_trace"]),
                        "gns_step": float(m["gns_step"]),
                        "tokens_per_s": tokens_per_s,
                        "mfu": tokens_per_s * flops_per_token / peak if (tokens_per_s and peak) else None,
                        "skipped_steps": int(m["skipped"]),
                    }
                    if do_eval:
                        last_eval = evaluate(state["params"])
                        best_eval = last_eval if best_eval is None else min(best_eval, last_eval)
                        record["eval_loss"] = last_eval
                    writer.write(record)
                    writer.progress(done, loss, tokens_per_s)
                    window_steps = 0
                if is_last or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
                    save(done)
                if window_steps == 0:  # throughput windows exclude eval and checkpoint time
                    window_t0 = time.perf_counter()
                if not is_last and _any_process(preempt.requested):
                    save(done)
                    ckpt.wait()
                    status = "preempted"
                    sys.stderr.write(f"SIGTERM: saved checkpoint at step {done}; rerun with --resume\n")
                    break
    finally:
        ckpt.wait()
        writer.close()
    if status != "complete":
        return {"status": status, "steps": done}
    summary = {
        "status": "complete",
        "steps": total_steps,
        "tokens": total_steps * tokens_per_step,
        "flops": total_steps * tokens_per_step * flops_per_token,
        "final_loss": last_loss,
        "final_eval_loss": last_eval,
        "best_eval_loss": best_eval,
        "non_embedding": int(counts["non_embedding"]),
        "total": int(counts["total"]),
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "epochs": _epochs(cfg, ds),
    }
    if is_main:
        atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary
