"""``scalinglab ladder`` (plan and run a size ladder) and ``scalinglab demo`` (the main job on CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from scalinglab.cli import emit_json
from scalinglab.errors import UserError
from scalinglab.train.plan import LADDER_PRESETS, LadderSpec, format_seconds, plan_ladder, plan_table


def _floats(text: str, flag: str) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _mesh(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    out: dict[str, int] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            n = int(value)
        except ValueError:
            raise UserError(f"--mesh expects axis=size pairs like data=2,fsdp=2,tensor=2, got {text!r}") from None
        if n != -1:
            out[key.strip()] = n
    return out


def spec_from_args(args: argparse.Namespace) -> tuple[LadderSpec, dict]:
    """The ladder spec (from a --ladder-preset and/or flags) and extra facts for estimates."""
    extra: dict = {}
    if args.ladder_preset:
        if args.ladder_preset not in LADDER_PRESETS:
            raise UserError(f"unknown --ladder-preset {args.ladder_preset!r}; known: {', '.join(LADDER_PRESETS)}")
        preset = LADDER_PRESETS[args.ladder_preset]
        spec = preset.spec
        extra["preset"] = preset
    else:
        spec = LadderSpec()
    changes = {
        "plan": args.plan,
        "budgets": _floats(args.budgets, "--budgets"),
        "sizes": _floats(args.sizes, "--sizes"),
        "tokens": _floats(args.tokens, "--tokens"),
        "family": args.family,
        "sizes_per_budget": args.sizes_per_budget,
        "size_span": args.size_span,
        "tokens_per_param": args.tokens_per_param,
        "aspect_ratio": args.aspect_ratio,
        "head_dim": args.head_dim,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "vocab_size": args.vocab_size,
    }
    spec = dataclasses.replace(spec, **{k: v for k, v in changes.items() if v not in (None, ())})
    if spec.family not in ("gpt2", "modern"):
        raise UserError(f"unknown --family {spec.family!r}; choose gpt2 or modern")
    return spec, extra


def _dataset_vocab(args: argparse.Namespace) -> int | None:
    from scalinglab.data.pipeline import load_dataset

    try:
        return int(load_dataset(args.dataset, data_dir=args.data_dir).vocab_size)
    except UserError:
        return None


def _ladder(args: argparse.Namespace) -> int:
    spec, extra = spec_from_args(args)
    if args.vocab_size is None and not args.ladder_preset:
        vocab = _dataset_vocab(args)
        if vocab is None and not args.dry_run:
            raise UserError(
                f"dataset {args.dataset!r} is not prepared; run: scalinglab data prepare --dataset {args.dataset}"
            )
        if vocab is not None:
            spec = dataclasses.replace(spec, vocab_size=vocab)
    runs = plan_ladder(spec)
    flops_per_s = args.throughput
    if flops_per_s is None and "preset" in extra:
        flops_per_s = extra["preset"].peak_flops_per_s * extra["preset"].assumed_mfu
    if args.dry_run:
        if args.json:
            emit_json([r.to_dict() for r in runs])
        else:
            print(plan_table(runs, flops_per_s))
        return 0
    print(plan_table(runs, flops_per_s), file=sys.stderr)
    from scalinglab.train.ladder import run_ladder

    summaries = run_ladder(
        runs, args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed, dtype=args.dtype,
        mesh=_mesh(args.mesh), eval_every=args.eval_every, eval_batches=args.eval_batches,
        log_every=args.log_every,
    )
    if args.json:
        emit_json(summaries)
    return 0


def add_ladder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", choices=("isoflop", "sizes"), default=None, help="isoflop (default) or sizes")
    p.add_argument("--budgets", default="", help="training FLOP budgets per run, e.g. 1e12,3e12,1e13")
    p.add_argument("--sizes", default="", help="target non-embedding parameter counts, e.g. 1e4,3e4,1e5")
    p.add_argument("--tokens", default="", help="token budgets for --plan sizes, e.g. 1e6,3e6")
    p.add_argument("--family", default=None, help="gpt2 (default) or modern")
    p.add_argument("--sizes-per-budget", type=int, default=None, help="isoflop sizes per budget (default 5)")
    p.add_argument("--size-span", type=float, default=None, help="N_max/N_min within a budget (default 32)")
    p.add_argument("--tokens-per-param", type=float, default=None,
                   help="D/N at the centre of each budget's sizes (default 20, Chinchilla's optimum)")
    p.add_argument("--aspect-ratio", type=float, default=None, help="d_model / n_layer (default 32)")
    p.add_argument("--head-dim", type=int, default=None, help="attention head size (default 16)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 64)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch in sequences (default 16)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 3e-3)")
    p.add_argument("--vocab-size", type=int, default=None, help="default: the dataset's tokenizer")
    p.add_argument("--ladder-preset", default="", help="a ladder sized for a machine: " + ", ".join(LADDER_PRESETS))
    p.add_argument("--dataset", default="local_text")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--mesh", default=None, help="data=..,fsdp=..,tensor=.. (default: all devices on data)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--throughput", type=float, default=None, help="FLOP/s used for the time estimate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ladder", help="plan and train a size ladder (IsoFLOP or sizes × tokens)")
    add_ladder_flags(p)
    p.add_argument("--out", default="runs/ladder", help="ladder directory (one run dir per planned run)")
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    p.add_argument("--json", action="store_true", help="JSON output (with --dry-run: the planned runs)")
    p.set_defaults(func=_ladder)

    from scalinglab.train.demo import register_demo

    register_demo(sub)


__all__ = ["register", "format_seconds"]
