"""Ladder presets carry dtype, mesh, remat and accumulation, and `ladder --ladder-preset` applies them.

The training function is replaced by one that records the TrainConfig it is handed (the effective
config of the preset's first run) and stops the ladder; the expected values are the preset's
declared ones, written out here.
"""

import pytest

from scalinglab import cli
from scalinglab.train import loop


class _Stop(Exception):
    pass


@pytest.fixture
def first_config(monkeypatch, tmp_path, data_dir, dataset_name):
    data = ("--dataset", dataset_name, "--data-dir", data_dir, "--allow-repeat", "--fit-check", "estimate")
    return lambda *flags: _first_config(monkeypatch, tmp_path, *data, *flags)


def _first_config(monkeypatch, tmp_path, *flags):
    seen = []

    def fake_train(cfg, progress=None):
        seen.append(cfg)
        raise _Stop

    monkeypatch.setattr(loop, "train", fake_train)
    with pytest.raises(_Stop):
        cli.main(["ladder", "--ladder-preset", "tpu-v5e-16", "--out", str(tmp_path / "lad"), *flags])
    return seen[0]


def test_ladder_preset_run_gets_the_presets_execution_settings(first_config):
    cfg = first_config()
    assert (cfg.dtype, cfg.mesh, cfg.remat, cfg.grad_accum) == ("bfloat16", {"fsdp": 16}, "full", 4)
    assert (cfg.seq_len, cfg.batch_size) == (2048, 256)


def test_flags_override_the_preset(first_config):
    cfg = first_config("--remat", "dots", "--grad-accum", "4", "--dtype", "float32", "--fit-check", "off")
    assert (cfg.dtype, cfg.mesh, cfg.remat, cfg.grad_accum) == ("float32", {"fsdp": 16}, "dots", 4)
