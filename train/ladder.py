"""Running a planned ladder: train what is missing, resume what is partial, skip what is finished.

A ladder directory holds ``plan.json`` (the planned runs, each with where its hyperparameters
came from) and one run directory per run, named by :attr:`PlannedRun.name`. Under the ``search``
learning-rate protocol the search runs (``lr_search/...``) are trained first, then
``lr_search/lr_search.json`` records each searched size's best lr and the fitted lr_opt(N), which
sets the lr of every ladder run before it is trained. A run directory with ``summary.json`` is finished and is
never trained again; one with checkpoints but no summary resumes from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.rundir import (
    CONFIG_FILE,
    LR_SEARCH_FILE,
    PLAN_FILE,
    RESOLVED_CONFIG,
    SUMMARY_FILE,
    finite_or,
    is_complete,
)
from scalinglab.train import lr_protocol as lrp
from scalinglab.train.config import TrainConfig
from scalinglab.train.config_file import write_config_file
from scalinglab.train.executor import Dispatcher, Executor, LocalExecutor, RunTask, check_only
from scalinglab.train.multihost import agreed, is_main
from scalinglab.train.plan import LADDER_PRESETS, SEARCH_DIR, LadderPreset, PlannedRun, plan_ladder
from scalinglab.train.sweep import edge_extension

# The model fields a planned config pins (every architecture size; the family comes from the preset).
_MODEL_FIELDS = ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "n_ctx", "vocab_size", "tie_embeddings")
# Pinned too, only present in a config under μP (absent = 0: the standard parameterisation).
_MUP_FIELD = "mup_base_width"


def train_config_for(run: PlannedRun, out_dir: Path, **train_kwargs: Any) -> TrainConfig:
    """The TrainConfig that trains ``run`` (cosine to its own length) into ``out_dir/run.name``."""
    if run.lr is None:
        raise UserError(f"run {run.name} has no learning rate yet (pending the lr search)")
    cfg = run.config.to_dict()
    run_dir = out_dir / run.name
    return TrainConfig(
        name=run.name,
        preset=f"{cfg['family']}-tiny",
        overrides={k: cfg[k] for k in (*_MODEL_FIELDS, _MUP_FIELD) if k in cfg},
        seq_len=run.seq_len,
        batch_size=run.batch_size,
        steps=run.steps,
        lr=run.lr,
        beta2=run.beta2,
        schedule="cosine",
        warmup=run.warmup,
        out=str(run_dir),
        resume=True,  # continues from the newest checkpoint if any, else starts fresh
        **train_kwargs,
    )


def preset_train_configs(
    name: str, *, largest: bool = False, out_dir: str | Path = "runs/ladder"
) -> tuple[LadderPreset, list[TrainConfig]]:
    """The TrainConfig of every run of the ladder preset ``name`` (with the preset's dtype, mesh,
    remat and accumulation applied), or only of its largest run (most parameters). A run whose lr
    awaits the lr search gets the spec's lr (for ``aot``: memory and time do not depend on it)."""
    if name not in LADDER_PRESETS:
        raise UserError(f"unknown --ladder-preset {name!r}; known: {', '.join(LADDER_PRESETS)}")
    preset = LADDER_PRESETS[name]
    runs = [r if r.lr is not None else dataclasses.replace(r, lr=preset.spec.lr) for r in plan_ladder(preset.spec)]
    if largest:
        runs = [max(runs, key=lambda r: (r.total, r.train_flops_per_token))]
    return preset, [train_config_for(r, Path(out_dir), **preset.train_kwargs()) for r in runs]


def check_plan_compatible(out_dir: Path, runs: Sequence[PlannedRun]) -> None:
    """Refuse to mix a new plan into a ladder dir whose same-named runs have other configs."""
    for run in runs:
        cfg_path = out_dir / run.name / CONFIG_FILE
        if not cfg_path.exists():
            continue
        try:
            saved = read_json(cfg_path)
        except (OSError, ValueError):
            continue  # a run that died before writing its config: it will be rewritten
        saved_model = saved.get("model", {})
        planned = run.config.to_dict()
        diff = [k for k in _MODEL_FIELDS if k in saved_model and saved_model[k] != planned[k]]
        if saved_model.get(_MUP_FIELD, 0) != planned.get(_MUP_FIELD, 0):
            diff.append(_MUP_FIELD)
        saved_steps = saved.get("train", {}).get("steps")
        if diff or (saved_steps is not None and saved_steps != run.steps):
            what = ", ".join(diff) if diff else "steps"
            raise UserError(f"{out_dir / run.name} exists with a different {what}; use another --out")


def _final_loss(summary: dict) -> float:
    for key in ("final_eval_loss", "final_loss"):
        v = finite_or(summary.get(key))
        if not math.isnan(v):
            return v
    return math.inf


def resolve_lrs(
    runs: Sequence[PlannedRun], search_runs: Sequence[PlannedRun], summaries: Sequence[dict]
) -> tuple[list[PlannedRun], dict]:
    """Ladder runs with their lr set from the search (``summaries`` of ``search_runs``, same order).

    Returns (runs, record): record holds each searched size's losses per lr, best lr (parabola in log
    lr, :func:`scalinglab.train.lr_protocol.best_lr`) and edge flag, and the fitted law lr_opt(N).
    """
    by_size: dict[int, dict[float, float]] = {}
    for r, summ in zip(search_runs, summaries):
        by_size.setdefault(r.non_embedding, {})[float(r.lr)] = _final_loss(summ)
    sizes = []
    for n, losses in sorted(by_size.items()):
        best, edge = lrp.best_lr(losses)
        sizes.append(
            {
                "non_embedding": n,
                "losses": {f"{lr:.6g}": v for lr, v in sorted(losses.items())},
                "best_lr": best,
                "at_edge": edge,
            }
        )
    law = lrp.fit_lr_law([s["non_embedding"] for s in sizes], [s["best_lr"] for s in sizes])
    source = (
        f"lr_opt(N) = {law['A']:.4g} * N^{law['k']:.4f}, fitted to the best lr of {len(sizes)} sizes "
        f"searched at the smallest budget ({SEARCH_DIR}/{LR_SEARCH_FILE})"
    )
    resolved = [
        r
        if r.lr is not None
        else dataclasses.replace(
            r,
            lr=lrp.lr_from_law(law, r.non_embedding),
            hparams=tuple((k, v) for k, v in r.hparams if k != "lr") + (("lr", source),),
        )
        for r in runs
    ]
    warnings = [
        f"lr search: the best lr of N={s['non_embedding']:,} is at the edge of the grid ({s['best_lr']:.3g}); "
        "widen --lr-grid"
        for s in sizes
        if s["at_edge"]
    ]
    return resolved, {"sizes": sizes, "law": law, "warnings": warnings}


def check_plan_unchanged(out_dir: Path, runs: Sequence[PlannedRun], train_kwargs: dict[str, Any]) -> None:
    """Refuse a rerun whose plan changes a run that has started (its lr, seed, steps...), before
    anything is written.

    A plan whose runs never started (a failed start) binds nothing: it is replaced. A run whose lr
    is pending the lr search (``lr`` None) is compared without its lr and the lr's provenance: the
    saved plan holds the value the search set, and the search runs themselves are compared in full."""
    from scalinglab.outdir import run_started
    from scalinglab.train.identity import plan_diff, train_kwargs_diff

    requested = [r.to_dict() for r in runs]
    pending = {r["name"] for r in requested if r.get("lr") is None}
    path = out_dir / "plan.json"
    if not path.exists():
        return
    try:
        old = read_json(path)
        old_runs = [r for r in [*old.get("runs", []), *old.get("lr_search", [])] if isinstance(r, dict)]
        old_train = old.get("train") or {}
    except (OSError, ValueError, AttributeError):
        raise UserError(f"{path} is unreadable; move it away or choose another --out") from None
    started = [r["name"] for r in old_runs if run_started(out_dir / str(r.get("name")))]
    if not started:
        return
    derived = {f"{name}.{key}" for name in pending for key in ("lr", "hparams")}
    diff = [d for d in plan_diff(old_runs, requested) if d.split(".", 1)[0] in started and d not in derived]
    diff += [f"train.{k}" for k in train_kwargs_diff(old_train, {k: _jsonish(v) for k, v in train_kwargs.items()})]
    if diff:
        raise UserError(
            f"{out_dir} holds a ladder whose started runs were planned otherwise; this rerun changes "
            f"{', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}. Use another --out"
        )


def _jsonish(v: Any) -> Any:
    """``v`` as it reads back from JSON (tuples become lists)."""
    return [_jsonish(x) for x in v] if isinstance(v, (list, tuple)) else v


def run_ladder(
    runs: Sequence[PlannedRun],
    out_dir: str | Path,
    *,
    search_runs: Sequence[PlannedRun] = (),
    extend_search: int = 0,
    train_fn: Callable[[TrainConfig], dict] | None = None,
    executor: Executor | None = None,
    only: Sequence[str] = (),
    emit: bool = False,
    log: Callable[[str], None] = lambda s: sys.stderr.write(s + "\n"),
    resolved_config: Mapping[str, Any] | None = None,
    force: bool = False,
    **train_kwargs: Any,
) -> list[dict]:
    """Train every planned run that is not finished; returns the summaries of the finished ladder runs.

    ``search_runs`` (:func:`scalinglab.train.plan.plan_lr_search`) are trained first and set the lr
    of runs whose lr is pending; ``extend_search`` = k: a searched size whose best final loss is at
    the smallest or largest lr tried gets one more run 2× beyond that edge, up to k times per size
    (listed in ``plan.json``'s ``lr_search`` like the grid). ``train_kwargs`` go to
    :class:`TrainConfig` (dataset, data_dir, seed, dtype, eval_every...). ``resolved_config``: the
    command's settings, written as ``config.yaml`` beside ``plan.json``.
    ``force``: train into an ``out_dir`` that is not a ladder directory (see :mod:`scalinglab.outdir`).

    Runs go through :class:`scalinglab.train.executor.Dispatcher`: ``executor`` (default: in this
    process with ``train_fn``, :func:`scalinglab.train.loop.train`) trains each batch of independent
    runs (the search grid, each round of its extension, the ladder runs). ``only``: train just these
    runs (a ladder run whose lr is pending needs every search run finished first: UserError otherwise).
    ``emit``: train nothing; raise :class:`~scalinglab.train.executor.PendingRuns` with the runs that
    can be trained now (the missing search runs first; the ladder runs once the search is complete).
    """
    from scalinglab.outdir import check_out_dir, mark_out_dir

    if any(r.lr is None for r in runs) and not search_runs:
        raise UserError("the ladder's learning rates are pending an lr search, but no search runs were given")
    out_dir = Path(out_dir)
    search_runs = list(search_runs)
    main = is_main()  # several processes: process 0 checks, decides and writes; the others follow
    if not main:
        log = lambda s: None  # noqa: E731

    def write_plan(ladder_runs: Sequence[PlannedRun], search: dict | None = None) -> None:
        plan = {
            "runs": [r.to_dict() for r in ladder_runs],
            "lr_search": [r.to_dict() for r in search_runs],
            "train": train_kwargs,
        }
        if search is not None:
            plan["lr_law"] = search["law"]
        if main:
            atomic_write_json(out_dir / PLAN_FILE, plan)

    def prepare() -> list[str] | None:
        """The checks and first writes (process 0); the ``--only`` selection."""
        ours = check_out_dir(out_dir, "ladder", signature="plan.json", force=force)
        check_plan_unchanged(out_dir, [*search_runs, *runs], train_kwargs)
        check_plan_compatible(out_dir, [*search_runs, *runs])
        selected = check_only(only, _known_names(out_dir, [*search_runs, *runs]), "ladder")
        _check_search_first(out_dir, runs, search_runs, selected)
        mark_out_dir(out_dir, "ladder", ours)
        if resolved_config is not None:
            write_config_file(out_dir / RESOLVED_CONFIG, resolved_config)
        write_plan(runs)
        if search_runs and not (out_dir / SEARCH_DIR / LR_SEARCH_FILE).exists():  # marks the folder at once
            atomic_write_json(out_dir / SEARCH_DIR / LR_SEARCH_FILE, {"kind": "lr-search", "status": "running"})
        return None if selected is None else sorted(selected)

    chosen = agreed(prepare)
    selected = None if chosen is None else set(chosen)
    dispatcher = Dispatcher(executor or LocalExecutor(train_fn), tag="ladder", log=log, only=selected, emit=emit)
    for r in [*search_runs, *runs]:
        dispatcher.board.expect(r.name, r.steps, r.flops)

    def task(i: int, run: PlannedRun) -> RunTask:
        n = len(search_runs) + len(runs)
        # a search run is only judged by its final eval loss: no evals along the way
        kwargs = {**train_kwargs, "eval_every": 0} if run.role == "search" else train_kwargs
        return RunTask(
            name=run.name,
            config=train_config_for(run, out_dir, **kwargs),
            flops=run.flops,
            label=f"[ladder {i + 1}/{n}]",
            detail=f"N={run.non_embedding:,} D={run.tokens:.3g} tokens ({run.steps} steps) C={run.flops:.3g} FLOPs "
            f"lr={run.lr:.3g}",
        )

    search_summaries = dispatcher.run([task(i, r) for i, r in enumerate(search_runs)])
    for _ in range(extend_search if search_runs else 0):
        if any(s is None for s in search_summaries):
            break  # runs left to other drivers (--only): the extension is decided once the grid is done
        added = _edge_runs(search_runs, search_summaries)
        if not added:
            break
        for r in added:
            log(f"[ladder] lr search: N={r.non_embedding:,} best at the edge of its grid, adding lr={r.lr:.3g}")
            dispatcher.board.expect(r.name, r.steps, r.flops)
        first = len(search_runs)
        search_runs.extend(added)
        write_plan(runs)
        search_summaries += dispatcher.run([task(first + k, r) for k, r in enumerate(added)])
    if search_runs:
        if any(s is None for s in search_summaries):  # --only: the search is not complete yet
            pending = [r.name for r in runs if r.lr is None and dispatcher.selected(r.name)]
            if pending:
                missing = [r.name for r, s in zip(search_runs, search_summaries) if s is None]
                raise UserError(
                    f"{_listed(pending)} need the lr search first; search runs not finished: {_listed(missing)}"
                )
            return agreed(
                lambda: [read_json(out_dir / r.name / SUMMARY_FILE) for r in runs if is_complete(out_dir / r.name)]
            )
        runs, record = resolve_lrs(runs, search_runs, search_summaries)
        if main:
            atomic_write_json(out_dir / SEARCH_DIR / LR_SEARCH_FILE, {"kind": "lr-search", **record})
        for w in record["warnings"]:
            log(f"[ladder] warning: {w}")
        law = record["law"]
        log(f"[ladder] lr search done: lr_opt(N) = {law['A']:.4g} * N^{law['k']:.4f}")
        write_plan(runs, record)
    summaries = dispatcher.run([task(len(search_runs) + i, r) for i, r in enumerate(runs)])
    return [s for s in summaries if s is not None]


def _edge_runs(search_runs: Sequence[PlannedRun], summaries: Sequence[dict]) -> list[PlannedRun]:
    """One more search run per searched size whose best final loss is at an edge of its lrs (2× beyond)."""
    added = []
    for size in sorted({r.non_embedding for r in search_runs}):
        mine = [(r, s) for r, s in zip(search_runs, summaries) if r.non_embedding == size]
        lr_next = edge_extension({float(r.lr): _final_loss(summ) for r, summ in mine})
        if lr_next is not None:
            base = mine[0][0]
            added.append(
                dataclasses.replace(
                    base,
                    name=f"{base.name.rsplit('-lr', 1)[0]}-lr{lr_next:.3g}".replace("+", ""),
                    lr=lr_next,
                    hparams=tuple((k, v) for k, v in base.hparams if k != "lr")
                    + (("lr", "search grid extended 2x beyond its edge"),),
                )
            )
    return added


def _known_names(out_dir: Path, planned: Sequence[PlannedRun]) -> list[str]:
    """Names ``--only`` may give: the planned runs and the search extensions ``plan.json`` lists."""
    names = [r.name for r in planned]
    try:
        listed = [r.get("name") for r in read_json(out_dir / PLAN_FILE).get("lr_search", [])]
    except (OSError, ValueError, AttributeError):
        listed = []
    return names + [n for n in listed if isinstance(n, str) and n not in names]


def _check_search_first(
    out_dir: Path, runs: Sequence[PlannedRun], search_runs: Sequence[PlannedRun], selected: set[str] | None
) -> None:
    """``--only`` of a ladder run whose lr is pending, while search runs it does not name are missing:
    UserError before anything is trained (the search runs come first; ``--emit-commands`` lists them)."""
    if selected is None:
        return
    pending = [r.name for r in runs if r.lr is None and r.name in selected]
    missing = [r.name for r in search_runs if r.name not in selected and not is_complete(out_dir / r.name)]
    if pending and missing:
        raise UserError(
            f"{_listed(pending)} need the lr search first; {len(missing)} search runs are not finished "
            f"({_listed(missing)}); train them first (--emit-commands lists them)"
        )


def _listed(names: Sequence[str], k: int = 3) -> str:
    """The first ``k`` names for a message, then `...`."""
    return ", ".join(names[:k]) + (" ..." if len(names) > k else "")
