"""Runs and tables → one :class:`RunTable` (one row per run / CSV line).

Sources (``load_source`` picks by what the path is):

- a CSV file with header columns ``params,tokens,loss`` and optional ``flops`` (default
  ``6·params·tokens``), ``name``, ``params_total``, ``params_with_head``, ``step``,
  ``batch_size``, ``seq_len`` and ``run`` (other columns are ignored). ``columns`` maps these
  names onto a table's own headers (``{"params": "N", "tokens": "D"}``). With a ``run`` column,
  rows sharing a run are points along one training curve: the run's last point (most tokens) is
  its row of the table and all its points form its :class:`Curve`;
- a run directory (``config.json`` + ``metrics.jsonl``, plus ``summary.json`` once complete;
  see docs/interfaces.md);
- a directory searched recursively for run directories (ladders, sweeps, anything).

Units: ``params`` = non-embedding parameters N (Kaplan's N; ``params_total`` keeps N_total and
``params_with_head`` N plus the output head's V·d_model; :meth:`RunTable.with_params` switches
``params`` to another convention, see ``PARAMS_CONVENTIONS``),
``tokens`` = training tokens D, ``flops`` = training FLOPs C, ``loss`` = final loss in nats/token
(final eval loss when the run logged one, else the final training loss).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from scalinglab.errors import UserError
from scalinglab.rundir import (
    CONFIG_FILE,
    LR_SEARCH_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    is_complete,
    is_run_dir,
    read_metrics,
)

REQUIRED_COLUMNS = ("params", "tokens", "loss")
OPTIONAL_NUMERIC = ("flops", "params_total", "params_with_head", "step", "batch_size", "seq_len")
OPTIONAL_TEXT = ("name", "run")
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_NUMERIC + OPTIONAL_TEXT
# which parameter count a fit calls N (see docs/readme/scaling.md):
#   non_embedding: Kaplan et al. 2020 (no token/position tables, no output head)
#   total:         Hoffmann et al. 2022 (every parameter)
#   with_head:     non-embedding + the output head V·d_model (tied or not), as in Porian et al. 2024
PARAMS_CONVENTIONS = ("non_embedding", "total", "with_head")
PARAMS_COLUMN = {"non_embedding": "params_non_embedding", "total": "params_total", "with_head": "params_with_head"}


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
    # in-loop gradient-noise statistics where logged (float[G]): step, training loss, tr(Σ), |G|²
    gns_step: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gns_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gns_trace: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gns_g2: np.ndarray = field(default_factory=lambda: np.zeros(0))


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
    params_with_head: np.ndarray | None = None
    params_non_embedding: np.ndarray | None = None  # set by with_params (params then holds another count)
    params_convention: str = "non_embedding"
    flops_given: bool = True  # False when a CSV had no flops column (flops = 6·params·tokens)
    params_assumed: bool = False  # a CSV's params column: in whatever convention the user names

    def __len__(self) -> int:
        return int(self.params.size)

    def subset(self, mask_or_index) -> RunTable:
        """Rows selected by a boolean mask or an index array."""
        idx = np.arange(len(self))[np.asarray(mask_or_index)]
        changes = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                changes[f.name] = v[idx]
            elif f.name in ("names", "curves") and v is not None:
                changes[f.name] = [v[i] for i in idx]
        changes["warnings"] = list(self.warnings)
        return replace(self, **changes)

    def with_params(self, convention: str) -> RunTable:
        """A copy whose ``params`` column is the parameter count of ``convention`` (one of
        ``PARAMS_CONVENTIONS``). Run directories record every count; a CSV's ``params`` column
        is taken to be in ``convention`` unless the CSV has that convention's own column
        (``params_total``, ``params_with_head``). UserError when a run directory lacks it."""
        if convention not in PARAMS_CONVENTIONS:
            raise UserError(f"unknown parameter convention {convention!r}; choose from {', '.join(PARAMS_CONVENTIONS)}")
        base = self.params if self.params_non_embedding is None else self.params_non_embedding
        col = base if convention == "non_embedding" else getattr(self, PARAMS_COLUMN[convention])
        if col is None and self.params_assumed:
            col = base
        if col is None or not np.all(np.isfinite(col)) or np.any(col <= 0):
            raise UserError(
                f"{self.source}: --params {convention} needs a positive {PARAMS_COLUMN[convention]} "
                "for every run (a CSV column, or config.json accounting for run directories)"
            )
        return replace(
            self,
            params=np.asarray(col, np.float64),
            params_non_embedding=base,
            params_convention=convention,
            warnings=list(self.warnings),
        )

    def params_source(self) -> str:
        """Where ``params`` came from, in words (for the JSON and the report)."""
        if self.params_assumed and (
            self.params_convention == "non_embedding" or getattr(self, PARAMS_COLUMN[self.params_convention]) is None
        ):
            return f"the CSV's params column, taken as {self.params_convention}"
        if self.params_assumed:
            return f"the CSV's {PARAMS_COLUMN[self.params_convention]} column"
        return f"config.json accounting ({self.params_convention})"

    def to_records(self) -> list[dict]:
        """One JSON-able dict per row (name, params, tokens, flops, loss, and what else is known)."""
        out = []
        for i in range(len(self)):
            rec = {
                "name": self.names[i],
                "params": float(self.params[i]),
                "tokens": float(self.tokens[i]),
                "flops": float(self.flops[i]),
                "loss": float(self.loss[i]),
            }
            for key in ("params_total", "params_with_head", "best_loss", "steps", "batch_size", "seq_len"):
                col = getattr(self, key)
                if col is not None and np.isfinite(col[i]):
                    rec[key] = float(col[i])
            if self.complete is not None:
                rec["complete"] = bool(self.complete[i])
            out.append(rec)
        return out


def load_source(
    path: str | os.PathLike,
    *,
    include_incomplete: bool = False,
    exclude_sweeps: bool = False,
    columns: dict[str, str] | None = None,
) -> RunTable:
    """Load a CSV file, a run directory, or a directory of run directories (recursive).

    ``exclude_sweeps``: skip run directories inside a batch sweep (a folder with ``sweep.json``) or a
    ladder's learning-rate search (``lr_search.json``): a ladder's report fits its size ladder, and
    analyses the sweep separately.
    ``columns``: for a CSV, ``{known name: header in the file}`` (see :func:`parse_columns`).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file or directory")
    if p.is_file():
        return load_csv(p, columns=columns)
    if columns:
        raise UserError(f"{path}: --columns applies to a CSV table, not to run directories")
    if is_run_dir(p):
        return _table_from_runs([p], str(p), include_incomplete)
    run_dirs = []
    for d, subdirs, files in os.walk(p):
        if exclude_sweeps and (SWEEP_FILE in files or LR_SEARCH_FILE in files):
            subdirs[:] = []  # do not descend into the sweep's runs
            continue
        if CONFIG_FILE in files and METRICS_FILE in files:
            run_dirs.append(d)
    run_dirs.sort()
    if not run_dirs:
        raise UserError(f"{path}: no run directories (config.json + metrics.jsonl) found")
    return _table_from_runs([Path(d) for d in run_dirs], str(p), include_incomplete)


def parse_columns(spec: str | None) -> dict[str, str]:
    """``"params=N,tokens=D"`` → ``{"params": "N", "tokens": "D"}`` (known names on the left)."""
    if not spec:
        return {}
    out: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        key, sep, header = (t.strip() for t in item.partition("="))
        if not sep or not key or not header:
            raise UserError(f"--columns: expected NAME=HEADER pairs separated by commas, got {item!r}")
        if key.lower() not in KNOWN_COLUMNS:
            raise UserError(f"--columns: unknown column name {key!r}; known: {', '.join(KNOWN_COLUMNS)}")
        out[key.lower()] = header
    return out


def load_csv(path: str | os.PathLike, *, columns: dict[str, str] | None = None) -> RunTable:
    """Parse a ``params,tokens,loss[,flops,...]`` CSV (see the module doc); every numeric value
    must be a finite positive number. ``columns`` renames: ``{known name: header in the file}``."""
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read CSV ({e})") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{path}: empty CSV (expected header params,tokens,loss[,flops])")
    header = [h.strip() for h in rows[0]]
    lower = [h.lower() for h in header]
    where: dict[str, int] = {}
    for key in KNOWN_COLUMNS:
        if columns and key in columns:
            name = columns[key]
            if name not in header and name.lower() not in lower:
                raise UserError(f"{path}: --columns {key}={name}: no column {name!r} in the header")
            where[key] = header.index(name) if name in header else lower.index(name.lower())
        elif key in lower:
            where[key] = lower.index(key)
    missing = [c for c in REQUIRED_COLUMNS if c not in where]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (header must contain params,tokens,loss"
            " or map them with --columns params=...,tokens=...,loss=...)"
        )
    numeric = [c for c in REQUIRED_COLUMNS + OPTIONAL_NUMERIC if c in where]
    cols: dict[str, list[float]] = {c: [] for c in numeric}
    text: dict[str, list[str]] = {c: [] for c in OPTIONAL_TEXT}
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise UserError(f"{path}:{line_no}: expected {len(header)} values, got {len(row)}")
        for c in numeric:
            raw = row[where[c]].strip()
            try:
                value = float(raw)
            except ValueError:
                raise UserError(f"{path}:{line_no}: column {header[where[c]]} is not a number: {raw!r}") from None
            if not math.isfinite(value) or value <= 0:
                raise UserError(f"{path}:{line_no}: column {header[where[c]]} must be finite and positive, got {raw}")
            cols[c].append(value)
        for c in OPTIONAL_TEXT:
            text[c].append(row[where[c]].strip() if c in where else f"row{line_no - 1}")
    if not text["name"]:
        raise UserError(f"{path}: no data rows")
    arr = {c: np.array(v) for c, v in cols.items()}
    flops_given = "flops" in arr
    if not flops_given:
        arr["flops"] = 6.0 * arr["params"] * arr["tokens"]
    opt = {c: arr.get(c) for c in ("params_total", "params_with_head", "batch_size", "seq_len")}
    if "run" not in where:
        return RunTable(
            params=arr["params"],
            tokens=arr["tokens"],
            flops=arr["flops"],
            loss=arr["loss"],
            names=text["name"],
            source=str(p),
            steps=arr.get("step"),
            flops_given=flops_given,
            params_assumed=True,
            **opt,
        )
    return _runs_from_rows(p, arr, text["run"], flops_given)


def _runs_from_rows(p: Path, arr: dict[str, np.ndarray], run_R: list[str], flops_given: bool) -> RunTable:
    """Rows grouped by their ``run`` label: one table row per run (its point with the most tokens)
    and one :class:`Curve` per run (its points sorted by tokens)."""
    labels = list(dict.fromkeys(run_R))
    run_R = np.array(run_R, dtype=object)
    last, curves = [], []
    for label in labels:
        idx = np.flatnonzero(run_R == label)
        for key in ("params", "params_total", "params_with_head", "batch_size", "seq_len"):
            if arr.get(key) is not None and np.unique(arr[key][idx]).size > 1:
                raise UserError(f"{p}: run {label!r} has more than one value of {key}")
        idx = idx[np.argsort(arr["tokens"][idx], kind="stable")]
        last.append(idx[-1])
        steps = arr["step"][idx] if "step" in arr else np.full(idx.size, np.nan)
        curves.append(
            Curve(
                step=steps,
                tokens=arr["tokens"][idx],
                flops=arr["flops"][idx],
                loss=arr["loss"][idx],
                train_loss=arr["loss"][idx],
                loss_kind="csv",
            )
        )
    last = np.array(last)

    def pick(key):
        return None if arr.get(key) is None else arr[key][last]

    return RunTable(
        params=arr["params"][last],
        tokens=arr["tokens"][last],
        flops=arr["flops"][last],
        loss=arr["loss"][last],
        names=labels,
        source=str(p),
        params_total=pick("params_total"),
        best_loss=np.array([cv.loss.min() for cv in curves]),
        steps=pick("step"),
        batch_size=pick("batch_size"),
        seq_len=pick("seq_len"),
        curves=curves,
        params_with_head=pick("params_with_head"),
        flops_given=flops_given,
        params_assumed=True,
    )


def require_points(table: RunTable, n_params: int, law: str) -> None:
    """UserError unless the table has at least as many points as the law has parameters."""
    if len(table) < n_params:
        raise UserError(f"law {law} has {n_params} parameters but {table.source} has only {len(table)} point(s)")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def _curve(records: list[dict]) -> Curve | None:
    pts = [r for r in records if _num(r.get("tokens")) and _num(r.get("flops")) and _num(r.get("loss"))]
    if not pts:
        return None
    evals = [r for r in pts if _num(r.get("eval_loss"))]
    src, kind = (evals, "eval") if evals else (pts, "train")
    gns = [r for r in pts if _num(r.get("gns_trace")) and _num(r.get("gns_g2"))]
    # a windowed estimate is attributed to its window's centre step (gns_step); its loss is the
    # training loss interpolated there
    gns_step = np.array(
        [float(r["gns_step"]) if _num(r.get("gns_step")) else float(r.get("step", np.nan)) for r in gns]
    )
    steps_all = np.array([float(r.get("step", np.nan)) for r in pts])
    loss_all = np.array([float(r["loss"]) for r in pts])
    finite = np.isfinite(steps_all)
    xs, first = np.unique(steps_all[finite], return_index=True)  # sorted; a resumed run may repeat steps
    gns_loss = (
        np.interp(gns_step, xs, loss_all[finite][first])
        if gns and xs.size
        else np.array([float(r["loss"]) for r in gns])
    )
    return Curve(
        gns_step=gns_step,
        gns_loss=np.asarray(gns_loss, np.float64).reshape(-1),
        gns_trace=np.array([float(r["gns_trace"]) for r in gns]),
        gns_g2=np.array([float(r["gns_g2"]) for r in gns]),
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
    """One run directory → dict (name, params, params_total, params_with_head (N + V·d_model), tokens, flops,
    loss, best_loss,
    complete, steps, batch_size, seq_len, curve). Raises UserError if it has no usable point."""
    d = Path(run_dir)
    config = _read_json(d / CONFIG_FILE)
    summary = _read_json(d / SUMMARY_FILE) if is_complete(d) else {}
    complete = summary.get("status") == "complete"
    records = read_metrics(d / METRICS_FILE)
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
    model = config.get("model", {}) or {}
    head = (model.get("vocab_size") or 0) * (model.get("d_model") or 0)
    return {
        "name": config.get("name") or d.name,
        "dir": str(d),
        "params": float(n),
        "params_with_head": float(n + head) if _num(head) and head > 0 else np.nan,
        "params_total": float(acct.get("total", summary.get("total", np.nan)) or np.nan),
        "tokens": float(tokens),
        "flops": float(flops),
        "loss": float(loss),
        "best_loss": float(best),
        "complete": complete,
        "steps": float(summary.get("steps", last.get("step", np.nan))),
        "batch_size": float(summary.get("batch_size", train.get("batch_size", np.nan))),
        "seq_len": float(summary.get("seq_len", train.get("seq_len", np.nan))),
        "curve": curve,
    }


def _table_from_runs(dirs: list[Path], source: str, include_incomplete: bool) -> RunTable:
    runs, warnings = [], []
    for d in dirs:
        if not is_complete(d) and not include_incomplete:
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
        params=col("params"),
        tokens=col("tokens"),
        flops=col("flops"),
        loss=col("loss"),
        names=[r["name"] for r in runs],
        source=source,
        params_total=col("params_total"),
        best_loss=col("best_loss"),
        complete=np.array([r["complete"] for r in runs]),
        steps=col("steps"),
        batch_size=col("batch_size"),
        seq_len=col("seq_len"),
        curves=[r["curve"] for r in runs],
        warnings=warnings,
        params_with_head=col("params_with_head"),
    )
