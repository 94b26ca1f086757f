"""``python -m scalinglab.train.run_task CONFIG_JSON``: train one run in a process of its own.

What an executor's worker runs for each run (:mod:`scalinglab.train.ray_executor`): ``CONFIG_JSON``
is a :class:`TrainConfig` as JSON (``to_dict``), with ``resume`` true so that a retried task resumes
from the run's newest checkpoint and a finished run returns its summary at once. A process of its
own per run gives every run a fresh JAX (the devices Ray assigned it, its memory freed at exit).

Exit codes: 0 the run completed (``summary.json`` written), 2 bad input (one line on stderr),
:data:`EXIT_HELD` the run's lock is held by another live trainer, ``128 + N`` stopped by signal N
after a checkpoint, anything else a crash. When the parent (the Ray worker) dies and this process
outlives it (Ray usually kills a dead worker's children), it stops itself as if preempted (SIGTERM:
checkpoint at the next step, exit), so a killed worker never leaves a trainer behind holding the
run's lock.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Sequence

EXIT_HELD = 75  # EX_TEMPFAIL: try again later
PARENT_POLL_S = 0.2


def _stop_with_parent() -> None:
    """SIGTERM ourselves (graceful: checkpoint and stop) once our parent process is gone."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _stop_with_parent()
    from scalinglab import compile_cache
    from scalinglab.errors import UserError
    from scalinglab.runlock import LockHeld
    from scalinglab.train.config import TrainConfig

    compile_cache.enable()
    try:
        if len(args) != 1:
            raise UserError("usage: python -m scalinglab.train.run_task CONFIG_JSON")
        try:
            cfg = TrainConfig.from_dict(json.loads(args[0]))
        except (ValueError, TypeError) as e:
            raise UserError(f"run_task: not a TrainConfig as JSON ({e})") from None
        from scalinglab.train.loop import train

        summary = train(cfg, progress=False)
    except LockHeld as e:
        sys.stderr.write(f"scalinglab: {e}\n")
        return EXIT_HELD
    except UserError as e:
        sys.stderr.write(f"scalinglab: error: {e}\n")
        return 2
    signum = summary.get("signal")
    if signum:
        return 128 + int(signum)
    return 0 if summary.get("status") == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
