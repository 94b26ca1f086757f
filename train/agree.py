"""Agreeing on a per-step host flag (stop after a signal) across processes without a host sync.

``LaggedAny(flag)`` is called once per step by every process with its own flag (a bool); it
returns the OR over all processes of the flags passed one call earlier. The OR is a tiny
all-device reduction dispatched asynchronously right behind the train step and read one step
later, when it has long finished: the host never waits for the current step to finish.
Every process reads the same value, so all stop after the same step (one step after the signal
was seen). A single process needs no agreement: the flag is returned as it is, with no lag.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@functools.lru_cache(maxsize=4)
def _reducer(devices: tuple) -> tuple[NamedSharding, object]:
    """(sharding of the ``bool[n_devices]`` flag vector, jitted OR → replicated scalar) for ``devices``."""
    mesh = Mesh(np.asarray(devices, dtype=object), ("p",))
    reduce = jax.jit(jnp.any, out_shardings=NamedSharding(mesh, PartitionSpec()))
    return NamedSharding(mesh, PartitionSpec("p")), reduce


class LaggedAny:
    """OR of a per-process bool over all processes, one call late (see the module docstring)."""

    def __init__(self):
        self._multi = jax.process_count() > 1
        self._pending = None  # the reduction of the previous call's flags (a device scalar)

    def __call__(self, flag: bool) -> bool:
        if not self._multi:
            return bool(flag)
        sharding, reduce = _reducer(tuple(jax.devices()))
        one = np.asarray([bool(flag)])
        shards = [jax.device_put(one, d) for d in sharding.addressable_devices]
        flags = jax.make_array_from_single_device_arrays((jax.device_count(),), sharding, shards)
        previous, self._pending = self._pending, reduce(flags)
        return False if previous is None else bool(previous)
