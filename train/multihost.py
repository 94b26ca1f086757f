"""Decisions taken once for all processes of a multi-process (``jax.distributed``) command.

A ladder or sweep run as N processes must take every decision (what is finished, what to resume,
the plan) once, the same on every process, and write its files once: process 0 decides and writes,
the others receive its decision. With one process every helper is the plain call.

* :func:`agreed` ``(fn)``: ``fn()`` on process 0 (a JSON-able value, or a UserError), handed to every
  process; each returns the same value or raises the same UserError (no process is left waiting
  while another stops).
* :func:`is_main`: whether this process writes (process 0).

The value travels through the key-value store of JAX's coordination service (the one
``jax.distributed.initialize`` starts; orbax synchronises its checkpoints through it too), not
through a device collective: the other processes may wait for ``fn`` as long as it takes (the
demo's data preparation, a report's fits: minutes), where a CPU (gloo) collective gives up after
30 s. A process that dies meanwhile is reported to the others by the coordination service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from scalinglab.errors import UserError

T = TypeVar("T")


def _process() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


def is_main() -> bool:
    """True on process 0 (and in a single-process program): the process that writes shared files."""
    return _process()[0] == 0


def _broadcast_bytes(data: bytes) -> bytes:
    """Process 0's ``data`` on every process (others pass anything)."""
    from jax.experimental import multihost_utils

    n = int(multihost_utils.broadcast_one_to_all(np.asarray(len(data), np.int32)))
    buf = np.zeros(max(256, 1 << (n - 1).bit_length()), np.uint8)  # powers of two: few programs to compile
    if is_main():
        buf[:n] = np.frombuffer(data, np.uint8)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buf))[:n].astype(np.uint8))


def _coordination_client() -> Any:
    """The jax.distributed coordination-service client (None when there is none)."""
    try:
        from jax._src import distributed as _dist

        return _dist.global_state.client
    except (ImportError, AttributeError):  # private API moved: fall back to a device collective
        return None


def _handed_out(data: bytes, calls: int) -> bytes:
    """Process 0's ``data`` on every process (the others pass anything): process 0 sets it in the
    coordination service's key-value store, then every process meets at a barrier (so, as with a
    collective, no process goes on before all have the decision: process 0 does not start writing
    what another process is still checking) and the others read it; without a coordination client,
    a broadcast."""
    client = _coordination_client()
    if client is None:
        return _broadcast_bytes(data)
    key = f"scalinglab/agreed/{calls}"
    if is_main():
        client.key_value_set_bytes(key, data)
    client.wait_at_barrier(f"{key}/barrier", AGREE_TIMEOUT_MS)
    return data if is_main() else bytes(client.blocking_key_value_get_bytes(key, AGREE_TIMEOUT_MS))


# How long the other processes wait for process 0's decision (ms): a day, for a long data preparation.
AGREE_TIMEOUT_MS = 24 * 3600 * 1000
_calls = 0  # agreed() calls so far in this process (the same sequence on every process)


def agreed(fn: Callable[[], T]) -> T:
    """``fn()`` evaluated on process 0 only and handed to every process (JSON round-trip: tuples
    come back as lists); a UserError raised by it is raised on every process. Every process must
    make the same sequence of ``agreed`` calls (the n-th call of each gets the n-th value)."""
    global _calls
    _, count = _process()
    if count == 1:
        return fn()
    _calls += 1
    payload: dict[str, Any] = {}
    if is_main():
        try:
            payload = {"value": fn()}
        except UserError as e:
            payload = {"error": str(e)}
    out = json.loads(_handed_out(json.dumps(payload).encode(), _calls))
    if "error" in out:
        raise UserError(out["error"])
    return out["value"]
