"""``scalinglab ladder`` (plan and run a size ladder) and ``scalinglab demo`` (the main job on CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping
from typing import Any

from scalinglab.cli import emit_json
from scalinglab.errors import UserError
from scalinglab.rundir import LR_SEARCH_DIR, RESOLVED_CONFIG
from scalinglab.train.config import TrainConfig
from scalinglab.train.executor import ExecutorOptions, LocalExecutor, PendingRuns, make_executor
from scalinglab.train.options import Part, Schema, option
from scalinglab.train.plan import (
    LADDER_PRESETS,
    LadderSpec,
    format_seconds,
    plan_ladder,
    plan_lr_search,
    plan_table,
    run_epochs,
)
from scalinglab.train.wandb_log import require_wandb


@dataclasses.dataclass(frozen=True)
class LadderOptions:
    """The ladder command's own settings (config-file section ``ladder``, with the LadderSpec fields)."""

    ladder_preset: str = option("", "a ladder sized for a machine: " + ", ".join(LADDER_PRESETS))
    throughput: float | None = option(None, "FLOP/s used for the time estimate")
    out: str = option("runs/ladder", "ladder directory (one run dir per planned run)")
    allow_repeat: bool = option(False, "let a --ladder-preset run read its dataset more than once (default: refuse)")
    fit_check: str = option(
        "auto",
        "with --ladder-preset, refuse a plan whose largest run does not fit a device: aot (libtpu compile for the "
        "preset's topology), estimate (analytic bytes), auto (aot when libtpu is installed, not in --dry-run), off",
        choices=("auto", "aot", "estimate", "off"),
    )
    force: bool = option(False, "train into an --out that is not a ladder directory (nothing in it is replaced)")
    emit_commands: bool = option(
        False,
        "train nothing: print one shell command per run that can be trained now and is missing (the lr-search "
        "runs first; once they finished, the ladder runs), each training exactly that run into --out",
    )


# TrainConfig fields the plan sets for each run; every other one applies to all runs of the ladder.
PLANNED = (
    "name",
    "preset",
    "overrides",
    "seq_len",
    "batch_size",
    "tokens",
    "steps",
    "lr",
    "beta2",
    "schedule",
    "warmup",
    "out",
    "resume",
    "branch_from",
    "branch_step",
    "wsd_decay",
    "wsd_decay_shape",
    "wsd_decay_start",
)
SCHEMA = Schema(
    "ladder",
    Part(LadderOptions, section="ladder"),
    Part(LadderSpec, section="ladder"),
    Part(TrainConfig, exclude=PLANNED),
    Part(ExecutorOptions, section="ladder"),
)


def _spec(values: Mapping[str, Any], opts: LadderOptions) -> tuple[LadderSpec, dict]:
    """The ladder spec (a --ladder-preset's, then the settings given) and extra facts for estimates."""
    extra: dict = {}
    if opts.ladder_preset:
        if opts.ladder_preset not in LADDER_PRESETS:
            raise UserError(f"unknown --ladder-preset {opts.ladder_preset!r}; known: {', '.join(LADDER_PRESETS)}")
        preset = LADDER_PRESETS[opts.ladder_preset]
        spec = preset.spec
        extra["preset"] = preset
    else:
        spec = LadderSpec()
    given = {f.name: values[f.name] for f in dataclasses.fields(LadderSpec) if f.name in values}
    spec = dataclasses.replace(spec, **given)
    if spec.family not in ("gpt2", "modern"):
        raise UserError(f"unknown --family {spec.family!r}; choose gpt2 or modern")
    return spec, extra


def spec_from_args(args: argparse.Namespace) -> tuple[LadderSpec, dict]:
    """The ladder spec from ``--config`` and flags, and extra facts for estimates."""
    values = SCHEMA.values(args)
    return _spec(values, SCHEMA.build(LadderOptions, values))


def _dataset(dataset: str, data_dir: str | None):
    """The prepared dataset, or None when it is not prepared (a dry run may plan without it)."""
    from scalinglab.data.prepared import load_dataset

    try:
        return load_dataset(dataset, data_dir=data_dir)
    except UserError:
        return None


def _check_repeats(opts: LadderOptions, dataset: str, runs, epochs, ds) -> None:
    """A ladder preset must fit its dataset (each run at most one epoch) unless --allow-repeat;
    any other ladder that repeats data gets a note."""
    if ds is None or not epochs or max(epochs) <= 1:
        return
    worst = max(range(len(runs)), key=lambda i: epochs[i])
    r = runs[worst]
    what = (
        f"run {r.name} reads {r.steps * r.batch_size * (r.seq_len + 1):,} tokens, {epochs[worst]:.1f} epochs "
        f"of the {ds.n_tokens('train'):,} train tokens of {dataset}"
    )
    if opts.ladder_preset and not opts.allow_repeat:
        raise UserError(
            f"--ladder-preset {opts.ladder_preset}: {what}; prepare a bigger corpus "
            "(scalinglab data prepare --dataset files/NAME --config files=GLOB) or pass --allow-repeat"
        )
    sys.stderr.write(f"note: {what}: the data repeats\n")


def _ladder(args: argparse.Namespace) -> int:
    from scalinglab.train import distributed
    from scalinglab.train.multihost import agreed, is_main

    if not args.dry_run:  # several processes (env SCALINGLAB_COORDINATOR..., Cloud TPU): jax.distributed
        distributed.initialize()
    values = SCHEMA.values(args)
    opts: LadderOptions = SCHEMA.build(LadderOptions, values)
    if opts.throughput is not None and not (opts.throughput > 0 and math.isfinite(opts.throughput)):
        raise UserError(f"--throughput is FLOP/s and must be positive, got {opts.throughput:g}")  # before any note
    how: ExecutorOptions = SCHEMA.build(ExecutorOptions, values)
    executor = LocalExecutor() if opts.emit_commands or args.dry_run else make_executor(how)
    if not args.dry_run:  # a bad --out is refused before planning (run_ladder checks again)
        from scalinglab.outdir import check_out_dir

        agreed(lambda: check_out_dir(opts.out, "ladder", signature="plan.json", force=opts.force) and None)
    spec, extra = _spec(values, opts)
    if "preset" in extra:  # the preset's dtype, mesh, remat and accumulation, unless given
        values = {**extra["preset"].train_kwargs(), **values}
    shared: TrainConfig = SCHEMA.build(TrainConfig, values)  # the settings every run of the ladder shares
    if shared.wandb is not None:
        require_wandb()
    ds = _dataset(shared.dataset, shared.data_dir)
    if "vocab_size" not in values:  # the model's vocabulary is the dataset's (presets too)
        if ds is None and not args.dry_run:
            raise UserError(
                f"dataset {shared.dataset!r} is not prepared; run: scalinglab data prepare --dataset {shared.dataset}"
            )
        if ds is not None:
            spec = dataclasses.replace(spec, vocab_size=int(ds.vocab_size))
    runs = plan_ladder(spec)
    search = plan_lr_search(spec, runs)
    epochs = run_epochs([*search, *runs], None if ds is None else ds.n_tokens("train"))
    _check_repeats(opts, shared.dataset, [*search, *runs], epochs, ds)
    if "preset" in extra:
        from scalinglab.train.fit_check import check_plan_fits

        method = "estimate" if (opts.fit_check == "auto" and args.dry_run) else opts.fit_check
        check_plan_fits(opts.ladder_preset, extra["preset"], [*search, *runs], shared, method=method)
    flops_per_s = opts.throughput
    if flops_per_s is None and "preset" in extra:
        flops_per_s = extra["preset"].peak_flops_per_s * extra["preset"].assumed_mfu
    if args.dry_run:
        if args.json:
            emit_json([{**r.to_dict(), "epochs": e} for r, e in zip([*search, *runs], epochs)])
        else:
            print(plan_table([*search, *runs], flops_per_s, epochs))
        return 0
    if not opts.emit_commands and is_main():
        print(plan_table([*search, *runs], flops_per_s, epochs), file=sys.stderr)
    from scalinglab.train.ladder import run_ladder

    try:
        with executor:
            summaries = run_ladder(
                runs,
                opts.out,
                search_runs=search,
                extend_search=spec.lr_search_extend,
                resolved_config=SCHEMA.dump(dataclasses.replace(opts, emit_commands=False), spec, shared),
                force=opts.force,
                executor=executor,
                only=how.only,
                emit=opts.emit_commands,
                log=(lambda s: None) if opts.emit_commands else (lambda s: print(s, file=sys.stderr, flush=True)),
                **SCHEMA.fields_of(TrainConfig, values),
            )
    except PendingRuns as pending:
        print_commands(opts.out, pending.tasks, search_names={r.name for r in search})
        return 0
    if not is_main():
        return 0
    if opts.emit_commands:
        sys.stderr.write(f"{opts.out}: every run is finished, nothing to train\n")
    elif args.json:
        emit_json(summaries)
    return 0


def print_commands(out: str, tasks, search_names: set[str]) -> None:
    """One shell command per run of ``tasks`` on stdout (each trains exactly that run into the ladder
    directory ``out``, from its ``config.yaml``), and on stderr what comes after them."""
    import os
    import shlex

    ladder = os.path.abspath(out)
    for t in tasks:
        print(
            f"scalinglab ladder --config {shlex.quote(os.path.join(ladder, RESOLVED_CONFIG))} "
            f"--out {shlex.quote(ladder)} --only {shlex.quote(t.name)}"
        )
    if any(t.name in search_names or t.name.startswith(f"{LR_SEARCH_DIR}/") for t in tasks):
        sys.stderr.write(
            f"{len(tasks)} lr-search runs to train first; when they have finished, run --emit-commands again "
            "for the ladder runs (their lr comes from the search)\n"
        )
    else:
        sys.stderr.write(f"{len(tasks)} runs to train\n")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="plan and train a size ladder (IsoFLOP or sizes × tokens)")
    SCHEMA.add_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    p.add_argument("--json", action="store_true", help="JSON output (with --dry-run: the planned runs)")
    p.set_defaults(func=_ladder)

    from scalinglab.train.demo import register_demo

    register_demo(sub)


__all__ = ["register", "format_seconds", "spec_from_args", "SCHEMA"]
