"""Ladder configs: valid, near the target N, at the asked shape; checked against a brute-force search."""

import math

import pytest

from scalinglab.errors import UserError
from scalinglab.models.accounting import param_counts
from scalinglab.models.config import validate
from scalinglab.models.ladder import ladder_config, ladder_configs, log_spaced_sizes


def _n(cfg):
    return param_counts(cfg)["non_embedding"]


@pytest.mark.parametrize("family", ["gpt2", "modern"])
@pytest.mark.parametrize("target", [1e5, 3e5, 1e6, 1e7, 1e8])
def test_config_valid_and_close_to_target(family, target):
    cfg = ladder_config(family, n_non_embedding=target, aspect_ratio=32, head_dim=16, n_ctx=128, vocab_size=257)
    assert validate(cfg) is cfg
    assert cfg.head_dim == 16 and cfg.d_model % cfg.n_head == 0
    assert (cfg.n_ctx, cfg.vocab_size, cfg.family) == (128, 257, family)
    # N ∝ ~d², so one width step (16) moves log N by ≈ 2·log(1 + 16/d): the log-nearest width is
    # within half a step.
    assert abs(math.log(_n(cfg) / target)) <= math.log(1 + 16 / cfg.d_model)
    if target >= 1e7:
        assert abs(_n(cfg) / target - 1) < 0.02
    # shape: within the default tolerance band (a factor 2) of the asked ratio
    ratio = cfg.d_model / cfg.n_layer
    assert 32 / 2 <= ratio <= 32 * 2


def test_width_is_the_best_possible_at_the_chosen_depth():
    """Brute force over every allowed width at the chosen depth: none is closer to the target in log."""
    for family in ("gpt2", "modern"):
        for target in (2e4, 5e5, 4e6):
            cfg = ladder_config(family, n_non_embedding=target, head_dim=16)
            err = abs(math.log(_n(cfg) / target))
            for k in range(1, 4 * cfg.d_model // 16):
                other = ladder_config(family, n_layer=cfg.n_layer, aspect_ratio=16 * k / cfg.n_layer, head_dim=16)
                assert other.d_model == 16 * k
                assert abs(math.log(_n(other) / target)) >= err - 1e-12


def test_depth_follows_aspect_ratio():
    """At the same N, a larger aspect ratio gives a shallower, wider model."""
    shapes = [ladder_config("gpt2", n_non_embedding=3e6, aspect_ratio=a) for a in (16, 64, 256)]
    depths = [c.n_layer for c in shapes]
    widths = [c.d_model for c in shapes]
    assert depths == sorted(depths, reverse=True) and len(set(depths)) == 3
    assert widths == sorted(widths) and len(set(widths)) == 3


def test_fixed_depth():
    cfg = ladder_config("gpt2", n_layer=4, aspect_ratio=32, head_dim=16)
    assert (cfg.n_layer, cfg.d_model, cfg.n_head) == (4, 128, 8)
    cfg = ladder_config("modern", n_layer=6, n_non_embedding=2e6, head_dim=32)
    assert cfg.n_layer == 6 and cfg.head_dim == 32
    assert abs(math.log(_n(cfg) / 2e6)) <= math.log(1 + 32 / cfg.d_model)


def test_grouped_query_attention():
    cfg = ladder_config("modern", n_non_embedding=1e6, query_groups=4, head_dim=16)
    assert cfg.n_head == 4 * cfg.kv_heads and cfg.d_model % 64 == 0


def test_log_spaced_ladder():
    sizes = log_spaced_sizes(1e4, 1e6, 5)
    assert sizes[0] == pytest.approx(1e4) and sizes[-1] == pytest.approx(1e6)
    ratios = [b / a for a, b in zip(sizes, sizes[1:])]
    assert all(r == pytest.approx(math.sqrt(10)) for r in ratios)
    cfgs = ladder_configs("gpt2", 1e5, 1e7, 5)
    ns = [_n(c) for c in cfgs]
    assert len(cfgs) == 5 and ns == sorted(ns)
    for cfg, n, target in zip(cfgs, ns, log_spaced_sizes(1e5, 1e7, 5)):
        assert abs(math.log(n / target)) <= math.log(1 + 16 / cfg.d_model)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(family="gpt3"),
        dict(family="gpt2"),  # neither size nor depth
        dict(family="gpt2", n_non_embedding=-5),
        dict(family="gpt2", n_layer=0),
        dict(family="gpt2", n_non_embedding=1e6, aspect_ratio=0),
        dict(family="modern", n_non_embedding=1e6, head_dim=15),
        dict(family="gpt2", n_non_embedding=1e6, query_groups=2),
        dict(family="gpt2", n_non_embedding=1e6, aspect_tolerance=0.5),
    ],
)
def test_bad_input(kwargs):
    family = kwargs.pop("family")
    with pytest.raises(UserError):
        ladder_config(family, **kwargs)
