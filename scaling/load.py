"""Runs and tables → one :class:`RunTable` (one row per run / CSV line).

Sources (``load_source`` picks by what the path is):

- a CSV file with header columns ``params,tokens,loss`` and optional ``flops`` (other columns,
  e.g. ``name``, are kept as names or ignored); ``flops`` defaults to ``6·params·tokens``;
- a run directory (``config.json`` + ``metrics.jsonl``, plus ``summary.json`` once complete;
  see docs/interfaces.md);
- a directory searched recursively for run directories (ladders, sweeps, anything).

Units: ``params`` = non-embedding parameters N (Kaplan's N; ``params_total`` keeps N_total),
``tokens`` = training tokens D, ``flops`` = training FLOPs C, ``loss`` = final loss in nats/token
(final eval loss when the run logged one, else the final training loss).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scalinglab.errors import UserError

REQUIRED_COLUMNS = ("params", "tokens", "loss")


@dataclass
class Curve:
    """One run's loss curve: arrays ``float[T]`` of step, tokens, FLOPs and loss (eval loss where
    the run logged evals, else training loss), plus the training-loss curve itself."""

    step: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    train_loss: np.ndarray
    loss_kind: str  # "eval" or "train"


@dataclass
class RunTable:
    """Columns ``float[R]``: params (N, non-embedding), tokens (D), flops (C), loss (nats/token)."""

    params: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    loss: np.ndarray
    names: list[str]
    source: str
    params_total: np.ndarray | None = None
    best_loss: np.ndarray | None = None
    complete: np.ndarray | None = None
    steps: np.ndarray | None = None
    batch_size: np.ndarray | None = None  # sequences per step
    seq_len: np.ndarray | None = None
    curves: list[Curve] | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.params.size)

    def subset(self, mask_or_index) -> "RunTable":
        """Rows selected by a boolean mask or an index array."""
        idx = np.arange(len(self))[np.asarray(mask_or_index)]

        def pick(a):
            return None if a is None else np.asarray(a)[idx]

        return RunTable(
            params=self.params[idx], tokens=self.tokens[idx], flops=self.flops[idx], loss=self.loss[idx],
            names=[self.names[i] for i in idx], source=self.source, params_total=pick(self.params_total),
            best_loss=pick(self.best_loss), complete=pick(self.complete), steps=pick(self.steps),
            batch_size=pick(self.batch_size), seq_len=pick(self.seq_len),
            curves=None if self.curves is None else [self.curves[i] for i in idx], warnings=list(self.warnings),
        )

    def to_records(self) -> list[dict]:
        """One JSON-able dict per row (name, params, tokens, flops, loss, and what else is known)."""
        out = []
        for i in range(len(self)):
            rec = {"name": self.names[i], "params": float(self.params[i]), "tokens": float(self.tokens[i]),
                   "flops": float(self.flops[i]), "loss": float(self.loss[i])}
            for key in ("params_total", "best_loss", "steps", "batch_size", "seq_len"):
                col = getattr(self, key)
                if col is not None and np.isfinite(col[i]):
                    rec[key] = float(col[i])
            if self.complete is not None:
                rec["complete"] = bool(self.complete[i])
            out.append(rec)
        return out


def load_source(path: str | os.PathLike, *, include_incomplete: bool = False,
                exclude_sweeps: bool = False) -> RunTable:
    """Load a CSV file, a run directory, or a directory of run directories (recursive).

    ``exclude_sweeps``: skip run directories inside a batch sweep (a folder with ``sweep.json``):
    a ladder's report fits its size ladder, and analyses the sweep separately.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file or directory")
    if p.is_file():
        return load_csv(p)
    if _is_run_dir(p):
        return _table_from_runs([p], str(p), include_incomplete)
    run_dirs = []
    for d, subdirs, files in os.walk(p):
        if exclude_sweeps and "sweep.json" in files:
            subdirs[:] = []  # do not descend into the sweep's runs
            continue
        if "config.json" in files and "metrics.jsonl" in files:
            run_dirs.append(d)
    run_dirs.sort()
    if not run_dirs:
        raise UserError(f"{path}: no run directories (config.json + metrics.jsonl) found")
    return _table_from_runs([Path(d) for d in run_dirs], str(p), include_incomplete)


def load_csv(path: str | os.PathLike) -> RunTable:
    """Parse a ``params,tokens,loss[,flops]`` CSV; every value must be a finite positive number."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read CSV ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{path}: empty CSV (expected header params,tokens,loss[,flops])")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (header must contain params,tokens,loss)")
    numeric = list(REQUIRED_COLUMNS) + (["flops"] if "flops" in header else [])
    cols: dict[str, list[float]] = {c: [] for c in numeric}
    names: list[str] = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise UserError(f"{path}:{line_no}: expected {len(header)} values, got {len(row)}")
        for c in numeric:
            raw = row[header.index(c)].strip()
            try:
                value = float(raw)
            except ValueError:
                raise UserError(f"{path}:{line_no}: column {c} is not a number: {raw!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise UserError(f"{path}:{line_no}: column {c} must be finite and positive, got {raw}")
            cols[c].append(value)
        names.append(row[header.index("name")].strip() if "name" in header else f"row{line_no - 1}")
    if not names:
        raise UserError(f"{path}: no data rows")
    params, tokens, loss = (np.array(cols[c]) for c in REQUIRED_COLUMNS)
    flops = np.array(cols["flops"]) if "flops" in cols else 6.0 * params * tokens
    return RunTable(params=params, tokens=tokens, flops=flops, loss=loss, names=names, source=str(p))


def require_points(table: RunTable, n_params: int, law: str) -> None:
    """UserError unless the table has at least as many points as the law has parameters."""
    if len(table) < n_params:
        raise UserError(f"law {law} has {n_params} parameters but {table.source} has only {len(table)} point(s)")


def _is_run_dir(p: Path) -> bool:
    return (p / "config.json").is_file() and (p / "metrics.jsonl").is_file()


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def read_metrics(path: Path) -> list[dict]:
    """Lines of ``metrics.jsonl`` as dicts; a truncated last line (killed run) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise UserError(f"{path}:{i + 1}: malformed JSON line") from None
    return records


def _curve(records: list[dict]) -> Curve | None:
    pts = [r for r in records if _num(r.get("tokens")) and _num(r.get("flops")) and _num(r.get("loss"))]
    if not pts:
        return None
    evals = [r for r in pts if _num(r.get("eval_loss"))]
    src, kind = (evals, "eval") if evals else (pts, "train")
    return Curve(
        step=np.array([float(r.get("step", np.nan)) for r in src]),
        tokens=np.array([float(r["tokens"]) for r in src]),
        flops=np.array([float(r["flops"]) for r in src]),
        loss=np.array([float(r["eval_loss"] if kind == "eval" else r["loss"]) for r in src]),
        train_loss=np.array([float(r["loss"]) for r in pts]),
        loss_kind=kind,
    )


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_run(run_dir: str | os.PathLike) -> dict:
    """One run directory → dict (name, params, params_total, tokens, flops, loss, best_loss,
    complete, steps, batch_size, seq_len, curve). Raises UserError if it has no usable point."""
    d = Path(run_dir)
    config = _read_json(d / "config.json")
    summary = _read_json(d / "summary.json") if (d / "summary.json").is_file() else {}
    complete = summary.get("status") == "complete"
    records = read_metrics(d / "metrics.jsonl")
    curve = _curve(records)
    acct = config.get("accounting", {}) or {}
    train = config.get("train", {}) or {}
    n = acct.get("non_embedding", summary.get("non_embedding"))
    if not _num(n) or n <= 0:
        raise UserError(f"{d}: config.json has no accounting.non_embedding parameter count")
    last = records[-1] if records else {}
    tokens = summary.get("tokens", last.get("tokens"))
    flops = summary.get("flops", last.get("flops"))
    evals = [r["eval_loss"] for r in records if _num(r.get("eval_loss"))]
    loss = summary.get("final_eval_loss")
    if not _num(loss):
        loss = evals[-1] if evals else summary.get("final_loss", last.get("loss"))
    best = summary.get("best_eval_loss")
    if not _num(best):
        best = min(evals) if evals else loss
    for key, value in (("tokens", tokens), ("flops", flops), ("loss", loss)):
        if not _num(value) or value <= 0:
            raise UserError(f"{d}: no positive {key} in summary.json or metrics.jsonl")
    return {
        "name": config.get("name") or d.name, "dir": str(d), "params": float(n),
        "params_total": float(acct.get("total", summary.get("total", np.nan)) or np.nan),
        "tokens": float(tokens), "flops": float(flops), "loss": float(loss), "best_loss": float(best),
        "complete": complete, "steps": float(summary.get("steps", last.get("step", np.nan))),
        "batch_size": float(summary.get("batch_size", train.get("batch_size", np.nan))),
        "seq_len": float(summary.get("seq_len", train.get("seq_len", np.nan))), "curve": curve,
    }


def _table_from_runs(dirs: list[Path], source: str, include_incomplete: bool) -> RunTable:
    runs, warnings = [], []
    for d in dirs:
        if not (d / "summary.json").is_file() and not include_incomplete:
            warnings.append(f"skipping incomplete run {d} (no summary.json)")
            continue
        try:
            runs.append(load_run(d))
        except UserError as e:
            if len(dirs) == 1:
                raise
            warnings.append(f"skipping run: {e}")
    for w in warnings:
        sys.stderr.write(f"warning: {w}\n")
    if not runs:
        raise UserError(f"{source}: no usable runs" + (" (all incomplete; see warnings)" if warnings else ""))

    def col(key):
        return np.array([r[key] for r in runs], dtype=np.float64)

    return RunTable(
        params=col("params"), tokens=col("tokens"), flops=col("flops"), loss=col("loss"),
        names=[r["name"] for r in runs], source=source, params_total=col("params_total"),
        best_loss=col("best_loss"), complete=np.array([r["complete"] for r in runs]), steps=col("steps"),
        batch_size=col("batch_size"), seq_len=col("seq_len"), curves=[r["curve"] for r in runs], warnings=warnings,
    )
