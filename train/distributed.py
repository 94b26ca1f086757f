"""Multi-process start-up: ``jax.distributed.initialize`` from flags or environment.

* Cloud TPU (and other managed clusters JAX recognises): ``initialize()`` with no
  arguments discovers everything; use ``--coordinator auto`` or env ``SCALINGLAB_DISTRIBUTED=1``.
* Elsewhere (several local CPU processes, GPU hosts): coordinator address, process count
  and id from ``--coordinator/--num-processes/--process-id`` or env
  ``SCALINGLAB_COORDINATOR``, ``SCALINGLAB_NUM_PROCESSES``, ``SCALINGLAB_PROCESS_ID``.

Must run before any JAX computation; calling it twice is a no-op. The commands that take these
flags (today ``scalinglab train``) call :func:`initialize` with them.
"""

from __future__ import annotations

import os

import jax

from scalinglab.errors import UserError

_ENV = {
    "coordinator": "SCALINGLAB_COORDINATOR",
    "num_processes": "SCALINGLAB_NUM_PROCESSES",
    "process_id": "SCALINGLAB_PROCESS_ID",
}


def _is_initialized() -> bool:
    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client is not None
    except Exception:  # noqa: BLE001 - private API moved: assume not initialised
        return False


def resolve(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> dict | None:
    """The initialize() arguments from flags, else environment; None for a single process."""
    coordinator = coordinator or os.environ.get(_ENV["coordinator"])
    if num_processes is None and os.environ.get(_ENV["num_processes"]):
        num_processes = int(os.environ[_ENV["num_processes"]])
    if process_id is None and os.environ.get(_ENV["process_id"]):
        process_id = int(os.environ[_ENV["process_id"]])
    if coordinator == "auto" or os.environ.get("SCALINGLAB_DISTRIBUTED") == "1":
        return {}
    if coordinator is None:
        if num_processes not in (None, 1):
            raise UserError("--num-processes > 1 needs --coordinator HOST:PORT")
        return None
    if num_processes is None or process_id is None:
        raise UserError("--coordinator needs --num-processes and --process-id (or their env variables)")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Start JAX's multi-controller runtime when asked to; True if running multi-process."""
    args = resolve(coordinator, num_processes, process_id)
    if args is None:
        return False
    if not _is_initialized():
        jax.distributed.initialize(**args)
    return jax.process_count() > 1
