"""The run directory: its file names, and the one reader of its metrics log (see docs/interfaces.md).

A run directory holds ``config.json`` (written first) and ``config.yaml`` (its settings as a ``--config``
file), ``metrics.jsonl`` (one JSON object per logged
step, appended and flushed line by line), ``checkpoints/``, ``tb/``, ``lock.json`` while it is trained,
``train.log`` when an executor trains it in a process of its own and, only once the run completed,
``summary.json``. A batch-sweep directory holds ``sweep.json`` and one run directory per run; a
ladder directory ``plan.json``, one run directory per planned run and, when its learning rates are
searched, ``lr_search/lr_search.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError

CONFIG_FILE = "config.json"
RESOLVED_CONFIG = "config.yaml"  # a command's resolved settings (run, ladder, sweep or demo dir), usable as --config
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
PLAN_FILE = "plan.json"
SWEEP_FILE = "sweep.json"
LR_SEARCH_DIR = "lr_search"  # a ladder's learning-rate search runs ...
LR_SEARCH_FILE = "lr_search.json"  # ... and their record, LR_SEARCH_DIR/LR_SEARCH_FILE
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
LOG_FILE = "train.log"  # the run's output when an executor trains it in a process of its own


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run directory (it has ``config.json`` and ``metrics.jsonl``)."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / METRICS_FILE).is_file()


def is_complete(run_dir: str | os.PathLike) -> bool:
    """Whether the run in ``run_dir`` completed (``summary.json`` is written last, only then)."""
    return (Path(run_dir) / SUMMARY_FILE).is_file()


def finite_or(value: Any, default: float = math.nan) -> float:
    """A logged value as a finite float, else ``default`` (values may be missing, null, NaN, ±inf or text)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (``path`` is the file or its run directory; none if absent).

    Blank lines are skipped. A last line that is not valid JSON was torn by a kill mid-write and
    is dropped; an invalid line anywhere else is corruption: UserError naming the file and line.
    """
    p = Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    numbered = [(i, line) for i, line in enumerate(lines, start=1) if line.strip()]
    records = []
    for k, (line_no, line) in enumerate(numbered):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if k == len(numbered) - 1:
                break
            raise UserError(f"{p}:{line_no}: malformed JSON line") from None
    return records
