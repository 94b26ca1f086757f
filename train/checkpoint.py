"""Checkpoints with orbax ``CheckpointManager``: train state (params, optimizer state, counters,
GNS EMAs) plus a JSON item (data-iterator state, RNG seed, wall-clock bookkeeping).

* asynchronous saves; orbax writes each step to a temporary directory and renames it
  when complete, so a crash mid-save never leaves a step that looks complete;
* keeps the newest ``keep`` checkpoints plus any step in ``keep_steps`` (WSD branch points);
* :meth:`Checkpointer.restore_latest` walks from the newest step down and falls back to
  the previous one, with a warning, when a step cannot be read (corrupt or partial); the
  unreadable step is moved aside (``checkpoints.corrupt/``), never deleted.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_managers

from scalinglab.errors import UserError
from scalinglab.rundir import CHECKPOINT_DIR
from scalinglab.train import diskfull
from scalinglab.train.diskfull import translate, wait_with_watchdog


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for one run directory's ``checkpoints/``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        keep: int = 3,
        keep_steps: Iterable[int] = (),
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = Path(directory).absolute()
        policies = [ocp_managers.LatestN(max(int(keep), 1))]
        keep_steps = sorted(set(int(s) for s in keep_steps))
        if keep_steps:
            policies.append(ocp_managers.CustomSteps(keep_steps))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, extra: dict[str, Any]) -> None:
        """Start saving ``state`` (pytree of jax arrays) and ``extra`` (JSON-able) at ``step``."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra))
        translate(self.directory, lambda: self.manager.save(int(step), args=args, force=True))

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into the shapes/dtypes/shardings of ``abstract_state``."""
        out = self.manager.restore(
            int(step),
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), extra=ocp.args.JsonRestore()),
        )
        return out["state"], dict(out["extra"])

    def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
        """(step, state, extra) of the newest readable checkpoint, or None when there is none.

        An unreadable step (truncated, bit-flipped, emptied) is moved aside into
        ``<run>/checkpoints.corrupt/`` (kept for inspection, never deleted) with a warning, and
        the previous one is tried; saving that step again later then works. When checkpoints
        exist but none restores, UserError (exit 2) names the directory: never a silent restart.
        """
        steps = self.all_steps()
        moved = []
        for step in reversed(steps):
            try:
                state, extra = self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any unreadable step falls back to an older one
                where = self.quarantine(step)
                moved.append(step)
                warnings.warn(
                    f"checkpoint step {step} in {self.directory} is unreadable ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}); moved to {where}, trying the previous one",
                    stacklevel=2,
                )
                continue
            return step, state, extra
        if steps:
            raise UserError(
                f"no checkpoint in {self.directory} can be restored (steps {', '.join(map(str, moved))} are "
                f"unreadable, moved to {self.corrupt_dir}); refusing to restart from step 0: move the run "
                f"away or restore a checkpoint"
            )
        return None

    @property
    def corrupt_dir(self) -> Path:
        """Where unreadable checkpoints are moved (beside ``checkpoints/``, outside orbax's view)."""
        return self.directory.parent / f"{self.directory.name}.corrupt"

    def quarantine(self, step: int) -> Path | None:
        """Move step ``step``'s directory into :attr:`corrupt_dir` (process 0 only); returns its new path."""
        self.wait()
        target = None
        if jax.process_index() == 0:
            src = self._step_dir(step)
            if src is not None:
                self.corrupt_dir.mkdir(parents=True, exist_ok=True)
                target = self.corrupt_dir / f"{src.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
                os.replace(src, target)
        self.manager.reload()
        return target

    def _step_dir(self, step: int) -> Path | None:
        for name in (str(step), f"step_{step}", f"checkpoint_{step}"):
            if (self.directory / name).is_dir():
                return self.directory / name
        return None

    def wait(self) -> None:
        """Block until pending saves finish (bounded by a watchdog; DiskFull on a full disk)."""
        wait_with_watchdog(self.manager.wait_until_finished, self.directory)

    def close(self) -> None:
        if diskfull.seen:  # a save already failed on a full disk: nothing more will finish, don't wait
            return
        try:
            self.wait()
        finally:
            translate(self.directory, self.manager.close)


def load_params(run_dir: str | Path, step: int | None = None) -> tuple[int, Any]:
    """(step, params as numpy arrays) of a run's checkpoint (default: the newest), for analysis."""
    ck = Checkpointer(Path(run_dir) / CHECKPOINT_DIR, read_only=True)
    try:
        steps = ck.all_steps()
        if not steps:
            raise FileNotFoundError(f"no checkpoints in {run_dir}")
        step = steps[-1] if step is None else int(step)
        out = ck.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return step, jax.tree.map(np.asarray, out["state"]["params"])
    finally:
        ck.close()
