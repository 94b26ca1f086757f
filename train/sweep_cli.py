"""``scalinglab batch-sweep``: train one model at several batch sizes into one sweep directory."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scalinglab.cli import emit_json, parse_set
from scalinglab.errors import UserError
from scalinglab.train.cli import parse_mesh
from scalinglab.train.config import DTYPES, SCHEDULES, TrainConfig, validate
from scalinglab.train.sweep import DEFAULT_LR_GRID, DEFAULT_LR_RULE, LR_RULES, run_sweep


def _numbers(text: str, flag: str, kind=int) -> list:
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag} expects comma-separated {'integers' if kind is int else 'numbers'}, got {text!r}") from None
    if not values:
        raise UserError(f"{flag} is empty")
    return values


def _tokens(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--tokens expects a number of tokens (e.g. 2e6), got {text!r}") from None
    if not value >= 1 or value != int(value):
        raise UserError(f"--tokens must be a positive whole number of tokens, got {text!r}")
    return int(value)


def base_config(args: argparse.Namespace) -> TrainConfig:
    """The settings every run shares (batch size and lr are set per run by the sweep)."""
    d = TrainConfig()
    cfg = TrainConfig(
        preset=args.preset,
        overrides=parse_set(args.set),
        dataset=args.dataset or d.dataset,
        data_dir=args.data_dir,
        seq_len=args.seq_len or d.seq_len,
        tokens=_tokens(args.tokens),
        lr=args.lr if args.lr is not None else d.lr,
        schedule=args.schedule,
        warmup=args.warmup,
        seed=args.seed,
        mesh=parse_mesh(args.mesh) if args.mesh else None,
        dtype=args.dtype,
        eval_batches=args.eval_batches or d.eval_batches,
        weight_decay=args.weight_decay if args.weight_decay is not None else d.weight_decay,
        clip=args.clip if args.clip is not None else d.clip,
        gns=not args.no_gns,
    )
    return validate(cfg)


def _handler(args: argparse.Namespace) -> int:
    base = base_config(args)
    batch_sizes = _numbers(args.batch_sizes, "--batch-sizes")
    lr_grid = _numbers(args.lr_grid, "--lr-grid", float)
    meta = run_sweep(
        base, batch_sizes, out=args.out, lr_rule=args.lr_rule, base_batch=args.base_batch, lr_grid=lr_grid,
        extend_grid=args.extend_grid,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
        log_every=args.log_every, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
    )
    if args.json:
        emit_json(meta)
    else:
        sys.stderr.write(f"sweep complete: {len(meta['runs'])} batch sizes in {args.out}; "
                         f"fit it with: scalinglab fit-batch {args.out}\n")
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
    a = p.add_argument
    a("--preset", default=TrainConfig.preset, help="model preset (default %(default)s)")
    a("--set", action="append", metavar="KEY=VALUE", help="override a model field (repeatable)")
    a("--batch-sizes", default="8,16,32,64,128", help="global batch sizes in sequences (default %(default)s)")
    a("--lr-rule", choices=LR_RULES, default=DEFAULT_LR_RULE,
      help="lr per batch size from --lr at --base-batch: grid (default: --lr-grid factors x the sqrt rule, one run "
           "each; fit-batch takes the fewest steps over a batch size's lrs per target), sqrt (lr*sqrt(B/B0)), "
           "linear (lr*B/B0) or fixed (one untuned run per batch size: biased, see the README)")
    a("--lr", type=float, default=None, help=f"peak lr at --base-batch (default {TrainConfig.lr})")
    a("--base-batch", type=int, default=None, help="batch size B0 at which --lr applies (default: the smallest)")
    a("--lr-grid", default=",".join(str(f) for f in DEFAULT_LR_GRID),
      help="lr factors for --lr-rule grid (default %(default)s: five, 2x apart)")
    a("--extend-grid", type=int, nargs="?", const=2, default=0, metavar="K",
      help="when a batch size's best final eval loss is at the smallest or largest lr of its grid, train one more "
           "lr 2x beyond it, up to K times per batch size (K defaults to 2 when the flag is given alone)")
    a("--tokens", required=True, help="training tokens of every run (e.g. 2e6)")
    a("--out", required=True, help="sweep directory")
    a("--dataset", default=None, help=f"prepared dataset (default {TrainConfig.dataset})")
    a("--data-dir", default=None, help="data directory (default $SCALINGLAB_DATA_DIR or ~/.cache/scalinglab/data)")
    a("--seq-len", type=int, default=None, help=f"tokens per sequence (default {TrainConfig.seq_len})")
    a("--schedule", choices=SCHEDULES, default="constant",
      help="lr schedule (default constant: the loss at a step then does not depend on the run's length)")
    a("--warmup", type=int, default=None, help="warmup steps, the same for every run (default 5%% of the shortest run)")
    a("--weight-decay", type=float, default=None, help="AdamW weight decay")
    a("--clip", type=float, default=None, help="global gradient-norm clip")
    a("--seed", type=int, default=0, help="seed (same init for every batch size)")
    a("--mesh", default=None, help="device mesh, e.g. data=4,fsdp=2")
    a("--dtype", choices=DTYPES, default="float32")
    a("--log-every", type=int, default=None, help="metrics cadence in steps (default: 500 records per run)")
    a("--eval-every", type=int, default=None, help="eval cadence in steps (default: 20 evals per run)")
    a("--eval-batches", type=int, default=None, help="validation batches per eval")
    a("--checkpoint-every", type=int, default=None, help="checkpoint cadence (default: 10 per run)")
    a("--no-gns", action="store_true", help="skip the in-loop gradient-noise-scale statistics (no B_simple)")
    a("--json", action="store_true", help="print sweep.json when done")
    p.set_defaults(func=_handler)
