"""Batch-size sweeps: one model trained at several batch sizes on the same token budget.

Layout of a sweep directory (docs/interfaces.md)::

    SWEEP_DIR/sweep.json      {"kind": "batch-sweep", "batch_sizes", "lr_rule", "runs": {"<B>": "<subdir>"},
                               "grid": {"<B>": {"<subdir>": lr}}, ...}
    SWEEP_DIR/b<B>_lr<lr>/    one run dir per (B, lr)          (rule grid, the default)
    SWEEP_DIR/b<B>/           one run dir per batch size       (rules sqrt | linear | fixed)

Learning rate per batch size B (sequences), from the base ``lr`` at ``base_batch`` B0:
``grid`` (default): each of ``lr_grid`` factors (default 0.25, 0.5, 1, 2, 4: five, 2× apart) × the
sqrt rule, i.e. a tuned learning rate per batch size as McCandlish et al. (2018), Shallue et al.
(2019) and Zhang et al. (2024) assume: ``fit-batch`` takes, per target loss, the minimum steps over
a batch size's learning rates. ``sqrt``: lr·sqrt(B/B0) (the usual Adam rule), ``linear``: lr·B/B0
(SGD's), ``fixed``: lr — one untuned run per batch size, biased (README: on McCandlish's model a
base lr 4× too small makes B_crit come out 1.5–3.3× too large).

``"runs"`` maps each B to its run with the lowest final eval loss; ``"grid"`` lists every run of B
with its lr. ``extend_grid`` = k: when that best run is at the smallest or largest factor, one more
run at the next factor out (2× beyond the edge, the grid's own ratio) is trained, at most k times per
batch size (``"extended"`` lists them).

Defaults chosen for measuring steps-to-target (see scaling/critical_batch.py): a ``constant``
schedule after warmup (a cosine tied to each run's own length would make the loss at a given
step depend on how long the run is) and the same warmup in steps for every run (5 % of the
shortest run), so warmup adds the same number of steps at every batch size.

Resumable: a run dir with ``summary.json`` is skipped, a partial one resumes from its newest
checkpoint (``TrainConfig.resume=True``). ``sweep.json`` is rewritten atomically after each run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.rundir import RESOLVED_CONFIG, SWEEP_FILE, finite_or
from scalinglab.train.config import TrainConfig, validate
from scalinglab.train.config_file import write_config_file
from scalinglab.train.executor import Dispatcher, Executor, LocalExecutor, RunTask, check_only
from scalinglab.train.identity import typed_or_given
from scalinglab.train.multihost import agreed, is_main

LR_RULES = ("sqrt", "linear", "fixed", "grid")
DEFAULT_LR_GRID = (0.25, 0.5, 1.0, 2.0, 4.0)  # five factors, 2x apart, centred on the sqrt rule
DEFAULT_LR_RULE = "grid"
MIN_BATCH_SIZES = 3  # the S-E hyperbola has two parameters
WARMUP_FRACTION = 0.05  # of the shortest run (the largest batch), in steps, shared by all runs
# Settings that must match when an existing sweep directory is continued.
_FINGERPRINT = ("preset", "overrides", "dataset", "seq_len", "tokens", "schedule", "seed")


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One planned run: batch size (sequences), peak lr, sub-directory name and its TrainConfig."""

    batch_size: int
    lr: float
    subdir: str
    config: TrainConfig


def lr_for(rule: str, base_lr: float, base_batch: int, batch_size: int) -> float:
    """Peak learning rate at ``batch_size`` under ``rule`` (grid: the centre of the grid = sqrt)."""
    if rule in ("sqrt", "grid"):
        return base_lr * math.sqrt(batch_size / base_batch)
    if rule == "linear":
        return base_lr * batch_size / base_batch
    if rule == "fixed":
        return base_lr
    raise UserError(f"unknown --lr-rule {rule!r}; choose one of {', '.join(LR_RULES)}")


def _lr_tag(lr: float) -> str:
    return f"{lr:.3g}".replace("+", "")


def plan_sweep(
    base: TrainConfig,
    batch_sizes: Sequence[int],
    *,
    lr_rule: str = DEFAULT_LR_RULE,
    base_batch: int | None = None,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    out: str | Path,
    log_every: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
) -> list[SweepRun]:
    """Every run of the sweep. ``base`` holds the shared settings (``tokens`` = budget of each run).

    ``base.warmup`` None → the same warmup for every run: 5 % of the steps of the largest batch.
    Per-run cadences left None scale with the run's length: ``log_every`` = steps/500 (dense
    curves for steps-to-target), ``eval_every`` = steps/20, ``checkpoint_every`` = steps/10.
    """
    sizes = sorted({int(b) for b in batch_sizes})
    if any(b < 1 for b in sizes):
        raise UserError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if len(sizes) < MIN_BATCH_SIZES:
        raise UserError(
            f"a batch-size sweep needs >= {MIN_BATCH_SIZES} distinct batch sizes (the S-E fit has two "
            f"parameters), got {sizes}"
        )
    if lr_rule not in LR_RULES:
        raise UserError(f"unknown --lr-rule {lr_rule!r}; choose one of {', '.join(LR_RULES)}")
    if base.tokens is None or base.steps is not None:
        raise UserError(
            "a batch sweep trains every batch size on the same --tokens budget (give --tokens, not --steps)"
        )
    if not base.lr > 0:
        raise UserError(f"--lr must be positive, got {base.lr}")
    b0 = int(base_batch or sizes[0])
    if b0 < 1:
        raise UserError(f"--base-batch must be positive, got {b0}")
    factors = tuple(float(f) for f in lr_grid) if lr_rule == "grid" else (1.0,)
    if lr_rule == "grid" and (len(set(factors)) < 2 or any(not f > 0 for f in factors)):
        raise UserError(f"--lr-grid needs at least two distinct positive factors, got {list(lr_grid)}")
    shortest = max(1, math.ceil(base.tokens / (sizes[-1] * base.seq_len)))
    warmup = base.warmup if base.warmup is not None else max(1, round(WARMUP_FRACTION * shortest))
    cadence = dict(log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every)
    return [
        sweep_run(
            base, b, lr_for(lr_rule, base.lr, b0, b) * f, out=out, warmup=warmup, grid=lr_rule == "grid", **cadence
        )
        for b in sizes
        for f in sorted(set(factors))
    ]


def sweep_run(
    base: TrainConfig,
    batch_size: int,
    lr: float,
    *,
    out: str | Path,
    warmup: int,
    grid: bool,
    log_every: int | None = None,
    eval_every: int | None = None,
    checkpoint_every: int | None = None,
) -> SweepRun:
    """One run of a sweep at (``batch_size``, ``lr``) into ``out/<subdir>`` (see :func:`plan_sweep`)."""
    subdir = f"b{batch_size}_lr{_lr_tag(lr)}" if grid else f"b{batch_size}"
    steps = max(1, math.ceil(base.tokens / (batch_size * base.seq_len)))
    cfg = dataclasses.replace(
        base,
        name=subdir,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        out=str(Path(out) / subdir),
        resume=True,
        log_every=log_every or max(1, steps // 500),
        eval_every=eval_every if eval_every is not None else max(1, steps // 20),
        checkpoint_every=checkpoint_every if checkpoint_every is not None else max(1, steps // 10),
    )
    return SweepRun(batch_size, lr, subdir, validate(cfg))


def check_all_fit(runs: Sequence[SweepRun]) -> None:
    """UserError (exit 2) naming the first batch size whose run cannot fit in memory, before any trains."""
    from scalinglab.models.config import get_config
    from scalinglab.train.memory import check_fits, sizes_for

    for r in sorted(runs, key=lambda r: -r.batch_size):
        c = r.config
        check_fits(get_config(c.preset, c.overrides), what=f"batch size {r.batch_size} ({r.subdir})", **sizes_for(c))


def _settings(base: TrainConfig, lr_rule: str, base_batch: int | None, lr_grid: Sequence[float]) -> dict[str, Any]:
    d = base.to_dict()
    s = {k: d[k] for k in _FINGERPRINT}
    s.update(lr=base.lr, lr_rule=lr_rule, base_batch=base_batch, lr_grid=list(lr_grid) if lr_rule == "grid" else None)
    return s


def _final_eval(summary: dict[str, Any]) -> float:
    """The run's final eval loss (nats/token); +inf when it has none (it never wins a comparison)."""
    return finite_or(summary.get("final_eval_loss"), math.inf)


def edge_extension(results: dict[float, float]) -> float | None:
    """The next learning rate to try when the best of ``results`` ({lr: final eval loss}) is at an
    edge of the tried ones: one grid ratio (that between the edge and its neighbour) beyond it; else
    None. A best loss that is not finite (every run diverged) gives None."""
    lrs = sorted(results)
    best = min(lrs, key=lambda lr: (results[lr], lr))
    if len(lrs) < 2 or not math.isfinite(results[best]):
        return None
    if best == lrs[0]:
        return lrs[0] * lrs[0] / lrs[1]
    if best == lrs[-1]:
        return lrs[-1] * lrs[-1] / lrs[-2]
    return None


def run_sweep(
    base: TrainConfig,
    batch_sizes: Sequence[int],
    *,
    out: str | Path,
    lr_rule: str = DEFAULT_LR_RULE,
    base_batch: int | None = None,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    extend_grid: int = 0,
    train_fn: Callable[[TrainConfig], dict[str, Any]] | None = None,
    executor: Executor | None = None,
    only: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    resolved_config: Mapping[str, Any] | None = None,
    force: bool = False,
    **cadence: int | None,
) -> dict[str, Any]:
    """Train (or resume, or skip) every run of the sweep into ``out``; returns ``sweep.json``'s content.

    Runs go through :class:`scalinglab.train.executor.Dispatcher`: ``executor`` (default: in this
    process with ``train_fn``, :func:`scalinglab.train.loop.train`) trains the whole LR × batch grid
    as one batch, then each round of grid extensions. ``only``: train just these runs (subdir names);
    a batch size with runs left unfinished gets no best run yet. A sweep dir may be continued with
    more batch sizes, but not with different shared settings (model, data, tokens, lr rule...).
    ``extend_grid`` (grid rule only): up to that many extra runs per batch size beyond an edge optimum.
    ``cadence``: ``log_every``, ``eval_every``, ``checkpoint_every`` for :func:`plan_sweep`.
    ``resolved_config``: the command's settings, written as ``config.yaml`` beside ``sweep.json``.
    ``force``: train into an ``out`` that is not a sweep directory (see :mod:`scalinglab.outdir`).
    A sweep.json whose runs never started training (a failed start) does not bind: it is replaced.
    """
    if extend_grid < 0:
        raise UserError(f"--extend-grid must be >= 0, got {extend_grid}")
    from scalinglab.outdir import check_out_dir, mark_out_dir, run_started

    out = Path(out)
    meta_path = out / SWEEP_FILE
    main = is_main()  # several processes: process 0 checks, decides and writes; the others follow

    def save_meta() -> None:
        if main:
            atomic_write_json(meta_path, meta)

    def prepare() -> dict[str, Any]:
        """The checks and first writes (process 0): the sweep's record, warmup and ``--only`` selection."""
        nonlocal base
        ours = check_out_dir(out, "batch-sweep", signature=SWEEP_FILE, force=force)
        settings = _settings(base, lr_rule, base_batch, lr_grid)
        meta: dict[str, Any] = {
            "kind": "batch-sweep",
            "batch_sizes": [],
            "lr_rule": lr_rule,
            "runs": {},
            "settings": settings,
            "warmup": None,
            "lr": {},
            "candidates": {},
            "grid": {},
            "extended": {},
        }
        if meta_path.exists():
            try:
                old = read_json(meta_path)
            except ValueError:
                raise UserError(f"{meta_path} is not valid JSON; remove it or choose a new --out") from None
            if not isinstance(old, dict) or old.get("kind") != "batch-sweep":
                raise UserError(f"{meta_path} exists but is not a batch sweep; choose a new --out")
            started = any(run_started(out / str(d)) for d in (old.get("runs") or {}).values()) or any(
                run_started(d) for d in out.iterdir() if d.is_dir()
            )
            old_settings = dict(old.get("settings") or {})
            if "overrides" in old_settings:  # texts ("1") in sweeps written before --set values were typed
                old_settings["overrides"] = typed_or_given(old_settings["overrides"])
            if old_settings != settings and started:
                diff = sorted(k for k in settings if old_settings.get(k) != settings[k])
                raise UserError(f"{out} holds a sweep with different settings ({', '.join(diff)}); choose a new --out")
            if not started:
                old = {}
            kept = ("runs", "lr", "candidates", "grid", "extended")
            meta.update({k: old[k] for k in kept if isinstance(old.get(k), dict)})
            meta["batch_sizes"] = list(old.get("batch_sizes") or [])
            if base.warmup is None and isinstance(old.get("warmup"), int):
                base = dataclasses.replace(base, warmup=old["warmup"])  # keep the warmup shared when extending
        runs = plan_sweep(
            base, batch_sizes, lr_rule=lr_rule, base_batch=base_batch, lr_grid=lr_grid, out=out, **cadence
        )
        listed = [k for grid in meta["grid"].values() if isinstance(grid, dict) for k in grid]
        selected = check_only(only, [r.subdir for r in runs] + listed, "sweep")
        if train_fn is None:
            check_all_fit(runs)  # every batch size before training any, before writing anything
        mark_out_dir(out, "batch-sweep", ours)
        meta["warmup"] = runs[0].config.warmup
        meta["batch_sizes"] = sorted(set(meta["batch_sizes"]) | {r.batch_size for r in runs})
        for r in runs:  # every planned run listed from the start, so fit-batch can watch progress
            meta["grid"].setdefault(str(r.batch_size), {})[r.subdir] = r.lr
            if lr_rule != "grid":
                meta["runs"][str(r.batch_size)] = r.subdir
                meta["lr"][str(r.batch_size)] = r.lr
        atomic_write_json(meta_path, meta)
        if resolved_config is not None:
            write_config_file(out / RESOLVED_CONFIG, resolved_config)
        return {"meta": meta, "warmup": base.warmup, "selected": None if selected is None else sorted(selected)}

    agreed_start = agreed(prepare)
    meta = agreed_start["meta"]
    base = dataclasses.replace(base, warmup=agreed_start["warmup"])
    selected = None if agreed_start["selected"] is None else set(agreed_start["selected"])
    runs = plan_sweep(base, batch_sizes, lr_rule=lr_rule, base_batch=base_batch, lr_grid=lr_grid, out=out, **cadence)
    warmup = runs[0].config.warmup
    if not main:
        log = None
    log = log or (lambda msg: None)
    dispatcher = Dispatcher(executor or LocalExecutor(train_fn), tag="batch-sweep", log=log, only=selected)

    def task(r: SweepRun) -> RunTask:
        c = r.config
        detail = f"B={r.batch_size}, lr={r.lr:.4g}, {c.total_steps()} steps, warmup {c.warmup}"
        flops = c.total_steps() * c.tokens_per_step * train_flops_per_token(c)
        return RunTask(name=r.subdir, config=c, flops=flops, label="[batch-sweep]", detail=detail)

    def train_all(group: Sequence[SweepRun]) -> list[dict[str, Any] | None]:
        try:
            return dispatcher.run([task(r) for r in group])
        except UserError:
            save_meta()
            raise

    by_batch: dict[int, list[SweepRun]] = {}
    for r in runs:
        by_batch.setdefault(r.batch_size, []).append(r)
    results = dict(zip((r.subdir for r in runs), train_all(runs)))  # the whole grid at once
    lrs = {r.subdir: r.lr for r in runs}
    for _ in range(extend_grid if lr_rule == "grid" else 0):
        added = []
        for b, group in by_batch.items():
            mine = {r.subdir: results[r.subdir] for r in group}
            if any(v is None for v in mine.values()):
                continue  # runs left to other drivers (--only)
            lr_next = edge_extension({lrs[k]: _final_eval(v) for k, v in mine.items()})
            if lr_next is None:
                continue
            r = sweep_run(base, b, lr_next, out=out, warmup=warmup, grid=True, **cadence)
            log(f"[batch-sweep] B={b}: best lr at the edge of the grid, extending it to {lr_next:.4g}")
            meta["grid"][str(b)][r.subdir] = r.lr
            extended = meta["extended"].setdefault(str(b), [])
            if r.lr not in extended:
                extended.append(r.lr)
            group.append(r)
            lrs[r.subdir] = r.lr
            added.append(r)
        if not added:
            break
        save_meta()
        results.update(zip((r.subdir for r in added), train_all(added)))
    for b, group in by_batch.items():
        mine = {r.subdir: results[r.subdir] for r in group}
        if any(v is None for v in mine.values()):
            continue
        best = min(mine, key=lambda k: _final_eval(mine[k]))
        meta["runs"][str(b)] = best
        meta["lr"][str(b)] = lrs[best]
        meta["candidates"][str(b)] = {k: v.get("final_eval_loss") for k, v in mine.items()}
    save_meta()
    return meta


def train_flops_per_token(cfg: TrainConfig) -> int:
    """Training FLOPs per token of the model ``cfg`` trains (exact matmul count, at its seq_len)."""
    from scalinglab.models import accounting
    from scalinglab.models.config import get_config

    return accounting.train_flops_per_token(get_config(cfg.preset, cfg.overrides), cfg.seq_len)
