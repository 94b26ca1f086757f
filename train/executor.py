"""Executors: how the independent runs of a ladder or a batch sweep get trained.

A ladder or sweep hands each batch of runs that do not depend on one another (a ladder's lr-search
grid, then its ladder runs; a sweep's LR × batch grid; each round of grid extensions) to
:meth:`Dispatcher.run`, the one place where runs are dispatched. The dispatcher

* skips a finished run (``summary.json`` present: read, never trained again);
* leaves alone a run not named by ``--only`` (its result is None unless it is finished);
* defers a run whose lock (:mod:`scalinglab.runlock`) is held by a live trainer, another driver or
  a retry racing a slow original: it trains the rest first, then waits for the holder to finish (a
  holder that dies leaves a stale lock, and the run is trained here, resumed from its checkpoint);
* hands the rest to an :class:`Executor`: :class:`LocalExecutor` (in this process, one run after
  another; the default) or :class:`scalinglab.train.ray_executor.RayExecutor` (one Ray task per run);
* with ``emit`` set, trains nothing and raises :class:`PendingRuns` with the runs still missing.

The ladder directory (or sweep directory) is the only state: a run is finished when its
``summary.json`` exists, and resumes from its newest checkpoint (``TrainConfig.resume``).

Units: FLOPs are training FLOPs of a whole run (``PlannedRun.flops``); times are seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalinglab.errors import UserError, stop_if_signalled
from scalinglab.fileio import read_json
from scalinglab.rundir import CHECKPOINT_DIR, SUMMARY_FILE, is_complete
from scalinglab.runlock import LockHeld, RunLock, describe, is_stale
from scalinglab.train.config import TrainConfig
from scalinglab.train.options import option
from scalinglab.train.plan import format_seconds

EXECUTORS = ("local", "ray")
POLL_S = 2.0  # how often a driver looks at runs held by another trainer


def _parse_resources(value: Any) -> dict[str, float] | None:
    """``--run-resources`` text (JSON object) or a config file's mapping → {resource: amount}."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise UserError(f"--run-resources expects a JSON object such as '{{\"GPU\": 1}}', got {value!r}") from None
    if not isinstance(value, dict) or not value:
        raise UserError(f"--run-resources expects a non-empty JSON object such as '{{\"GPU\": 1}}', got {value!r}")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise UserError(f"--run-resources: {k!r} must be a non-negative number, got {v!r}")
        out[str(k)] = float(v)
    return out


@dataclasses.dataclass(frozen=True)
class ExecutorOptions:
    """How the runs of a ladder or sweep are trained (flags of ``ladder``, ``batch-sweep``, ``demo``).

    These say how, not what: they are not written into the command's ``config.yaml``.
    """

    executor: str = option(
        "local",
        "local: train the runs one after another in this process; ray: one Ray task per run, retried "
        "when a worker dies, resuming from the run's newest checkpoint (needs the `ray` extra: make venv-ray)",
        choices=EXECUTORS,
    )
    max_concurrent: int | None = option(
        None, "at most N runs at once (--executor ray; default: as many as the runs' resources allow)", metavar="N"
    )
    ray_address: str | None = option(
        None, "Ray cluster to use (e.g. auto, ray://HEAD:10001; default: start a local Ray instance)", metavar="ADDR"
    )
    run_resources: dict | None = option(
        None,
        'Ray resources of one run as JSON, e.g. \'{"GPU": 1}\' or \'{"TPU": 4}\' (default {"CPU": 1}, '
        '{"CPU": 1, "GPU": 1} on a cluster with GPUs)',
        parse=_parse_resources,
        metavar="JSON",
    )
    only: tuple[str, ...] = option(
        (),
        "train only these runs (names as in plan.json / sweep.json), e.g. for one task of a SLURM array",
        metavar="NAME[,NAME...]",
    )


@dataclasses.dataclass(frozen=True)
class RunTask:
    """One run to train: its name in the study directory (what ``--only`` names), its TrainConfig
    (trains into ``config.out``, ``resume=True``), its planned training FLOPs, and what the log says."""

    name: str
    config: TrainConfig
    flops: float
    label: str = ""  # log prefix, e.g. "[ladder 3/21]"
    detail: str = ""  # the start line's description of the run

    @property
    def run_dir(self) -> Path:
        return Path(self.config.out)

    @property
    def steps(self) -> int:
        return self.config.total_steps()


@dataclasses.dataclass(frozen=True)
class Held:
    """An executor's result for a run whose lock another live trainer holds (it was not trained)."""

    message: str


class PendingRuns(Exception):
    """Raised in ``emit`` mode: the runs (RunTasks) that must be trained before anything else can."""

    def __init__(self, tasks: Sequence[RunTask]):
        super().__init__(f"{len(tasks)} runs to train")
        self.tasks = list(tasks)


class TimeModel:
    """Wall time of a run modelled as ``a·steps + b·flops`` (least squares over the runs trained in
    this invocation): small models on CPU are dominated by per-step overhead, large ones by FLOPs."""

    def __init__(self) -> None:
        self.samples: list[tuple[int, float, float]] = []  # (steps, flops, seconds)

    def record(self, steps: int, flops: float, seconds: float) -> None:
        self.samples.append((int(steps), float(flops), float(seconds)))

    def estimate(self, steps: int, flops: float) -> float | None:
        """Seconds one run of ``steps`` and ``flops`` takes (None before any run finished)."""
        if not self.samples:
            return None
        x = np.array([[s, f] for s, f, _ in self.samples], dtype=float)
        y = np.array([t for _, _, t in self.samples])
        if len(self.samples) >= 2:
            coef, *_ = np.linalg.lstsq(x, y, rcond=None)
            coef = np.maximum(coef, 0.0)
            if coef.sum() > 0:
                return float(coef @ [steps, flops])
        return float(y.sum() / max(x[:, 1].sum(), 1.0) * flops)


class Board:
    """The aggregated progress of a ladder or sweep: runs done / running / queued, FLOPs done vs
    planned, time left; one line on the log per event. ``slots``: runs trained at once."""

    def __init__(self, tag: str, log: Callable[[str], None], slots: int = 1):
        self.tag, self.log, self.slots = tag, log, max(1, slots)
        self.planned: dict[str, tuple[int, float]] = {}  # name -> (steps, flops)
        self.done: set[str] = set()
        self.running: set[str] = set()
        self.times = TimeModel()
        self._t0: dict[str, float] = {}

    def expect(self, name: str, steps: int, flops: float) -> None:
        """Count a run as planned (its FLOPs in the total)."""
        self.planned.setdefault(name, (int(steps), float(flops)))

    def _eta(self) -> str:
        rest = [v for k, v in self.planned.items() if k not in self.done]
        ests = [self.times.estimate(s, f) for s, f in rest]
        if not rest or any(e is None for e in ests):
            return ""
        return f", ~{format_seconds(sum(ests) / min(self.slots, len(rest)))} left"  # type: ignore[arg-type]

    def line(self) -> str:
        total = sum(f for _, f in self.planned.values())
        done = sum(self.planned[k][1] for k in self.done if k in self.planned)
        queued = len(self.planned) - len(self.done) - len(self.running)
        pct = f" ({100 * done / total:.0f}%)" if total > 0 else ""
        return (
            f"[{self.tag}] {len(self.done)}/{len(self.planned)} runs done, {len(self.running)} running, "
            f"{queued} queued; {done:.3g} of {total:.3g} FLOPs{pct}{self._eta()}"
        )

    def started(self, task: RunTask) -> None:
        state = "resuming" if (task.run_dir / CHECKPOINT_DIR).exists() else "training"
        self.running.add(task.name)
        self._t0[task.name] = time.perf_counter()
        eta = self._eta().replace(" left", " left overall")
        self.log(f"{task.label} {state} {task.name}: {task.detail}{eta}".strip())

    def skipped(self, task: RunTask) -> None:
        self.done.add(task.name)
        self.log(f"{task.label} {task.name}: finished, skipped".strip())

    def held(self, task: RunTask, message: str) -> None:
        self.running.discard(task.name)
        self.log(f"{task.label} {task.name}: {message}; training the others, then waiting for it".strip())

    def finished(self, task: RunTask, summary: dict[str, Any]) -> None:
        """Record a run's result: stops the whole study (Interrupted, UserError) when the run was
        stopped by a signal or did not complete."""
        self.running.discard(task.name)
        stop_if_signalled(summary, f"{self.tag} run {task.name}")  # never start the next run after a signal
        if summary.get("status", "complete") != "complete":
            raise UserError(f"run {task.name} stopped ({summary.get('status')}); rerun {self.tag} to resume")
        t0 = self._t0.pop(task.name, None)
        if t0 is not None:
            self.times.record(task.steps, task.flops, time.perf_counter() - t0)
        self.done.add(task.name)
        self.log(self.line())

    def failed(self, task: RunTask) -> None:
        self.running.discard(task.name)


class Executor:
    """Trains a batch of runs; ``run`` returns, per task in order, its summary dict or :class:`Held`.

    It calls ``board.started`` when a run starts and ``board.finished`` when it ends (which raises
    to stop the study after a signal). ``slots``: runs trained at once. ``close`` frees resources.
    """

    slots = 1

    def run(self, tasks: Sequence[RunTask], board: Board) -> list[dict[str, Any] | Held]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """One run after another, in this process (``train_fn``: :func:`scalinglab.train.loop.train`)."""

    def __init__(self, train_fn: Callable[[TrainConfig], dict[str, Any]] | None = None):
        self.train_fn = train_fn

    def run(self, tasks: Sequence[RunTask], board: Board) -> list[dict[str, Any] | Held]:
        train_fn = self.train_fn
        if train_fn is None:
            from scalinglab.train.loop import train as train_fn  # heavy import only when training
        out: list[dict[str, Any] | Held] = []
        for task in tasks:
            board.started(task)
            try:
                summary = train_fn(task.config)
            except LockHeld as e:  # another driver took the run between our look and the lock
                out.append(Held(str(e)))
                board.held(task, "held by another trainer")
                continue
            board.finished(task, summary)
            out.append(summary)
        return out


def make_executor(opts: ExecutorOptions, train_fn: Callable[[TrainConfig], dict] | None = None) -> Executor:
    """The executor ``opts`` ask for (UserError for bad settings, or ray asked for but not installed)."""
    if opts.max_concurrent is not None and opts.max_concurrent < 1:
        raise UserError(f"--max-concurrent must be >= 1, got {opts.max_concurrent}")
    if opts.executor == "local":
        ray_only = [
            flag
            for flag, v in (
                ("--max-concurrent", opts.max_concurrent not in (None, 1)),
                ("--ray-address", opts.ray_address),
                ("--run-resources", opts.run_resources),
            )
            if v
        ]
        if ray_only:
            raise UserError(f"{', '.join(ray_only)} needs --executor ray (the local executor trains one run at a time)")
        return LocalExecutor(train_fn)
    if opts.executor == "ray":
        from scalinglab.train.ray_executor import RayExecutor

        return RayExecutor(
            address=opts.ray_address, max_concurrent=opts.max_concurrent, run_resources=opts.run_resources
        )
    raise UserError(f"unknown --executor {opts.executor!r}; choose one of {', '.join(EXECUTORS)}")


def live_holder(run_dir: Path) -> dict[str, Any] | None:
    """The lock of ``run_dir`` when a live trainer holds it (None: free, or its holder is gone)."""
    info = RunLock(run_dir, auto_renew=False).read()
    return info if info and not is_stale(info) else None


def check_only(only: Sequence[str], known: Sequence[str], what: str) -> set[str] | None:
    """``--only`` names as a set (None: every run); UserError naming the unknown ones (``known``:
    every run name of the study, duplicates allowed)."""
    if not only:
        return None
    known = list(dict.fromkeys(known))
    unknown = [n for n in only if n not in set(known)]
    if unknown:
        raise UserError(
            f"--only: unknown run {', '.join(repr(n) for n in unknown)} in this {what}; "
            f"known: {', '.join(known[:8])}{' ...' if len(known) > 8 else ''}"
        )
    return set(only)


class Dispatcher:
    """Dispatches batches of runs (see the module doc). ``tag``: ``ladder`` or ``batch-sweep``."""

    def __init__(
        self,
        executor: Executor,
        *,
        tag: str,
        log: Callable[[str], None] = lambda s: sys.stderr.write(s + "\n"),
        only: set[str] | None = None,
        emit: bool = False,
        poll_s: float = POLL_S,
    ):
        from scalinglab.train.multihost import is_main

        self.executor, self.only, self.emit, self.poll_s = executor, only, emit, poll_s
        self.log = log if is_main() else (lambda s: None)  # several processes: process 0 reports
        self.board = Board(tag, self.log, slots=executor.slots)

    def selected(self, name: str) -> bool:
        return self.only is None or name in self.only

    def run(self, tasks: Sequence[RunTask]) -> list[dict[str, Any] | None]:
        """Each task's summary, in order (None: not finished and not selected by ``--only``).

        Under several processes, what is finished and what is held is looked at by process 0 and
        agreed (:func:`scalinglab.train.multihost.agreed`); every process trains the same runs."""
        from scalinglab.train.multihost import agreed

        def finished(ts: Sequence[RunTask]) -> dict[str, dict[str, Any]]:
            return {t.name: read_json(t.run_dir / SUMMARY_FILE) for t in ts if is_complete(t.run_dir)}

        results: dict[str, dict[str, Any] | None] = {}
        pending: list[RunTask] = []
        done = agreed(lambda: finished(tasks))
        for t in tasks:
            self.board.expect(t.name, t.steps, t.flops)
            if t.name in done:
                self.board.skipped(t)
                results[t.name] = done[t.name]
            elif not self.selected(t.name):
                results[t.name] = None
            else:
                pending.append(t)
        if self.emit and pending:
            raise PendingRuns(pending)
        waiting: set[str] = set()
        while pending:
            free, held = [], []
            done, holders = agreed(lambda ts=pending: (finished(ts), {t.name: live_holder(t.run_dir) for t in ts}))
            for t in pending:
                if t.name in done:  # its other trainer finished it
                    results[t.name] = done[t.name]
                    self.board.done.add(t.name)
                    self.log(f"{t.label} {t.name}: finished by another trainer".strip())
                    self.log(self.board.line())
                    continue
                holder = holders[t.name]
                if holder is None:
                    free.append(t)
                    continue
                held.append(t)
                if t.name not in waiting:
                    waiting.add(t.name)
                    self.board.held(t, f"held by {describe(holder)}")
            bounced = False
            for t, r in zip(free, self.executor.run(free, self.board) if free else []):
                if isinstance(r, Held):  # taken by another trainer between our look and its lock
                    held.append(t)
                    waiting.add(t.name)
                    bounced = True
                else:
                    results[t.name] = r
            if held and (bounced or not free):
                time.sleep(self.poll_s)
            pending = held
        return [results[t.name] for t in tasks]


def absolute(config: TrainConfig) -> TrainConfig:
    """``config`` with its local paths (``out``, ``data_dir``) absolute, for a process elsewhere."""
    fix = {k: os.path.abspath(v) for k in ("out", "data_dir") if (v := getattr(config, k)) and "://" not in str(v)}
    return dataclasses.replace(config, **fix)
