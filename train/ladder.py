"""Running a planned ladder: train what is missing, resume what is partial, skip what is finished.

A ladder directory holds ``plan.json`` (the planned runs) and one run directory per run,
named by :attr:`PlannedRun.name`. A run directory with ``summary.json`` is finished and is
never trained again; one with checkpoints but no summary resumes from its newest checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, read_json
from scalinglab.train.config import TrainConfig
from scalinglab.train.config_file import RESOLVED_CONFIG, write_config_file
from scalinglab.train.plan import PlannedRun, format_seconds

# The model fields a planned config pins (every architecture size; the family comes from the preset).
_MODEL_FIELDS = ("n_layer", "d_model", "n_head", "n_kv_head", "d_ff", "n_ctx", "vocab_size", "tie_embeddings")


def train_config_for(run: PlannedRun, out_dir: Path, **train_kwargs: Any) -> TrainConfig:
    """The TrainConfig that trains ``run`` (cosine to its own length) into ``out_dir/run.name``."""
    cfg = run.config.to_dict()
    run_dir = out_dir / run.name
    return TrainConfig(
        name=run.name,
        preset=f"{cfg['family']}-tiny",
        overrides={k: cfg[k] for k in _MODEL_FIELDS},
        seq_len=run.seq_len,
        batch_size=run.batch_size,
        steps=run.steps,
        lr=run.lr,
        schedule="cosine",
        warmup=run.warmup,
        out=str(run_dir),
        resume=True,  # continues from the newest checkpoint if any, else starts fresh
        **train_kwargs,
    )


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "summary.json").exists()


class OverallProgress:
    """Time left for the whole ladder, from the runs finished so far in this invocation.

    Small models on CPU are dominated by per-step overhead and large ones by FLOPs, so the
    wall time of a run is modelled as ``a·steps + b·flops`` (least squares over finished runs).
    """

    def __init__(self, runs: Sequence[PlannedRun]):
        self.runs = list(runs)
        self.samples: list[tuple[int, int, float]] = []  # (steps, flops, seconds)

    def record(self, run: PlannedRun, seconds: float) -> None:
        self.samples.append((run.steps, run.flops, seconds))

    def estimate(self, run: PlannedRun) -> float | None:
        if not self.samples:
            return None
        x = np.array([[s, f] for s, f, _ in self.samples], dtype=float)
        y = np.array([t for _, _, t in self.samples])
        if len(self.samples) >= 2:
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            coef = np.maximum(coef, 0.0)
            if coef.sum() > 0:
                return float(coef @ [run.steps, run.flops])
        return float(y.sum() / x[:, 1].sum() * run.flops)

    def remaining(self, pending: Sequence[PlannedRun]) -> float | None:
        ests = [self.estimate(r) for r in pending]
        return None if any(e is None for e in ests) else float(sum(ests))  # type: ignore[arg-type]


def check_plan_compatible(out_dir: Path, runs: Sequence[PlannedRun]) -> None:
    """Refuse to mix a new plan into a ladder dir whose same-named runs have other configs."""
    for run in runs:
        cfg_path = out_dir / run.name / "config.json"
        if not cfg_path.exists():
            continue
        try:
            saved = read_json(cfg_path)
        except (OSError, ValueError):
            continue  # a run that died before writing its config: it will be rewritten
        saved_model = saved.get("model", {})
        planned = run.config.to_dict()
        diff = [k for k in _MODEL_FIELDS if k in saved_model and saved_model[k] != planned[k]]
        saved_steps = saved.get("train", {}).get("steps")
        if diff or (saved_steps is not None and saved_steps != run.steps):
            what = ", ".join(diff) if diff else "steps"
            raise UserError(f"{out_dir / run.name} exists with a different {what}; use another --out")


def run_ladder(
    runs: Sequence[PlannedRun],
    out_dir: str | Path,
    *,
    train_fn: Callable[[TrainConfig], dict] | None = None,
    log: Callable[[str], None] = lambda s: sys.stderr.write(s + "\n"),
    resolved_config: Mapping[str, Any] | None = None,
    **train_kwargs: Any,
) -> list[dict]:
    """Train every planned run that is not finished; returns the summaries of all runs.

    ``train_kwargs`` go to :class:`TrainConfig` (dataset, data_dir, seed, dtype, eval_every...).
    ``resolved_config``: the command's settings, written as ``config.yaml`` beside ``plan.json``.
    """
    if train_fn is None:
        from scalinglab.train.loop import train as train_fn
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_plan_compatible(out_dir, runs)
    atomic_write_json(out_dir / "plan.json", {"runs": [r.to_dict() for r in runs], "train": train_kwargs})
    if resolved_config is not None:
        write_config_file(out_dir / RESOLVED_CONFIG, resolved_config)

    progress = OverallProgress(runs)
    summaries: list[dict] = []
    n = len(runs)
    for i, run in enumerate(runs):
        run_dir = out_dir / run.name
        if is_finished(run_dir):
            log(f"[ladder {i + 1}/{n}] {run.name}: finished, skipped")
            summaries.append(read_json(run_dir / "summary.json"))
            continue
        left = progress.remaining(runs[i:])
        eta = f", ~{format_seconds(left)} left overall" if left is not None else ""
        state = "resuming" if (run_dir / "checkpoints").exists() else "training"
        log(
            f"[ladder {i + 1}/{n}] {state} {run.name}: N={run.non_embedding:,} D={run.tokens:.3g} tokens "
            f"({run.steps} steps) C={run.flops:.3g} FLOPs{eta}"
        )
        t0 = time.perf_counter()
        summaries.append(train_fn(train_config_for(run, out_dir, **train_kwargs)))
        progress.record(run, time.perf_counter() - t0)
    return summaries


def plan_from_dir(out_dir: str | Path) -> list[dict]:
    """The planned runs recorded in ``out_dir/plan.json`` (as dicts)."""
    path = Path(out_dir) / "plan.json"
    if not path.exists():
        raise UserError(f"no ladder plan at {path}")
    return read_json(path)["runs"]


def replace_steps(run: PlannedRun, steps: int) -> PlannedRun:
    """A copy of ``run`` trained for ``steps`` steps (tests and smoke runs)."""
    return dataclasses.replace(run, steps=steps, warmup=min(run.warmup, max(1, steps // 10)))
