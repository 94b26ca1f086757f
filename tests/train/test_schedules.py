"""Schedules against their closed forms. ``s(c)`` is the rate of update u = c + 1."""

import math

import numpy as np
import pytest

from scalinglab.errors import UserError
from scalinglab.train.config import TrainConfig
from scalinglab.train.schedules import make_schedule, schedule_from_config


def test_cosine_warmup_and_end_at_run_length():
    f = make_schedule("cosine", peak_lr=1.0, total_steps=100, warmup=10, min_lr_ratio=0.1)
    s = lambda u: f(u - 1)  # noqa: E731
    np.testing.assert_allclose(float(s(1)), 0.1, rtol=1e-6)  # first update already moves
    np.testing.assert_allclose(float(s(5)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(s(10)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(s(55)), 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)), rtol=1e-5)
    np.testing.assert_allclose(float(s(100)), 0.1, rtol=1e-6)  # the last update gets the floor


def test_constant():
    f = make_schedule("constant", peak_lr=3e-4, total_steps=50, warmup=4)
    np.testing.assert_allclose([float(f(u - 1)) for u in (1, 2, 4, 50)], [0.75e-4, 1.5e-4, 3e-4, 3e-4], rtol=1e-6)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_wsd_stable_then_decay(shape):
    f = make_schedule("wsd", peak_lr=2.0, total_steps=100, warmup=10, decay_fraction=0.2, decay_shape=shape)
    s = lambda u: f(u - 1)  # noqa: E731
    np.testing.assert_allclose([float(s(i)) for i in (10, 50, 80)], [2.0, 2.0, 2.0], rtol=1e-6)
    frac = 5 / 20
    expected = 2.0 * (1 - frac) if shape == "linear" else 2.0 * (1 - math.sqrt(frac))
    np.testing.assert_allclose(float(s(85)), expected, rtol=1e-5)
    assert abs(float(s(100))) < 1e-7


def test_branched_wsd_decays_from_branch_step():
    cfg = TrainConfig(schedule="wsd", lr=1.0, steps=30, warmup=2, wsd_decay_start=20)
    f = schedule_from_config(cfg)
    np.testing.assert_allclose([float(f(u - 1)) for u in (20, 25, 30)], [1.0, 0.5, 0.0], atol=1e-6)


def test_unknown_schedule_is_user_error():
    with pytest.raises(UserError):
        make_schedule("exp", peak_lr=1.0, total_steps=10, warmup=0)
