"""Decisions taken once for all processes of a multi-process (``jax.distributed``) command.

A ladder or sweep run as N processes must take every decision (what is finished, what to resume,
the plan) once, the same on every process, and write its files once: process 0 decides and writes,
the others receive its decision. With one process every helper is the plain call.

* :func:`agreed` ``(fn)``: ``fn()`` on process 0 (a JSON-able value, or a UserError), broadcast to every
  process; each returns the same value or raises the same UserError (no process is left waiting in
  a collective while another stops).
* :func:`is_main`: whether this process writes (process 0).
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


def agreed(fn: Callable[[], T]) -> T:
    """``fn()`` evaluated on process 0 only and handed to every process (JSON round-trip: tuples
    come back as lists); a UserError raised by it is raised on every process."""
    _, count = _process()
    if count == 1:
        return fn()
    payload: dict[str, Any] = {}
    if is_main():
        try:
            payload = {"value": fn()}
        except UserError as e:
            payload = {"error": str(e)}
    out = json.loads(_broadcast_bytes(json.dumps(payload).encode()))
    if "error" in out:
        raise UserError(out["error"])
    return out["value"]
