"""Loading a batch-size sweep: its runs as smoothed, monotone loss curves (pure reading of run logs).

Inputs are the run directories of a ``scalinglab batch-sweep`` (``sweep.json`` + one run dir per
batch size and learning rate with ``config.json`` and ``metrics.jsonl``); nothing here imports
models or training. :mod:`scalinglab.scaling.critical_batch` fits the critical batch size to the
curves (its module docstring describes the whole pipeline; this is step 1).

Units: steps = optimizer updates, batch sizes in sequences, losses in nats/token.

**Smoothed, monotone loss curve per run.** The training loss logged at each step is noisy (its
variance grows as the batch shrinks), so it is averaged over a window centred on each logged step
whose half-width is ``rel_width × step`` (default 0.2, i.e. ±20 % of the step), shrunk where needed
so that it stays symmetric inside the logged range. A symmetric window leaves a curve that is
linear in step unchanged, so the smoothing adds no lag (an EMA would shift every crossing later by
~1/(1−β) steps and bias S_min upward). The smoothed curve is then replaced by its least-squares
non-increasing fit (:func:`scalinglab.scaling.crossing.isotonic_decreasing`), so each target is
crossed once. ``source="eval"`` uses the logged ``eval_loss`` instead (fixed eval batches, so no
sampling noise, but logged less often; made monotone the same way, not smoothed); ``"auto"``
(the CLI default) takes eval when every run logged at least ``MIN_EVAL_POINTS`` of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.errors import UserError
from scalinglab.fileio import read_json
from scalinglab.rundir import CONFIG_FILE, METRICS_FILE, SWEEP_FILE, finite_or, is_complete, is_run_dir, read_metrics
from scalinglab.scaling.crossing import isotonic_decreasing

MIN_BATCH_SIZES = 3  # two parameters per hyperbola need at least three distinct batch sizes
DEFAULT_REL_WIDTH = 0.2
MIN_EVAL_POINTS = 50  # source "auto" uses eval_loss when every run logged at least this many
SOURCES = ("auto", "train", "eval")


@dataclasses.dataclass
class RunCurve:
    """One run of a sweep: its batch size and loss trajectory.

    ``steps`` (updates, shape [T]) increasing and positive; ``loss`` the smoothed loss (nats/token,
    [T]) used for crossings; ``raw_loss`` the logged values; ``b_simple`` the in-loop simple noise
    scale in sequences ([T], NaN where not logged).
    """

    name: str
    batch_size: int
    seq_len: int
    steps: np.ndarray
    loss: np.ndarray
    raw_loss: np.ndarray
    b_simple: np.ndarray
    lr: float | None = None
    complete: bool = False
    rel_width: float = 0.0  # smoothing half-width used for ``loss`` (fraction of the step)
    warmup: int = 0  # learning-rate warmup of the run, steps (from config.json; 0 if unknown)
    b_simple_step: np.ndarray | None = None  # [T] step each b_simple value describes (window centre)
    source: str = "train"  # which logged loss ``loss`` comes from

    def reliable_min(self) -> float:
        """Lowest smoothed loss where the window is at least half its nominal width (the last
        ~10 % of a run is averaged over ever fewer points, so a noisy dip there does not count)."""
        keep = self.steps <= self.steps[-1] / (1.0 + 0.5 * self.rel_width)
        return float(np.min(self.loss[keep] if keep.any() else self.loss))


def curve_from_rows(
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    seq_len: int,
    name: str = "",
    source: str = "train",
    rel_width: float = DEFAULT_REL_WIDTH,
    lr: float | None = None,
    complete: bool = False,
    warmup: int = 0,
    monotone: bool = True,
) -> RunCurve:
    """Build a smoothed, monotone :class:`RunCurve` from metrics rows (module docstring, step 1).

    ``source`` "train" or "eval" ("auto" is decided per sweep by :func:`load_sweep`); ``monotone``
    False skips the isotonic step (only for measuring what it does).
    """
    if source not in ("train", "eval"):
        raise UserError(f"loss source must be 'train' or 'eval', got {source!r}")
    key = "loss" if source == "train" else "eval_loss"
    by_step: dict[int, tuple[float, float, float]] = {}
    for r in rows:
        step = r.get("step")
        if step is None or step <= 0:
            continue
        value = finite_or(r.get(key))
        if math.isnan(value):
            continue
        bs_step = finite_or(r.get("gns_step"))
        # a resumed run may repeat steps: the last row wins
        by_step[int(step)] = (value, finite_or(r.get("gns_b_simple")), float(step) if math.isnan(bs_step) else bs_step)
    if len(by_step) < 2:
        raise UserError(f"run {name or '?'} has fewer than two logged {key!r} values")
    steps = np.array(sorted(by_step), dtype=np.float64)
    raw = np.array([by_step[int(s)][0] for s in steps])
    bs = np.array([by_step[int(s)][1] for s in steps])
    bs_step = np.array([by_step[int(s)][2] for s in steps])
    width = rel_width if source == "train" else 0.0
    curve = smooth_loss(steps, raw, width)
    if monotone:
        curve = isotonic_decreasing(curve)
    return RunCurve(
        name, int(batch_size), int(seq_len), steps, curve, raw, bs, lr, complete, width, int(warmup), bs_step, source
    )


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(``config.json["train"]``, metrics rows) of one run directory; UserError if it is not one."""
    cfg_path, metrics_path = run_dir / CONFIG_FILE, run_dir / METRICS_FILE
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir} is not a run directory (config.json and metrics.jsonl needed)")
    try:
        train = read_json(cfg_path)["train"]
        int(train["batch_size"]), int(train["seq_len"])
    except (KeyError, TypeError, ValueError, json.JSONDecodeError):
        raise UserError(f"{cfg_path}: missing train.batch_size / train.seq_len") from None
    return train, read_metrics(metrics_path)


def _curve(run_dir: Path, train: dict[str, Any], rows: list[dict[str, Any]], source: str, rel_width: float) -> RunCurve:
    lr = finite_or(train.get("lr"))
    warmup = finite_or(train.get("warmup"))
    return curve_from_rows(
        rows,
        batch_size=int(train["batch_size"]),
        seq_len=int(train["seq_len"]),
        name=run_dir.name,
        source=source,
        rel_width=rel_width,
        lr=None if math.isnan(lr) else lr,
        complete=is_complete(run_dir),
        warmup=0 if math.isnan(warmup) else int(warmup),
    )


def _n_eval(rows: Sequence[dict[str, Any]]) -> int:
    steps = {int(r["step"]) for r in rows if (r.get("step") or 0) > 0 and not math.isnan(finite_or(r.get("eval_loss")))}
    return len(steps)


def load_run_curve(run_dir: str | Path, *, source: str = "train", rel_width: float = DEFAULT_REL_WIDTH) -> RunCurve:
    """Read one run directory (``config.json`` + ``metrics.jsonl``) into a :class:`RunCurve`."""
    run_dir = Path(run_dir)
    train, rows = _read_run(run_dir)
    if source == "auto":
        source = "eval" if _n_eval(rows) >= MIN_EVAL_POINTS else "train"
    return _curve(run_dir, train, rows, source, rel_width)


def sweep_run_dirs(meta: dict[str, Any], meta_path: Path) -> list[str]:
    """Sub-directories of every run of a sweep: all learning rates of each batch size where the sweep
    lists them (``"grid"``: {B: {subdir: lr}}, or an older grid sweep's ``"candidates"``), else the
    one run per batch size of ``"runs"``."""
    subs: list[str] = []
    for key in ("grid", "candidates"):
        table = meta.get(key)
        if isinstance(table, dict) and table:
            for per_b in table.values():
                if not isinstance(per_b, dict):
                    raise UserError(f"{meta_path}: {key} must map batch sizes to {{subdir: value}}")
                subs.extend(str(s) for s in per_b)
            break
    for sub in meta["runs"].values():
        if not isinstance(sub, str):
            raise UserError(f"{meta_path}: runs must map batch sizes to run sub-directories")
        subs.append(sub)
    return sorted(set(subs))


def load_sweep(sweep_dir: str | Path, *, source: str = "train", rel_width: float = DEFAULT_REL_WIDTH) -> list[RunCurve]:
    """Load every run of ``SWEEP_DIR/sweep.json`` (every learning rate of a grid; sorted by batch size,
    then learning rate).

    Runs not started yet (no metrics) are skipped; runs still in progress are used as far as they got.
    ``source`` "auto": eval loss if every run logged ≥ ``MIN_EVAL_POINTS`` of them, else train loss.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"sweep directory {sweep_dir} does not exist")
    meta_path = sweep_dir / SWEEP_FILE
    if not meta_path.is_file():
        raise UserError(f"{sweep_dir} has no sweep.json (not a batch-sweep directory)")
    try:
        meta = read_json(meta_path)
    except json.JSONDecodeError as e:
        raise UserError(f"{meta_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("kind") != "batch-sweep" or not isinstance(meta.get("runs"), dict):
        raise UserError(f"{meta_path} is not a batch-sweep description (kind/runs missing)")
    if source not in SOURCES:
        raise UserError(f"loss source must be one of {', '.join(SOURCES)}, got {source!r}")
    loaded = []
    for sub in sweep_run_dirs(meta, meta_path):
        run_dir = sweep_dir / sub
        if (run_dir / METRICS_FILE).is_file():
            loaded.append((run_dir, *_read_run(run_dir)))
    if source == "auto":
        enough = loaded and all(_n_eval(rows) >= MIN_EVAL_POINTS for _, _, rows in loaded)
        source = "eval" if enough else "train"
    curves = [_curve(d, train, rows, source, rel_width) for d, train, rows in loaded]
    curves.sort(key=lambda c: (c.batch_size, c.lr if c.lr is not None else 0.0, c.name))
    check_sweep(curves)
    return curves


def check_sweep(curves: Sequence[RunCurve]) -> None:
    """Raise UserError unless the runs form a usable sweep (≥ 3 distinct batch sizes, one seq_len)."""
    n_b = len({c.batch_size for c in curves})
    if n_b < MIN_BATCH_SIZES:
        raise UserError(
            f"a batch-size sweep needs runs at >= {MIN_BATCH_SIZES} distinct batch sizes to fit "
            f"S_min and E_min; found {n_b}"
        )
    seq_lens = {c.seq_len for c in curves}
    if len(seq_lens) != 1:
        raise UserError(f"runs of one sweep must share seq_len (examples are sequences); found {sorted(seq_lens)}")


def smooth_loss(steps_T: np.ndarray, loss_T: np.ndarray, rel_width: float = DEFAULT_REL_WIDTH) -> np.ndarray:
    """Centred running mean with half-width ``rel_width·step`` (clipped to stay symmetric in the data).

    The window around step s holds the logged points with |s_j − s| ≤ w, w = min(rel_width·s,
    s − s_first, s_last − s); symmetric, so a loss linear in step is returned unchanged (when logged on
    an even grid). Shapes: [T] → [T].
    """
    steps_T = np.asarray(steps_T, dtype=np.float64)
    loss_T = np.asarray(loss_T, dtype=np.float64)
    if rel_width <= 0 or len(steps_T) < 3:
        return loss_T.copy()
    w_T = np.minimum(rel_width * steps_T, np.minimum(steps_T - steps_T[0], steps_T[-1] - steps_T))
    csum = np.concatenate([[0.0], np.cumsum(loss_T)])
    eps = 1e-9 * np.maximum(steps_T, 1.0)
    lo = np.searchsorted(steps_T, steps_T - w_T - eps, side="left")
    hi = np.searchsorted(steps_T, steps_T + w_T + eps, side="right")
    return (csum[hi] - csum[lo]) / (hi - lo)
