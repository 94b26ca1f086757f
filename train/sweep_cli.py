"""``scalinglab batch-sweep``: train one model at several batch sizes into one sweep directory."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from scalinglab.cli import emit_json
from scalinglab.train.config import TrainConfig, validate
from scalinglab.train.executor import ExecutorOptions, make_executor
from scalinglab.train.options import Part, Schema, option
from scalinglab.train.sweep import DEFAULT_LR_GRID, DEFAULT_LR_RULE, LR_RULES, run_sweep


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The sweep's own settings (config-file section ``sweep``); the rest is the shared TrainConfig."""

    batch_sizes: tuple[int, ...] = option((8, 16, 32, 64, 128), "global batch sizes in sequences")
    lr_rule: str = option(
        DEFAULT_LR_RULE,
        "lr per batch size from --lr at --base-batch: grid (default: --lr-grid factors x the sqrt "
        "rule, one run each; fit-batch takes the fewest steps over a batch size's lrs per target), sqrt "
        "(lr*sqrt(B/B0)), linear (lr*B/B0) or fixed (one untuned run per batch size: biased, see the README)",
        choices=LR_RULES,
    )
    base_batch: int | None = option(None, "batch size B0 at which --lr applies (default: the smallest)")
    lr_grid: tuple[float, ...] = option(
        DEFAULT_LR_GRID,
        "lr factors for --lr-rule grid (default " + ",".join(str(f) for f in DEFAULT_LR_GRID) + ": five, 2x apart)",
    )
    extend_grid: int = option(
        0,
        "when a batch size's best final eval loss is at the smallest or largest lr of its grid, train one more "
        "lr 2x beyond it, up to K times per batch size (K defaults to 2 when the flag is given alone)",
        metavar="K",
        const=2,
    )
    out: str | None = option(None, "sweep directory")
    force: bool = option(False, "train into an --out that is not a sweep directory (nothing in it is replaced)")
    log_every: int | None = option(None, "metrics cadence in steps (default: 500 records per run)")
    eval_every: int | None = option(None, "eval cadence in steps (default: 20 evals per run)")
    checkpoint_every: int | None = option(None, "checkpoint cadence (default: 10 per run)")


# TrainConfig fields the sweep sets per run (or takes from SweepOptions); every other one is shared.
PER_RUN = (
    "name",
    "batch_size",
    "steps",
    "out",
    "resume",
    "branch_from",
    "branch_step",
    "wsd_decay_start",
    "log_every",
    "eval_every",
    "checkpoint_every",
)
SCHEMA = Schema(
    "batch-sweep",
    Part(SweepOptions, section="sweep", required=("out",)),
    Part(
        TrainConfig,
        exclude=PER_RUN,
        required=("tokens",),
        defaults={"schedule": "constant"},
        help={
            "tokens": "training tokens of every run (e.g. 2e6)",
            "lr": f"peak lr at --base-batch (default {TrainConfig.lr})",
            "schedule": "lr schedule (default constant: the loss at a step then does not depend on the run's length)",
            "warmup": "warmup steps, the same for every run (default 5% of the shortest run)",
            "seed": "seed (same init for every batch size)",
            "gns": "skip the in-loop gradient-noise-scale statistics (no B_simple)",
        },
    ),
    Part(ExecutorOptions, section="sweep"),
)


def settings(args: argparse.Namespace) -> tuple[TrainConfig, SweepOptions]:
    """The settings every run shares (batch size and lr are set per run) and the sweep's own."""
    values = SCHEMA.values(args)
    return validate(SCHEMA.build(TrainConfig, values)), SCHEMA.build(SweepOptions, values)


def _handler(args: argparse.Namespace) -> int:
    from scalinglab.train import distributed
    from scalinglab.train.multihost import is_main

    distributed.initialize()  # several processes (env SCALINGLAB_COORDINATOR..., Cloud TPU): jax.distributed
    base, opts = settings(args)
    how: ExecutorOptions = SCHEMA.build(ExecutorOptions, SCHEMA.values(args))
    with make_executor(how) as executor:
        meta = run_sweep(
            base,
            opts.batch_sizes,
            out=opts.out,
            lr_rule=opts.lr_rule,
            base_batch=opts.base_batch,
            lr_grid=opts.lr_grid,
            extend_grid=opts.extend_grid,
            log=lambda msg: print(msg, file=sys.stderr, flush=True),
            log_every=opts.log_every,
            eval_every=opts.eval_every,
            checkpoint_every=opts.checkpoint_every,
            resolved_config=SCHEMA.dump(opts, base),
            force=opts.force,
            executor=executor,
            only=how.only,
        )
    if not is_main():
        return 0
    if args.json:
        emit_json(meta)
    else:
        sys.stderr.write(
            f"sweep complete: {len(meta['runs'])} batch sizes in {opts.out}; "
            f"fit it with: scalinglab fit-batch {opts.out}\n"
        )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "batch-sweep",
        help="train one model at several batch sizes (resumable) for the critical-batch fit",
        description=(
            "Train the same model on the same token budget at each batch size into one sweep directory "
            "(sweep.json + one run dir per batch size). Finished runs are skipped and partial ones resume, "
            "so rerunning the command continues the sweep. Analyse it with `scalinglab fit-batch`."
        ),
    )
    SCHEMA.add_flags(p)
    p.add_argument("--json", action="store_true", help="print sweep.json when done")
    p.set_defaults(func=_handler)
