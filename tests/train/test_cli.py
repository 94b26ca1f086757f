"""`scalinglab train` argument handling: config file + flag precedence, bad input → one line, exit 2."""

import dataclasses
import json

import pytest

from scalinglab.cli import build_parser, main
from scalinglab.train.cli import config_from_args, parse_mesh
from scalinglab.train.config import TrainConfig
from scalinglab.train.sweep_cli import settings as sweep_settings


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
    assert cfg.overrides == {"n_layer": 3} and cfg.mesh == {"data": 2, "fsdp": 4}
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
        (["--steps", "5", "--set", "n_layer=two"], "--set n_layer=two: expected int"),
        (["--steps", "5", "--set", "init_std=small"], "--set init_std=small: expected float"),
        (["--steps", "5", "--set", "tie_embeddings=maybe"], "--set tie_embeddings=maybe: expected bool"),
        (["--steps", "5", "--set", "n_layers=2"], "unknown model field 'n_layers'"),
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


def test_set_values_take_their_fields_types(tmp_path):
    """``--set`` texts become the model fields' declared types, exactly what a config file's mapping gives."""
    argv = ["--steps", "5", "--set", "n_layer=3", "--set", "init_std=0.01", "--set", "tie_embeddings=false"]
    argv += ["--set", "family=modern"]
    cfg = _cfg(argv)
    assert cfg.overrides == {"n_layer": 3, "init_std": 0.01, "tie_embeddings": False, "family": "modern"}
    assert [type(v) for v in cfg.overrides.values()] == [int, float, bool, str]
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  overrides: {n_layer: 3, init_std: 0.01, tie_embeddings: false, family: modern}\n")
    assert _cfg(["--steps", "5", "--config", str(f)]).overrides == cfg.overrides
    sweep_argv = ["batch-sweep", "--tokens", "1e4", "--out", str(tmp_path / "s"), *argv[2:]]
    sweep, _ = sweep_settings(build_parser().parse_args(sweep_argv))
    assert sweep.overrides == cfg.overrides  # batch-sweep parses --set with the same helper


@pytest.mark.parametrize("argv", [["params", "--preset", "gpt2-tiny"], ["flops", "--preset", "gpt2-tiny", "--no-xla"]])
def test_model_commands_refuse_a_bad_set_value(argv, capsys):
    assert main([*argv, "--set", "n_layer=1.5"]) == 2
    err = capsys.readouterr().err
    assert err == f"scalinglab {argv[0]}: error: --set n_layer=1.5: expected int\n"


def test_cli_set_run_resumes_with_the_typed_override(tmp_path, data_dir, dataset_name):
    """A run trained by the CLI with ``--set n_layer=1`` saves the int 1, so resuming it in-process with
    ``overrides={"n_layer": 1}`` is not a config change; a directory written before the values were
    typed (the text "1") is still the same run, and another value is still refused."""
    from scalinglab.data.pipeline import load_dataset
    from scalinglab.errors import UserError
    from scalinglab.fileio import read_json
    from scalinglab.train.identity import check_resume, config_diff
    from scalinglab.train.loop import _config_json, _resolve_model

    out = tmp_path / "run"
    argv = ["--preset", "gpt2-tiny", "--set", "n_layer=1", "--dataset", dataset_name, "--data-dir", data_dir]
    argv += ["--seq-len", "32", "--batch-size", "8", "--steps", "2", "--warmup", "1", "--eval-every", "0"]
    argv += ["--eval-batches", "1", "--checkpoint-every", "0", "--out", str(out), "--no-progress"]
    assert main(["train", *argv]) == 0
    saved = read_json(out / "config.json")
    assert saved["train"]["overrides"] == {"n_layer": 1} and type(saved["train"]["overrides"]["n_layer"]) is int

    ds = load_dataset(dataset_name, data_dir)

    def requested(n_layer):
        cfg = dataclasses.replace(_cfg(argv), overrides={"n_layer": n_layer}, resume=True)
        return _config_json(cfg, _resolve_model(cfg, ds), ds)

    check_resume(out, requested(1), saved)  # the in-process resume of the issue: accepted
    old = {**saved, "train": {**saved["train"], "overrides": {"n_layer": "1"}}}
    assert config_diff(old, requested(1)) == []
    assert config_diff(saved, requested(2)) == ["model.n_layer", "train.overrides"]
    with pytest.raises(UserError, match="train.overrides"):
        check_resume(out, requested(2), saved)
