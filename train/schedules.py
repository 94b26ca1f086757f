"""Learning-rate schedules (optax): warmup+cosine, warmup+constant, and WSD.

All schedules map optax's update count c (0-based) to the learning rate of update
u = c + 1, so the first update already has a non-zero rate (peak/warmup) and the last one
(u = total_steps) gets the final value. Warmup is linear, reaching ``peak_lr`` at u = warmup.

* cosine: decays to ``min_lr_ratio·peak_lr`` exactly at the run's own length
  (Chinchilla's correction: the cosine cycle matches the number of steps).
* constant: stays at ``peak_lr`` after warmup.
* WSD (warmup–stable–decay): constant until ``decay_start``, then decays to 0 at
  ``total_steps``, linearly or with the "1-sqrt" shape lr = peak·(1 − sqrt(t/T)).
  A cooldown branched from a stable-phase checkpoint at step s uses the same
  function with ``decay_start = s``.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from scalinglab.errors import UserError


def wsd_decay_steps(total_steps: int, decay_fraction: float) -> int:
    """Length in steps of the WSD cooldown for a run of ``total_steps``."""
    return max(1, round(decay_fraction * total_steps))


def _decay(shape: str, peak_lr: float, steps: int) -> optax.Schedule:
    steps = max(1, int(steps))
    if shape == "linear":
        return optax.linear_schedule(peak_lr, 0.0, steps)
    if shape == "1-sqrt":

        def one_minus_sqrt(count):
            frac = jnp.clip(jnp.asarray(count, jnp.float32) / steps, 0.0, 1.0)
            return peak_lr * (1.0 - jnp.sqrt(frac))

        return one_minus_sqrt
    raise UserError(f"unknown WSD decay shape {shape!r}; choose linear or 1-sqrt")


def _shifted(schedule: optax.Schedule) -> optax.Schedule:
    return lambda count: schedule(count + 1)


def make_schedule(
    name: str,
    *,
    peak_lr: float,
    total_steps: int,
    warmup: int,
    min_lr_ratio: float = 0.1,
    decay_start: int | None = None,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
) -> optax.Schedule:
    """Build the schedule ``name`` (``cosine|constant|wsd``) for a run of ``total_steps``."""
    return _shifted(
        _by_update(name, peak_lr, total_steps, warmup, min_lr_ratio, decay_start, decay_fraction, decay_shape)
    )


def _by_update(name, peak_lr, total_steps, warmup, min_lr_ratio, decay_start, decay_fraction, decay_shape):
    """The schedule as a function of the 1-based update index u."""
    warmup = int(min(max(warmup, 0), total_steps))
    if name == "cosine":
        if warmup >= total_steps:
            return optax.linear_schedule(0.0, peak_lr, max(warmup, 1))
        return optax.warmup_cosine_decay_schedule(
            0.0, peak_lr, warmup_steps=warmup, decay_steps=total_steps, end_value=min_lr_ratio * peak_lr
        )
    if name == "constant":
        if warmup == 0:
            return optax.constant_schedule(peak_lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, peak_lr, warmup), optax.constant_schedule(peak_lr)], [warmup]
        )
    if name == "wsd":
        if decay_start is None:
            decay_start = total_steps - wsd_decay_steps(total_steps, decay_fraction)
        decay_start = int(max(decay_start, warmup))
        pieces, bounds = [], []
        if warmup > 0:
            pieces.append(optax.linear_schedule(0.0, peak_lr, warmup))
            bounds.append(warmup)
        pieces.append(optax.constant_schedule(peak_lr))
        bounds.append(decay_start)
        pieces.append(_decay(decay_shape, peak_lr, total_steps - decay_start))
        return optax.join_schedules(pieces, bounds)
    raise UserError(f"unknown schedule {name!r}; choose cosine, constant or wsd")


def schedule_from_config(cfg) -> optax.Schedule:
    """The schedule of a :class:`scalinglab.train.config.TrainConfig`."""
    return make_schedule(
        cfg.schedule,
        peak_lr=cfg.lr,
        total_steps=cfg.total_steps(),
        warmup=cfg.warmup_steps(),
        min_lr_ratio=cfg.min_lr_ratio,
        decay_start=cfg.wsd_decay_start,
        decay_fraction=cfg.wsd_decay,
        decay_shape=cfg.wsd_decay_shape,
    )
