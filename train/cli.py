"""``scalinglab train``: build a TrainConfig from flags (over a config file or a run's saved
config) and run :func:`scalinglab.train.loop.train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scalinglab.cli import emit_json
from scalinglab.rundir import CONFIG_FILE
from scalinglab.train.config import TRAIN_SCHEMA, TrainConfig, parse_mesh, validate

__all__ = ["SCHEMA", "config_from_args", "parse_mesh", "register"]

SCHEMA = TRAIN_SCHEMA


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults ← --config file (or, with --resume, the run's saved config.json) ← explicit flags."""
    config = args.config
    if not config and args.resume and args.out and (Path(args.out) / CONFIG_FILE).exists():
        config = str(Path(args.out) / CONFIG_FILE)
    return validate(SCHEMA.build(TrainConfig, SCHEMA.values(args, config)))


def _handler(args: argparse.Namespace) -> int:
    from scalinglab.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    cfg = config_from_args(args)
    from scalinglab.train.loop import train

    progress = False if args.no_progress else None
    summary = train(cfg, progress=progress)
    from scalinglab.errors import stop_if_signalled

    stop_if_signalled(summary, f"run {cfg.out}")
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
    SCHEMA.add_flags(p)
    a = p.add_argument
    a("--no-progress", action="store_true", help="no progress bar")
    a("--coordinator", help="multi-process: coordinator HOST:PORT ('auto' on Cloud TPU); env SCALINGLAB_COORDINATOR")
    a("--num-processes", type=int, help="multi-process: number of processes; env SCALINGLAB_NUM_PROCESSES")
    a("--process-id", type=int, help="multi-process: this process's id; env SCALINGLAB_PROCESS_ID")
    a("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_handler)
