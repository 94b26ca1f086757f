"""This process's share of every global batch, and its resumable state.

The global token stream is defined by a fixed number of pipeline shards ``S`` (default:
the process count): shard ``s`` is ``make_train_iterator(..., process_index=s,
process_count=S)`` and global batch rows ``[s·B/S, (s+1)·B/S)`` come from it. Process
``p`` of ``P`` (``S`` divisible by ``P``) reads shards ``p·S/P … (p+1)·S/P − 1`` and feeds
their rows with ``jax.make_array_from_process_local_data``. The global batch therefore
depends only on ``S``, not on how many processes read it: one process with ``S = 2`` sees
exactly what two processes see, and a run can resume on a different process count.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np

from scalinglab.errors import UserError


class ProcessBatches:
    """Iterator of ``np.int32[B·(S/P)/S, seq_len + 1]``: this process's rows of each global batch."""

    def __init__(
        self,
        ds,
        *,
        seq_len: int,
        global_batch_size: int,
        seed: int,
        shards: int,
        process_index: int,
        process_count: int,
    ):
        from scalinglab.data import pipeline

        if shards % process_count:
            raise UserError(f"data shards ({shards}) must be a multiple of the process count ({process_count})")
        if global_batch_size % shards:
            raise UserError(f"--batch-size {global_batch_size} is not divisible by the {shards} data shards")
        per = shards // process_count
        self.shard_ids = list(range(process_index * per, (process_index + 1) * per))
        self._its = [
            pipeline.make_train_iterator(
                ds,
                seq_len=seq_len,
                global_batch_size=global_batch_size,
                seed=seed,
                process_index=s,
                process_count=shards,
            )
            for s in self.shard_ids
        ]

    def __iter__(self) -> ProcessBatches:
        return self

    def __next__(self) -> np.ndarray:
        return np.concatenate([np.asarray(next(it), np.int32) for it in self._its], axis=0)

    def global_state(self) -> dict[str, Any]:
        """``{shard id: iterator state}`` over all processes (a collective when multi-process)."""
        merged: dict[str, Any] = {}
        for part in gather_json({str(s): it.get_state() for s, it in zip(self.shard_ids, self._its)}):
            merged.update(part)
        return merged

    def set_global_state(self, states: dict[str, Any]) -> None:
        missing = [s for s in self.shard_ids if str(s) not in states]
        if missing:
            raise UserError(
                f"the checkpoint has no data-iterator state for shard(s) {missing}; "
                "was the run started with a different number of data shards?"
            )
        for s, it in zip(self.shard_ids, self._its):
            it.set_state(states[str(s)])

    def close(self) -> None:
        for it in self._its:
            close = getattr(it, "close", None)
            if close is not None:
                close()


def gather_json(obj: Any) -> list[Any]:
    """``obj`` (JSON-able) of every process, in process order."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.asarray([data.size], np.int32))).reshape(-1)
    buf = np.zeros(int(lengths.max()), np.uint8)
    buf[: data.size] = data
    rows = np.asarray(multihost_utils.process_allgather(buf))
    return [json.loads(bytes(rows[i, : lengths[i]]).decode("utf-8")) for i in range(len(lengths))]
