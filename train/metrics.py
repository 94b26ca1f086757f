"""Run metrics: ``metrics.jsonl`` (one JSON object per logged step, flushed per line),
TensorBoard scalars (tensorboardX, ``tb/``) and a tqdm progress bar (quiet when stderr
is not a TTY). Only the main process (process 0) writes files.

On resume, ``metrics.jsonl`` is first cut back (atomically) to the records with
``step ≤ resume_step`` so no step is ever logged twice.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalinglab.fileio import atomic_write_text, json_safe
from scalinglab.rundir import METRICS_FILE, TENSORBOARD_DIR, read_metrics  # noqa: F401 (re-exported)


def _records_and_bad_lines(path: str | Path, bad_lines: list[int]) -> list[dict[str, Any]]:
    """Like :func:`scalinglab.rundir.read_metrics`, but a corrupt line is listed in ``bad_lines``
    (1-based) and skipped instead of raised: resume reports it and keeps the original file."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
        elif i < len(lines) and line.strip():
            bad_lines.append(i)
    return records


def truncate_metrics(path: str | Path, max_step: int) -> None:
    """Keep only records with ``step ≤ max_step`` (atomic rewrite), in step order, one per step.

    Corrupt lines are reported (a warning naming them; the original file is kept beside as
    ``metrics.jsonl.corrupt-<time>``), never dropped silently."""
    import time
    import warnings

    bad: list[int] = []
    records = _records_and_bad_lines(path, bad)
    if bad:
        keep = Path(f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        keep.write_bytes(Path(path).read_bytes())
        warnings.warn(
            f"{path}: {len(bad)} corrupt line(s) ({', '.join(map(str, bad[:5]))}"
            f"{' ...' if len(bad) > 5 else ''}) dropped on resume; the original is kept as {keep}",
            stacklevel=2,
        )
    by_step: dict[int, dict[str, Any]] = {}
    for r in records:
        try:
            step = int(r.get("step", -1))
        except (TypeError, ValueError):
            continue
        if step <= max_step:
            by_step[step] = r  # a step logged twice (an old resume) keeps its latest record
    atomic_write_text(path, "".join(json.dumps(by_step[k]) + "\n" for k in sorted(by_step)))


class MetricsWriter:
    """Append-only metrics sink: JSONL + TensorBoard (+ optional progress bar)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        total_steps: int,
        start_step: int = 0,
        resume: bool = False,
        enabled: bool = True,
        progress: bool | None = None,
        tensorboard: bool = True,
        sinks: Sequence[Any] = (),
    ):
        """``sinks``: more loggers (e.g. :class:`~scalinglab.train.wandb_log.WandbLogger`) with
        ``log(record)`` and ``close()``, given each JSON-clean record."""
        self.enabled = enabled
        self._sinks = list(sinks)
        self.path = Path(run_dir) / METRICS_FILE
        self._file = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        if resume:
            truncate_metrics(self.path, start_step)
        else:
            atomic_write_text(self.path, "")
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(
                str(Path(run_dir) / TENSORBOARD_DIR), purge_step=start_step + 1 if resume else None
            )
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stderr, leave=True
            )

    def write(self, record: dict[str, Any]) -> None:
        """Log one step's record (must contain ``step``)."""
        if not self.enabled:
            return
        clean = json_safe(record)
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(clean["step"])
            for k, v in clean.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
        for sink in self._sinks:
            sink.log(clean)

    def progress(self, step: int, loss: float | None, tokens_per_s: float | None) -> None:
        """Move the progress bar to ``step`` and show loss and tokens/s (ETA comes from tqdm)."""
        if self._bar is None:
            return
        self._bar.update(step - self._bar.n)
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if tokens_per_s:
            post["tok/s"] = f"{tokens_per_s:,.0f}"
        self._bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for sink in self._sinks:
            sink.close()
        self._sinks = []
