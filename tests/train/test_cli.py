"""`scalinglab train` argument handling: config file + flag precedence, bad input → one line, exit 2."""

import json

import pytest

from scalinglab.cli import build_parser, main
from scalinglab.train.cli import config_from_args, parse_mesh
from scalinglab.train.config import TrainConfig


def _cfg(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_flags_override_config_file(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(TrainConfig(preset="modern-tiny", lr=0.5, steps=7, seq_len=64).to_dict()))
    cfg = _cfg(
        [
            "--config",
            str(f),
            "--lr",
            "0.01",
            "--set",
            "n_layer=3",
            "--mesh",
            "data=2,fsdp=4",
            "--tokens",
            "1000",
            "--schedule",
            "wsd",
            "--wsd-decay",
            "0.3",
            "--wsd-decay-shape",
            "1-sqrt",
        ]
    )
    assert (cfg.preset, cfg.lr, cfg.seq_len) == ("modern-tiny", 0.01, 64)
    assert cfg.overrides == {"n_layer": "3"} and cfg.mesh == {"data": 2, "fsdp": 4}
    assert cfg.steps is None and cfg.tokens == 1000 and cfg.total_steps() == 1  # ceil(1000 / (32·64))
    assert (cfg.schedule, cfg.wsd_decay, cfg.wsd_decay_shape) == ("wsd", 0.3, "1-sqrt")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_parse_mesh():
    assert parse_mesh("data=2,fsdp=2,tensor=2") == {"data": 2, "fsdp": 2, "tensor": 2}
    assert TrainConfig(mesh={"fsdp": 2}).mesh_shape(8) == {"data": 4, "fsdp": 2, "tensor": 1}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "5", "--mesh", "pipeline=2"], "--mesh expects"),
        (["--steps", "5", "--schedule", "wsd", "--wsd-decay", "1.5"], "--wsd-decay"),
        (["--steps", "5", "--batch-size", "10", "--grad-accum", "4"], "does not divide"),
        (["--batch-size", "8"], "--steps or --tokens"),
        (["--steps", "5", "--branch-from", "somewhere"], "--branch-step"),
        (["--steps", "5", "--config", "/nonexistent.json"], "no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_mesh_larger_than_devices_is_user_error():
    from scalinglab.errors import UserError

    with pytest.raises(UserError, match="16 devices"):
        TrainConfig(mesh={"data": 16}).mesh_shape(8)
