"""``scalinglab train``: build a TrainConfig from flags (over a config file or a run's saved
config) and run :func:`scalinglab.train.loop.train`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from scalinglab.cli import emit_json, parse_set
from scalinglab.errors import UserError
from scalinglab.fileio import read_json
from scalinglab.train.config import DTYPES, MESH_AXES, SCHEDULES, WSD_SHAPES, TrainConfig, validate

# flag dest → TrainConfig field (same name unless listed)
_FIELDS = (
    "preset", "dataset", "data_dir", "seq_len", "batch_size", "tokens", "steps", "lr", "schedule", "warmup",
    "out", "grad_accum", "dtype", "seed", "eval_every", "eval_batches", "log_every", "checkpoint_every",
    "keep_checkpoints", "wsd_decay", "wsd_decay_shape", "branch_from", "branch_step", "z_loss", "weight_decay",
    "clip", "name", "max_bad_steps", "data_shards",
)


def parse_mesh(text: str) -> dict[str, int]:
    """``data=2,fsdp=2,tensor=2`` → ``{"data": 2, "fsdp": 2, "tensor": 2}`` (missing axes omitted)."""
    mesh: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in MESH_AXES:
            raise UserError(f"--mesh expects data=N,fsdp=N,tensor=N, got {text!r}")
        try:
            mesh[key.strip()] = int(value)
        except ValueError:
            raise UserError(f"--mesh: {key.strip()} must be an integer, got {value!r}") from None
        if mesh[key.strip()] < 1:
            raise UserError(f"--mesh: {key.strip()} must be ≥ 1")
    return mesh


def _load_config_file(path: str) -> TrainConfig:
    p = Path(path)
    if not p.exists():
        raise UserError(f"--config {path}: no such file")
    try:
        d = read_json(p)
    except ValueError as e:
        raise UserError(f"--config {path}: not valid JSON ({e})") from None
    if isinstance(d, dict) and isinstance(d.get("train"), dict):  # a run's config.json
        d = d["train"]
    if not isinstance(d, dict):
        raise UserError(f"--config {path}: expected a JSON object of TrainConfig fields")
    return TrainConfig.from_dict(d)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults ← --config file (or, with --resume, the run's saved config) ← explicit flags."""
    if args.config:
        cfg = _load_config_file(args.config)
    elif args.resume and args.out and (Path(args.out) / "config.json").exists():
        cfg = _load_config_file(str(Path(args.out) / "config.json"))
    else:
        cfg = TrainConfig()
    changes: dict[str, Any] = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.tokens is not None and args.steps is not None:
        raise UserError("give either --steps or --tokens, not both")
    if args.tokens is not None:
        changes["steps"] = None
    if args.steps is not None:
        changes["tokens"] = None
    if args.set:
        changes["overrides"] = {**(cfg.overrides or {}), **parse_set(args.set)}
    if args.mesh is not None:
        changes["mesh"] = parse_mesh(args.mesh)
    if args.resume:
        changes["resume"] = True
    if args.no_gns:
        changes["gns"] = False
    return validate(dataclasses.replace(cfg, **changes))


def _handler(args: argparse.Namespace) -> int:
    from scalinglab.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    cfg = config_from_args(args)
    from scalinglab.train.loop import train

    progress = False if args.no_progress else None
    summary = train(cfg, progress=progress)
    if args.json:
        emit_json(summary)
    elif summary.get("status") == "complete":
        sys.stderr.write(
            f"trained {summary['steps']} steps ({summary['tokens']:,} tokens): final loss "
            f"{summary['final_loss']:.4f}, eval loss {summary['final_eval_loss']:.4f} → {cfg.out}\n"
        )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one model (sharded, resumable) and log metrics",
        description="Train a decoder-only transformer; writes config.json, metrics.jsonl, tb/, "
        "checkpoints/ and (when complete) summary.json into --out.",
    )
    a = p.add_argument
    a("--config", help="JSON file of TrainConfig fields (or a run's config.json); flags override it")
    a("--preset", help="model preset, e.g. gpt2-tiny, modern-mini (see `scalinglab params --help`)")
    a("--set", action="append", metavar="KEY=VALUE", help="override a model field (repeatable), e.g. n_layer=4")
    a("--dataset", help="prepared dataset name (see `scalinglab data prepare`)")
    a("--data-dir", help="data directory (default $SCALINGLAB_DATA_DIR or ~/.cache/scalinglab/data)")
    a("--seq-len", type=int, help="tokens per sequence")
    a("--data-shards", type=int, help="pipeline shards defining the global batch stream (default: process count)")
    a("--batch-size", type=int, help="global batch size in sequences (over all devices and processes)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tokens", type=int, help="training budget in tokens")
    g.add_argument("--steps", type=int, help="training length in optimizer steps")
    a("--lr", type=float, help="peak learning rate")
    a("--schedule", choices=SCHEDULES, help="learning-rate schedule (default cosine)")
    a("--warmup", type=int, help="linear warmup steps (default 5%% of the run)")
    a("--wsd-decay", type=float, help="WSD: fraction of the run spent in the cooldown (default 0.2)")
    a("--wsd-decay-shape", choices=WSD_SHAPES, help="WSD cooldown shape (default linear)")
    a("--branch-from", metavar="DIR", help="WSD: branch a cooldown from this (stable-phase) run's checkpoint")
    a("--branch-step", type=int, metavar="S", help="WSD: the checkpoint step to branch from")
    a("--weight-decay", type=float, help="AdamW decoupled weight decay (default 0.1; not on norms/biases/embeddings)")
    a("--clip", type=float, help="global gradient-norm clip (default 1.0; 0 disables)")
    a("--z-loss", type=float, help="z-loss coefficient (default 0)")
    a("--out", help="run directory")
    a("--name", help="run name (default: the run directory's name)")
    a("--mesh", help="device mesh, e.g. data=4,fsdp=2,tensor=1 (default: all devices on data)")
    a("--grad-accum", type=int, help="microbatches per step (gradient accumulation)")
    a("--dtype", choices=DTYPES, help="compute dtype (parameters stay float32)")
    a("--seed", type=int, help="random seed (init and data order)")
    a("--resume", action="store_true", help="continue from the newest complete checkpoint in --out")
    a("--eval-every", type=int, help="evaluate on the fixed validation batches every K steps (0: only at the end)")
    a("--eval-batches", type=int, help="number of validation batches")
    a("--log-every", type=int, help="write a metrics.jsonl record every K steps")
    a("--checkpoint-every", type=int, help="save a checkpoint every K steps (0: only at the end)")
    a("--keep-checkpoints", type=int, help="keep the newest N checkpoints (plus WSD branch points)")
    a("--max-bad-steps", type=int, help="stop after K consecutive non-finite steps (default 5)")
    a("--no-gns", action="store_true", help="skip the gradient-noise-scale statistics")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--coordinator", help="multi-process: coordinator HOST:PORT ('auto' on Cloud TPU); env SCALINGLAB_COORDINATOR")
    a("--num-processes", type=int, help="multi-process: number of processes; env SCALINGLAB_NUM_PROCESSES")
    a("--process-id", type=int, help="multi-process: this process's id; env SCALINGLAB_PROCESS_ID")
    a("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_handler)
