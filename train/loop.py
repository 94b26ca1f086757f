"""The training loop: ``train(cfg) -> summary dict``.

One run = one run directory (``cfg.out``): ``config.json``, ``metrics.jsonl``, ``tb/``,
``checkpoints/`` and, only once the run completed, ``summary.json`` (see docs/interfaces.md).
Callable many times in one process (ladders and sweeps): no module-level mutable state
besides caches of pure measurements.

Per step: the data pipeline yields this process's ``int32[batch/processes, seq+1]`` rows,
assembled into one global array sharded over (data, fsdp) with
``jax.make_array_from_process_local_data``; the program's AOT-compiled step (built by
:mod:`scalinglab.train.program`, with explicit in/out shardings and donated state) does forward,
backward (the loss of :mod:`scalinglab.train.loss`), GNS statistics and the AdamW update
(skipped when non-finite).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, atomic_write_text, read_json
from scalinglab.models import accounting
from scalinglab.models.config import get_config
from scalinglab.rundir import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    RESOLVED_CONFIG,
    SUMMARY_FILE,
    read_metrics,
)
from scalinglab.train import checkpoint as ckpt_lib
from scalinglab.train import memory
from scalinglab.train import metrics as metrics_lib
from scalinglab.train import mfu as mfu_lib
from scalinglab.train.agree import LaggedAny
from scalinglab.train.config import TRAIN_SCHEMA, TrainConfig, validate
from scalinglab.train.config_file import write_config_file
from scalinglab.train.data_feed import ProcessBatches
from scalinglab.train.diskfull import quiet_background_errors
from scalinglab.train.multihost import agreed
from scalinglab.train.program import TrainProgram, build_program
from scalinglab.train.schedules import wsd_decay_steps

# Everything a run directory may hold (an existing directory holding anything else is not a run).
RUN_DIR_FILES = (
    CONFIG_FILE,
    SUMMARY_FILE,
    "metrics.jsonl",
    "checkpoints",
    "checkpoints.corrupt",
    "tb",
    "lock.json",
    "config.yaml",
    LOG_FILE,
)


class _Preemption:
    """SIGTERM or SIGINT → a flag the loop polls (it checkpoints and stops at the next step);
    a second SIGINT while stopping raises KeyboardInterrupt at once. Previous handlers are
    restored on exit. ``signum``: the first signal received (None if none)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = int(signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


# ---- model and run config -------------------------------------------------------------
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


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``config.json`` (None when absent); UserError when it is unreadable."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    try:
        saved = read_json(path)
    except (OSError, ValueError):
        raise UserError(
            f"{path} is unreadable, so the resumed run cannot be checked against it; restore it or start a new --out"
        ) from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is not a run config; restore it or start a new --out")
    return saved


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
    ``status: "preempted"`` and ``signal`` after SIGTERM/SIGINT (a checkpoint was saved; rerun with
    resume); a completed run that received a signal carries ``signal`` too (callers stop there).
    Raises UserError on bad input or after ``max_bad_steps`` consecutive non-finite steps.
    """
    from scalinglab.outdir import check_out_dir
    from scalinglab.runlock import RunLock

    cfg = validate(cfg)
    if cfg.branch_from is not None:
        cfg = validate(_branch_config(cfg))
    run_dir = Path(cfg.out)

    def finished() -> bool:
        """Whether the run is complete (and this is a resume); else the run directory is checked."""
        if (run_dir / SUMMARY_FILE).exists() and cfg.resume:
            return True
        check_out_dir(run_dir, "run", owned=RUN_DIR_FILES, signature=CONFIG_FILE, force=None)
        return False

    # several processes: process 0 looks (the others could see its files being written) and all agree
    if agreed(finished):
        return read_json(run_dir / SUMMARY_FILE)
    if jax.process_index() != 0:  # process 0 holds the run's lock for all
        return _train(cfg, progress)
    created = not run_dir.exists()
    lock = RunLock(run_dir).acquire()  # a second trainer of this run dir is refused, naming the holder
    try:
        return _train(cfg, progress)
    except BaseException:
        from scalinglab.outdir import run_started

        if created and not run_started(run_dir):  # a run that never started leaves no directory behind
            import shutil  # (it did not exist before this call: everything in it is ours)

            lock.release()
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def _train(cfg: TrainConfig, progress: bool | None) -> dict[str, Any]:
    """:func:`train` once the run directory is ours (locked)."""
    from scalinglab.data import pipeline  # imported lazily: only the loop needs the data stack
    from scalinglab.outdir import run_started
    from scalinglab.train.identity import check_resume

    started_at = time.time()  # unix seconds: this process took the run (summary.json's started_at)
    run_dir = Path(cfg.out)
    if (run_dir / SUMMARY_FILE).exists() and cfg.resume:  # finished while we waited for the lock
        return read_json(run_dir / SUMMARY_FILE)
    ckpt_dir = run_dir / CHECKPOINT_DIR
    started = run_started(run_dir)
    if not cfg.resume and started:
        raise UserError(f"{run_dir} already holds a run; pass --resume or choose a new --out")

    ds = pipeline.load_dataset(cfg.dataset, cfg.data_dir)
    model_cfg = _resolve_model(cfg, ds)
    requested = _config_json(cfg, model_cfg, ds)
    if started:  # before anything is written: a resume may not change what the run is
        check_resume(run_dir, requested, _saved_config(run_dir))
    n_proc, pid = jax.process_count(), jax.process_index()
    epochs = _epochs(cfg, ds)
    if pid == 0 and epochs > 1:
        sys.stderr.write(
            f"note: this run reads the train split of {cfg.dataset} {epochs:.2f} times "
            f"({ds.n_tokens('train'):,} tokens): the data repeats\n"
        )
    shape = cfg.mesh_shape(jax.device_count(), n_proc)
    cpu = jax.default_backend() == "cpu"
    mem = memory.check_fits(model_cfg, what=f"run {run_dir}", **memory.sizes_for(cfg, None if cpu else shape))
    try:
        program = build_program(cfg, model_cfg)
    except Exception as e:  # noqa: BLE001 - only out-of-memory is explained, the rest re-raised
        if memory.is_oom(e):
            raise memory.explain_oom(e, mem, f"run {run_dir}") from None
        raise
    eval_np = pipeline.make_eval_batches(
        ds, seq_len=cfg.seq_len, batch_size=program.eval_batch_size, n_batches=cfg.eval_batches
    )
    rows = program.eval_batch_size // n_proc
    eval_batches = [
        jax.make_array_from_process_local_data(program.batch_sharding, np.asarray(b[pid * rows : (pid + 1) * rows]))
        for b in eval_np
    ]

    def evaluate(params) -> float:
        return float(np.mean([float(program.eval_step(params, b)) for b in eval_batches]))

    # ---- data, checkpoints, state
    it = ProcessBatches(
        ds,
        seq_len=cfg.seq_len,
        global_batch_size=cfg.batch_size,
        seed=cfg.seed,
        shards=cfg.data_shards or n_proc,
        process_index=pid,
        process_count=n_proc,
    )
    if pid == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / CONFIG_FILE, requested)
        write_config_file(run_dir / RESOLVED_CONFIG, TRAIN_SCHEMA.dump(cfg))
    ckpt = ckpt_lib.Checkpointer(ckpt_dir, keep=cfg.keep_checkpoints, keep_steps=_wsd_keep_steps(cfg))
    try:
        start = _start(cfg, program, ckpt)
        if start.extra.get("data") is not None:
            it.set_global_state(start.extra["data"])
        with quiet_background_errors():  # a full disk: one DiskFull here, not orbax's thread tracebacks
            summary = _run(cfg, program, start, it, ckpt, evaluate, progress, epochs, started_at)
    finally:
        ckpt.close()
        it.close()
    return summary


@dataclasses.dataclass
class _Start:
    """Where the loop begins: the step, the state at it, and the checkpoint's extra dict."""

    step: int
    state: Any
    extra: dict[str, Any]
    resumed: bool  # continuing a run's metrics (resumed or branched) rather than starting them


def _start(cfg: TrainConfig, program: TrainProgram, ckpt: ckpt_lib.Checkpointer) -> _Start:
    """The newest checkpoint (``resume``), the parent's branch-point checkpoint (``branch_from``;
    its metrics up to the branch step are copied), or a fresh state."""
    if cfg.resume:
        found = ckpt.restore_latest(program.abstract_state)
        if found is not None:
            step, state, extra = found
            return _Start(step, state, extra, True)
    elif cfg.branch_from is not None:
        parent = ckpt_lib.Checkpointer(Path(cfg.branch_from) / CHECKPOINT_DIR, read_only=True)
        if cfg.branch_step not in parent.all_steps():
            raise UserError(
                f"{cfg.branch_from} has no checkpoint at step {cfg.branch_step}; saved steps: {parent.all_steps()}"
            )
        state, extra = parent.restore(cfg.branch_step, program.abstract_state)
        parent.close()
        if jax.process_index() == 0:
            lines = [r for r in read_metrics(cfg.branch_from) if r.get("step", 0) <= cfg.branch_step]
            atomic_write_text(Path(cfg.out) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in lines))
        return _Start(cfg.branch_step, state, extra, True)
    return _Start(0, program.fresh_state(), {}, False)


def _run(
    cfg: TrainConfig,
    program: TrainProgram,
    start: _Start,
    it: ProcessBatches,
    ckpt: ckpt_lib.Checkpointer,
    evaluate: Callable[[Any], float],
    progress: bool | None,
    epochs: float,
    started_at: float,
) -> dict[str, Any]:
    """Steps ``start.step + 1 … total``: train, log, evaluate, checkpoint; the summary when complete
    (``epochs``: passes over the train split, recorded in it; ``started_at``: unix seconds at which
    this process took the run, recorded with ``finished_at`` and the ``host`` it ran on)."""
    model_cfg, batch_sh, train_step = program.model_cfg, program.batch_sharding, program.train_step
    state, extra, start_step = start.state, start.extra, start.step
    total_steps = cfg.total_steps()
    is_main = jax.process_index() == 0
    run_dir = Path(cfg.out)
    counts = accounting.param_counts(model_cfg)
    flops_per_token = accounting.train_flops_per_token(model_cfg, cfg.seq_len)
    flops_per_token_causal = accounting.train_flops_per_token(model_cfg, cfg.seq_len, causal=True)
    tokens_per_step = cfg.tokens_per_step
    peak = mfu_lib.peak_flops(dtype=cfg.dtype)
    sinks = []
    if is_main and cfg.wandb:
        from scalinglab.train.wandb_log import WandbLogger

        wandb_config = {
            "train": cfg.to_dict(),
            "model": {**model_cfg.to_dict(), "preset": cfg.preset},
            "non_embedding": int(counts["non_embedding"]),
            "train_flops_per_token": int(flops_per_token),
        }
        sinks.append(
            WandbLogger(cfg.wandb, run_dir, name=cfg.name or run_dir.name, config=wandb_config, resume=start.resumed)
        )
    writer = metrics_lib.MetricsWriter(
        run_dir,
        total_steps=total_steps,
        start_step=start_step,
        resume=start.resumed,
        enabled=is_main,
        progress=progress,
        sinks=sinks,
    )
    best_eval = extra.get("best_eval_loss")
    last_eval = extra.get("last_eval_loss")
    last_loss = None
    status = "complete"
    signum = None

    saved = {"step": start_step}

    def save(step: int) -> None:
        if saved["step"] == step:  # a signal right after a scheduled save: that checkpoint is this step
            return
        ckpt.save(
            step,
            state,
            {
                "data": it.global_state(),
                "step": step,
                "seed": cfg.seed,
                "best_eval_loss": best_eval,
                "last_eval_loss": last_eval,
            },
        )
        saved["step"] = step

    window = {"t0": time.perf_counter(), "steps": 0}  # throughput window: its start and steps finished in it

    def finish(done: int, m: dict[str, Any], do_eval: bool) -> None:
        """Host bookkeeping of step ``done`` from its fetched metrics ``m``: the non-finite check
        (warning; UserError after ``max_bad_steps``), the log record (with ``eval_loss`` when
        ``do_eval``: only called so while ``state`` is still that step's state)."""
        nonlocal last_loss, last_eval, best_eval
        window["steps"] += 1
        loss = float(m["loss"])
        if not bool(m["finite"]):
            warnings.warn(f"step {done}: non-finite loss or gradient (loss={loss}); update skipped", stacklevel=3)
            if int(m["bad_streak"]) >= cfg.max_bad_steps:
                steps = ckpt.all_steps()
                raise UserError(
                    f"stopped at step {done}: {cfg.max_bad_steps} consecutive non-finite steps "
                    f"(loss or gradient NaN/inf); last good checkpoint: "
                    f"{'step ' + str(steps[-1]) if steps else 'none'} in {run_dir / CHECKPOINT_DIR}"
                )
        else:
            last_loss = loss
        if not (do_eval or done % cfg.log_every == 0):
            return
        elapsed = time.perf_counter() - window["t0"]
        tokens_per_s = window["steps"] * tokens_per_step / elapsed if elapsed > 0 else None
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
            "mfu_causal": (tokens_per_s * flops_per_token_causal / peak if (tokens_per_s and peak) else None),
            "skipped_steps": int(m["skipped"]),
        }
        if do_eval:
            last_eval = evaluate(state["params"])
            best_eval = last_eval if best_eval is None else min(best_eval, last_eval)
            record["eval_loss"] = last_eval
        writer.write(record)
        writer.progress(done, loss, tokens_per_s)
        window["t0"], window["steps"] = time.perf_counter(), 0

    # No per-step host sync: a step's metrics (device arrays) are read once the next step has been
    # dispatched, so the host prepares step k+1 while step k runs. Steps that need their own state
    # on the host (eval, checkpoint, the last step, a stop) read their metrics at once, before the
    # next dispatch donates that state. Same records, same warnings and stops as reading every step.
    stop_vote = LaggedAny()  # multi-process: the stop decision, agreed one step late
    pending = None  # (step, metrics) dispatched but not yet read
    done = start_step
    try:
        with _Preemption() as preempt:
            for step in range(start_step, total_steps):
                local = next(it)
                batch = jax.make_array_from_process_local_data(batch_sh, np.asarray(local, np.int32))
                state, m = train_step(state, batch)
                done = step + 1
                if pending is not None:
                    finish(pending[0], jax.device_get(pending[1]), False)
                    pending = None
                is_last = done == total_steps
                do_eval = bool(is_last or (cfg.eval_every and done % cfg.eval_every == 0))
                do_save = bool(is_last or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0))
                stop = not is_last and stop_vote(preempt.requested)
                if not (do_eval or do_save or stop):
                    pending = (done, m)
                    continue
                finish(done, jax.device_get(m), do_eval)
                if do_save:
                    save(done)
                if window["steps"] == 0:  # throughput windows exclude eval and checkpoint time
                    window["t0"] = time.perf_counter()
                if stop:
                    save(done)
                    ckpt.wait()
                    status = "preempted"
                    name = signal.Signals(preempt.signum or signal.SIGTERM).name
                    sys.stderr.write(f"{name}: saved checkpoint at step {done}; rerun with --resume\n")
                    break
            signum = preempt.signum  # a signal during the last step or the final save still counts
    finally:
        ckpt.wait()
        writer.close()
    if status != "complete":
        return {"status": status, "steps": done, "signal": signum or int(signal.SIGTERM)}
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
        "epochs": epochs,
        "started_at": started_at,
        "finished_at": time.time(),
        "host": socket.gethostname(),
    }
    if is_main:
        atomic_write_json(run_dir / SUMMARY_FILE, summary)
    if signum:  # the run finished, but the caller must stop (not start the next run)
        return {**summary, "signal": signum}
    return summary
