"""The Ray executor: every run of a batch is one fault-tolerant Ray task.

A task runs :mod:`scalinglab.train.run_task` in a subprocess (a fresh JAX per run, on the devices
Ray gave the task) with the run's output appended to ``RUN_DIR/train.log``
(:data:`scalinglab.rundir.LOG_FILE`). A task whose worker dies (killed, node lost, spot preemption)
or whose trainer is killed by a signal is retried (``max_retries``) and resumes from the run's
newest checkpoint; a finished run is never repeated (its ``summary.json`` ends the retry at once);
a run whose lock another live trainer holds comes back as :class:`~scalinglab.train.executor.Held`.
Bad input (exit 2) fails the study with the run's last log line.

Ray is an optional extra (``make venv-ray``); without it ``--executor ray`` is one line, exit 2.
``address`` None starts a local Ray instance with ``num_cpus`` = this machine's cores (an instance
already started in this process, e.g. by a test, is used as it is). Every path sent to a task is
absolute; on a cluster the study directory must be on storage every node sees, and scalinglab
installed on every node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scalinglab.errors import Interrupted, UserError
from scalinglab.fileio import read_json
from scalinglab.rundir import CHECKPOINT_DIR, LOG_FILE, SUMMARY_FILE
from scalinglab.train.executor import Board, Executor, Held, RunTask, absolute, live_holder
from scalinglab.train.run_task import EXIT_HELD

MAX_RETRIES = 3  # attempts after the first, per run
PROGRESS_EVERY_S = 60.0  # an aggregated progress line at least this often while runs train
INSTALL_HINT = "--executor ray needs Ray, an optional extra: make venv-ray (or: uv sync --extra ray)"


class RunCrashed(RuntimeError):
    """The run's trainer died by a signal or was killed: the task is retried (it resumes)."""


class RunFailed(RuntimeError):
    """The run's trainer refused its input or raised (exit 1 or 2): not retried."""


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def train_in_subprocess(config: dict[str, Any]) -> dict[str, Any]:
    """The body of one Ray task: train the run of ``config`` (TrainConfig dict, absolute paths).

    Returns ``{"status": "complete", "summary": ...}`` or ``{"status": "held", "message": ...}``;
    raises RunCrashed (retried) or RunFailed. Interrupted by an exception (a cancel that is not a
    kill), it stops the trainer gracefully (SIGTERM: checkpoint) before re-raising.
    """
    run_dir = Path(config["out"])
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / LOG_FILE
    state = "resuming" if (run_dir / CHECKPOINT_DIR).exists() else "starting"
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(
            f"[executor] {time.strftime('%Y-%m-%d %H:%M:%S')} {state} on {socket.gethostname()} "
            f"(worker pid {os.getpid()})\n"
        )
        log.flush()
        cmd = [sys.executable, "-m", "scalinglab.train.run_task", json.dumps(config)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()  # SIGTERM: the trainer checkpoints at its next step and exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        log.write(f"[executor] {time.strftime('%Y-%m-%d %H:%M:%S')} trainer exited with code {rc}\n")
    if rc == 0 and (run_dir / SUMMARY_FILE).exists():
        return {"status": "complete", "summary": read_json(run_dir / SUMMARY_FILE)}
    if rc == EXIT_HELD:
        return {"status": "held", "message": _last_line(log_path)}
    if rc in (1, 2):
        raise RunFailed(_last_line(log_path) or f"exit code {rc}")
    raise RunCrashed(f"trainer of {run_dir} ended with code {rc}")


STOP_WAIT_S = 150.0  # how long a stopped driver waits for its trainers to end


class _Signals:
    """SIGTERM/SIGINT while Ray tasks run: recorded (``signum``), acted on by the dispatch loop
    (raising inside Ray's own wait would break it). Previous handlers restored on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = self.signum or int(signum)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _import_ray():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reporting from a research tool
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


def _task_options(resources: dict[str, float]) -> dict[str, Any]:
    """Ray ``.options()`` for one run: CPU/GPU as num_cpus/num_gpus, the rest as custom resources."""
    rest = dict(resources)
    opts: dict[str, Any] = {"num_cpus": rest.pop("CPU", 1.0)}
    if "GPU" in rest:
        opts["num_gpus"] = rest.pop("GPU")
    if rest:
        opts["resources"] = rest
    return opts


class RayExecutor(Executor):
    """Runs each task as a Ray task (see the module doc); at most ``max_concurrent`` at once."""

    def __init__(
        self,
        *,
        address: str | None = None,
        max_concurrent: int | None = None,
        run_resources: dict[str, float] | None = None,
        max_retries: int = MAX_RETRIES,
    ):
        self.ray = _import_ray()
        self.address, self.max_concurrent, self.max_retries = address, max_concurrent, max_retries
        self.run_resources = run_resources
        self._started_here = False
        self._remote = None

    def _start(self) -> None:
        ray = self.ray
        if self._remote is not None:
            return
        if not ray.is_initialized():
            import logging

            kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
            if self.address is None:
                kwargs["num_cpus"] = os.cpu_count() or 1
            try:
                with warnings.catch_warnings():  # Ray starts its processes with fork + exec: no JAX state is shared
                    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
                    ray.init(address=self.address, **kwargs)
            except ConnectionError as e:
                raise UserError(f"--ray-address {self.address}: cannot connect ({e})") from None
            self._started_here = True
        cluster = ray.cluster_resources()
        resources = self.run_resources
        if resources is None:
            resources = {"CPU": 1.0, **({"GPU": 1.0} if cluster.get("GPU") else {})}
        missing = [k for k, v in resources.items() if cluster.get(k, 0.0) < v]
        if missing:
            have = ", ".join(f"{k}={v:g}" for k, v in sorted(cluster.items()) if "node:" not in k)
            raise UserError(f"--run-resources asks for {', '.join(missing)} beyond the Ray cluster's ({have})")
        self.resources = resources
        fits = min((int(cluster.get(k, 0.0) // v) for k, v in resources.items() if v > 0), default=os.cpu_count() or 1)
        self.slots = max(1, min(self.max_concurrent or fits, fits))
        self._remote = ray.remote(train_in_subprocess).options(
            max_retries=self.max_retries, retry_exceptions=[RunCrashed], **_task_options(resources)
        )

    def run(self, tasks: Sequence[RunTask], board: Board) -> list[dict[str, Any] | Held]:
        ray = self.ray
        self._start()
        board.slots = self.slots
        queue = list(enumerate(tasks))
        results: dict[int, dict[str, Any] | Held] = {}
        inflight: dict[Any, tuple[int, RunTask]] = {}
        limit = self.max_concurrent or len(tasks)
        last_line = time.monotonic()
        with _Signals() as signals:
            try:
                while (queue or inflight) and signals.signum is None:
                    while queue and len(inflight) < limit:
                        i, t = queue.pop(0)
                        board.started(t)
                        inflight[self._remote.remote(absolute(t.config).to_dict())] = (i, t)
                    ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        i, t = inflight.pop(ref)
                        results[i] = self._result(ref, t, board)
                    board.running = {t.name for _, t in inflight.values() if live_holder(t.run_dir) is not None}
                    if time.monotonic() - last_line > PROGRESS_EVERY_S:
                        board.log(board.line())
                        last_line = time.monotonic()
            finally:
                if inflight:  # stopped (a signal, a failed run): stop the running runs too
                    self._stop(inflight, board)
        if signals.signum is not None:
            raise Interrupted(
                signals.signum,
                f"stopped by signal {signals.signum} (the running runs were stopped); rerun the same command to "
                "resume them from their newest checkpoints",
            )
        return [results[i] for i in range(len(tasks))]

    def _stop(self, inflight: dict[Any, tuple[int, RunTask]], board: Board) -> None:
        """Stop the tasks of ``inflight``: each worker is killed (a cancelled task is not retried) and
        its trainer with it (Ray ends a dead worker's children; one that outlives it stops itself at its
        next step); wait (at most STOP_WAIT_S) until no live trainer holds the runs' locks."""
        board.log(f"[{board.tag}] stopping {len(inflight)} running runs")
        for ref in inflight:
            self.ray.cancel(ref, force=True)
        deadline = time.monotonic() + STOP_WAIT_S
        dirs = [t.run_dir for _, t in inflight.values()]
        while time.monotonic() < deadline and any(live_holder(d) is not None for d in dirs):
            time.sleep(0.5)

    def _result(self, ref: Any, task: RunTask, board: Board) -> dict[str, Any] | Held:
        try:
            out = self.ray.get(ref)
        except Exception as e:  # noqa: BLE001 - Ray wraps the task's error; reported as one line
            board.failed(task)
            cause = getattr(e, "cause", None) or e
            why = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
            raise UserError(
                f"run {task.name} failed ({why}); its log: {task.run_dir / LOG_FILE}; rerun the command to resume"
            ) from None
        if out["status"] == "held":
            board.held(task, out["message"] or "held by another trainer")
            return Held(out["message"])
        board.finished(task, out["summary"])
        return out["summary"]

    def close(self) -> None:
        if self._started_here and self.ray.is_initialized():
            self.ray.shutdown()
        self._started_here = False
        self._remote = None
