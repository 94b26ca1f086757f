"""Settings of the training commands: flags generated from the dataclasses, ``--config FILE`` (YAML/JSON),
flags over file, the resolved config written back, and bad files → one line, exit 2."""

import dataclasses
import json

import pytest
import yaml

from scalinglab.cli import build_parser, main
from scalinglab.models.config import get_config
from scalinglab.train import ladder_cli, sweep_cli
from scalinglab.train.cli import config_from_args
from scalinglab.train.config import TRAIN_SCHEMA, TrainConfig
from scalinglab.train.config_file import read_config_file, write_config_file
from scalinglab.train.demo import SCHEMA as DEMO_SCHEMA
from scalinglab.train.options import _META
from scalinglab.train.plan import LadderSpec

# The flags each command had before they were generated (a contract: none may disappear).
FLAGS_BEFORE = {
    "train": "--batch-size --branch-from --branch-step --checkpoint-every --clip --config --coordinator --data-dir "
    "--data-shards --dataset --dtype --eval-batches --eval-every --grad-accum --json --keep-checkpoints "
    "--log-every --lr --max-bad-steps --mesh --name --no-gns --no-progress --num-processes --out --preset "
    "--process-id --resume --schedule --seed --seq-len --set --steps --tokens --warmup --weight-decay "
    "--wsd-decay --wsd-decay-shape --z-loss",
    "ladder": "--aspect-ratio --batch-size --budgets --data-dir --dataset --dry-run --dtype --eval-batches "
    "--eval-every --family --head-dim --json --ladder-preset --log-every --lr --mesh --out --plan --seed "
    "--seq-len --size-span --sizes --sizes-per-budget --throughput --tokens --tokens-per-param --vocab-size",
    "batch-sweep": "--base-batch --batch-sizes --checkpoint-every --clip --data-dir --dataset --dtype --eval-batches "
    "--eval-every --extend-grid --json --log-every --lr --lr-grid --lr-rule --mesh --no-gns --out "
    "--preset --schedule --seed --seq-len --set --tokens --warmup --weight-decay",
    "demo": "--data-dir --out --synthetic",
}


def _parse(*argv):
    return build_parser().parse_args(list(argv))


def _subparser(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[command]


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_every_old_flag_still_exists_and_config_is_everywhere(command):
    flags = {s for a in _subparser(command)._actions for s in a.option_strings}
    missing = set(FLAGS_BEFORE[command].split()) - flags
    assert not missing and "--config" in flags


def test_old_defaults_kept():
    """The effective defaults of the flags as they were written by hand before."""
    cfg = config_from_args(_parse("train", "--steps", "5"))
    assert cfg == TrainConfig(steps=5)  # every default is the dataclass's
    assert (cfg.seq_len, cfg.batch_size, cfg.lr, cfg.schedule, cfg.wsd_decay, cfg.clip) == (
        128,
        32,
        1e-3,
        "cosine",
        0.2,
        1.0,
    )
    base, opts = sweep_cli.settings(_parse("batch-sweep", "--tokens", "2e6", "--out", "sw"))
    assert (base.schedule, base.seed, base.dtype, base.preset, base.tokens, base.gns) == (
        "constant",
        0,
        "float32",
        "gpt2-tiny",
        2_000_000,
        True,
    )
    assert (opts.batch_sizes, opts.lr_rule, opts.lr_grid, opts.base_batch, opts.extend_grid) == (
        (8, 16, 32, 64, 128),
        "grid",
        (0.25, 0.5, 1.0, 2.0, 4.0),
        None,
        0,
    )
    _, opts = sweep_cli.settings(_parse("batch-sweep", "--tokens", "2e6", "--out", "sw", "--extend-grid"))
    assert opts.extend_grid == 2
    spec, _ = ladder_cli.spec_from_args(_parse("ladder"))
    assert spec == LadderSpec()
    values = ladder_cli.SCHEMA.values(_parse("ladder"))
    shared = ladder_cli.SCHEMA.fields_of(TrainConfig, values)
    assert {
        k: shared[k]
        for k in ("dataset", "data_dir", "seed", "dtype", "mesh", "eval_every", "eval_batches", "log_every")
    } == dict(
        dataset="local_text",
        data_dir=None,
        seed=0,
        dtype="float32",
        mesh=None,
        eval_every=100,
        eval_batches=4,
        log_every=10,
    )


def test_every_setting_declares_help_and_section():
    """A new TrainConfig/LadderSpec field gets its flag only through `option(...)` (help + section)."""
    for cls in (TrainConfig, LadderSpec):
        for f in dataclasses.fields(cls):
            meta = f.metadata.get(_META)
            assert meta is not None and meta.help, f"{cls.__name__}.{f.name} needs option(default, help, ...)"
    assert set(TRAIN_SCHEMA.sections) == {"model", "data", "optimizer", "train"}


TRAIN_FLAGS = [
    "--preset",
    "modern-tiny",
    "--set",
    "n_layer=3",
    "--set",
    "d_model=96",
    "--dataset",
    "synthetic_markov",
    "--seq-len",
    "64",
    "--batch-size",
    "8",
    "--tokens",
    "2e6",
    "--lr",
    "3e-3",
    "--schedule",
    "wsd",
    "--wsd-decay",
    "0.3",
    "--mesh",
    "data=2,fsdp=4",
    "--no-gns",
    "--eval-every",
    "50",
    "--out",
    "runs/x",
]
TRAIN_YAML = """
model:
  preset: modern-tiny
  overrides: {n_layer: 3, d_model: 96}
data:
  dataset: synthetic_markov
  seq_len: 64
optimizer:
  lr: 3e-3          # YAML reads this as a string; it is parsed like the flag
  schedule: wsd
  wsd_decay: 0.3
train:
  batch_size: 8
  tokens: 2e6
  mesh: data=2,fsdp=4
  gns: false
  eval_every: 50
  out: runs/x
"""


def test_yaml_config_reproduces_the_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(TRAIN_YAML)
    from_flags = config_from_args(_parse("train", *TRAIN_FLAGS))
    from_file = config_from_args(_parse("train", "--config", str(f)))
    # --set values take their fields' types, as the file's do: the same config either way
    assert dataclasses.replace(from_file, overrides={}) == dataclasses.replace(from_flags, overrides={})
    assert get_config(from_file.preset, from_file.overrides) == get_config(from_flags.preset, from_flags.overrides)
    assert (from_file.lr, from_file.tokens, from_file.mesh, from_file.gns) == (
        3e-3,
        2_000_000,
        {"data": 2, "fsdp": 4},
        False,
    )
    assert from_file.overrides == from_flags.overrides == {"n_layer": 3, "d_model": 96}  # --set values typed too
    assert from_file == from_flags
    # the resolved config, written and read back (YAML and JSON), gives the same run again
    for name in ("resolved.yaml", "resolved.json"):
        out = tmp_path / name
        if name.endswith(".json"):
            out.write_text(json.dumps(TRAIN_SCHEMA.dump(from_flags)))
        else:
            write_config_file(out, TRAIN_SCHEMA.dump(from_flags))
        again = config_from_args(_parse("train", "--config", str(out)))
        assert TRAIN_SCHEMA.dump(again) == TRAIN_SCHEMA.dump(from_flags)
        assert dataclasses.replace(again, overrides={}) == dataclasses.replace(from_flags, overrides={})


def test_flags_override_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(TRAIN_YAML)
    cfg = config_from_args(
        _parse("train", "--config", str(f), "--lr", "0.01", "--steps", "7", "--set", "n_layer=5", "--mesh", "tensor=2")
    )
    assert cfg.lr == 0.01 and cfg.schedule == "wsd"  # the flag wins; the rest stays from the file
    assert cfg.steps == 7 and cfg.tokens is None  # --steps replaces the file's token budget
    assert cfg.overrides == {"n_layer": 5, "d_model": 96}  # --set adds to the file's overrides
    assert cfg.mesh == {"tensor": 2}  # --mesh replaces the file's mesh


def test_ladder_and_sweep_yaml_match_flags(tmp_path):
    ladder_flags = [
        "--budgets",
        "1e12,1e13",
        "--family",
        "modern",
        "--seq-len",
        "32",
        "--lr",
        "1e-3",
        "--eval-every",
        "7",
        "--dtype",
        "bfloat16",
        "--out",
        "runs/L",
    ]
    f = tmp_path / "ladder.yaml"
    f.write_text(
        "ladder: {budgets: [1e12, 1e13], family: modern, seq_len: 32, lr: 1e-3, out: runs/L}\n"
        "train: {eval_every: 7, dtype: bfloat16}\n"
    )
    by_flags = ladder_cli.SCHEMA.values(_parse("ladder", *ladder_flags))
    by_file = ladder_cli.SCHEMA.values(_parse("ladder", "--config", str(f)))
    assert by_flags == by_file
    assert ladder_cli.spec_from_args(_parse("ladder", "--config", str(f)))[0] == dataclasses.replace(
        LadderSpec(), budgets=(1e12, 1e13), family="modern", seq_len=32, lr=1e-3
    )

    sweep_flags = [
        "--tokens",
        "1e5",
        "--out",
        "sw",
        "--batch-sizes",
        "4,8,16",
        "--lr-rule",
        "grid",
        "--lr-grid",
        "0.5,2",
        "--seed",
        "3",
        "--eval-every",
        "0",
    ]
    f = tmp_path / "sweep.json"
    f.write_text(
        json.dumps(
            {
                "sweep": {
                    "out": "sw",
                    "batch_sizes": [4, 8, 16],
                    "lr_rule": "grid",
                    "lr_grid": [0.5, 2],
                    "eval_every": 0,
                },
                "train": {"tokens": 100000, "seed": 3},
            }
        )
    )
    assert sweep_cli.settings(_parse("batch-sweep", *sweep_flags)) == sweep_cli.settings(
        _parse("batch-sweep", "--config", str(f))
    )


def test_run_config_json_is_accepted(tmp_path):
    """A run directory's config.json (its "train" object) works as --config, as before."""
    cfg = TrainConfig(preset="modern-tiny", lr=0.5, steps=7, seq_len=64)
    f = tmp_path / "config.json"
    f.write_text(
        json.dumps(
            {
                "name": "x",
                "model": {"family": "modern"},
                "train": cfg.to_dict(),
                "data": {},
                "accounting": {"non_embedding": 1},
            }
        )
    )
    assert config_from_args(_parse("train", "--config", str(f))) == cfg


def _one_line_exit_2(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    "command, text, needles",
    [
        ("train", "optimizer: {lr: 1e-3, lrr: 2}\n", ["unknown key 'optimizer.lrr'"]),
        ("train", "train: {lr: 1e-3}\n", ["unknown key 'train.lr'", "'optimizer'"]),
        ("train", "training: {steps: 3}\n", ["unknown key 'training'"]),
        ("train", "lrr: 3\n", ["unknown key 'lrr'"]),
        ("ladder", "ladder: {budget: [1e12]}\n", ["unknown key 'ladder.budget'"]),
        ("batch-sweep", "train: {batch_size: 8}\n", ["unknown key 'train.batch_size'"]),
        ("demo", "demo: {synthetic: true, steps: 3}\n", ["unknown key 'demo.steps'"]),
        ("train", "train: {steps: many}\n", ["train.steps", "expected an integer", "'many'"]),
        ("train", "train: {steps: 2.5}\n", ["train.steps", "expected an integer"]),
        ("train", "optimizer: {lr: [1]}\n", ["optimizer.lr", "expected a number"]),
        ("train", "train: {gns: 0}\n", ["train.gns", "expected true or false"]),
        ("train", "optimizer: {schedule: linear}\n", ["optimizer.schedule", "cosine, constant, wsd"]),
        ("train", "model: {overrides: 3}\n", ["--set expects key=value"]),
        ("train", "train: [1, 2]\n", ["section 'train' must be a mapping"]),
        ("train", "- 1\n- 2\n", ["expected a mapping"]),
        ("train", "train: {steps: 3\n", ["not valid YAML", "line"]),
        ("ladder", "ladder: {budgets: [1e12, x]}\n", ["ladder.budgets", "expected a number"]),
    ],
)
def test_bad_config_file_is_one_line_exit_2(tmp_path, capsys, command, text, needles):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    _one_line_exit_2([command, "--config", str(f)], capsys, *needles)


def test_config_path_must_be_a_file(tmp_path, capsys):
    _one_line_exit_2(["train", "--config", str(tmp_path)], capsys, "is a directory")
    _one_line_exit_2(["ladder", "--config", str(tmp_path / "none.yaml"), "--dry-run"], capsys, "no such file")
    bad = tmp_path / "bad.json"
    bad.write_text("{'single': 'quotes'}")
    _one_line_exit_2(["batch-sweep", "--config", str(bad)], capsys, "not valid JSON")


def test_required_settings_come_from_flags_or_file(tmp_path, capsys):
    _one_line_exit_2(["batch-sweep", "--out", str(tmp_path / "sw")], capsys, "--tokens is required")
    assert not (tmp_path / "sw").exists()
    f = tmp_path / "c.yaml"
    f.write_text("train: {tokens: 2e6}\n")
    base, opts = sweep_cli.settings(_parse("batch-sweep", "--config", str(f), "--out", "sw"))
    assert base.tokens == 2_000_000 and opts.out == "sw"


def test_config_file_reader_and_writer(tmp_path):
    path = tmp_path / "out.yaml"
    sections = {"model": {"preset": "gpt2-tiny", "overrides": {"n_layer": 2}}, "optimizer": {"lr": 1e-3, "eps": 1e-8}}
    write_config_file(path, sections)
    assert read_config_file(path) == sections
    assert list(yaml.safe_load(path.read_text())) == ["model", "optimizer"]  # order kept
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_config_file(empty) == {}


def test_demo_settings(tmp_path):
    f = tmp_path / "demo.yaml"
    f.write_text("demo: {synthetic: true}\ndata: {data_dir: /tmp/d}\n")
    values = DEMO_SCHEMA.values(_parse("demo", "--config", str(f), "--out", "o"))
    assert values == {"synthetic": True, "data_dir": "/tmp/d", "out": "o"}


def test_ladder_and_sweep_write_their_resolved_config(tmp_path, monkeypatch, data_dir, dataset_name):
    """The CLI writes config.yaml into the output dir; as --config it gives back the same settings.
    (Training itself is replaced: this checks the settings path, the e2e tests train.)"""
    from scalinglab.train import loop

    trained = []

    def fake_train(cfg, progress=None):
        trained.append(cfg)
        return {"status": "complete", "steps": cfg.total_steps(), "final_eval_loss": 1.0, "final_loss": 1.0}

    monkeypatch.setattr(loop, "train", fake_train)
    ladder = tmp_path / "ladder"
    argv = [
        "ladder",
        "--budgets",
        "3e11",
        "--sizes-per-budget",
        "3",
        "--lr-protocol",
        "fixed",
        "--dataset",
        dataset_name,
        "--data-dir",
        data_dir,
        "--seed",
        "4",
        "--weight-decay",
        "0.05",
        "--out",
        str(ladder),
    ]
    assert main(argv) == 0
    assert len(trained) == 3 and all((c.seed, c.weight_decay) == (4, 0.05) for c in trained)
    again = _parse("ladder", "--config", str(ladder / "config.yaml"))
    from scalinglab.data.pipeline import load_dataset

    vocab = int(load_dataset(dataset_name, data_dir).vocab_size)  # the ladder resolved it from the dataset
    by_flags, _ = ladder_cli.spec_from_args(_parse(*argv))
    assert ladder_cli.spec_from_args(again)[0] == dataclasses.replace(by_flags, vocab_size=vocab)
    assert ladder_cli.SCHEMA.values(again)["weight_decay"] == 0.05

    sweep = tmp_path / "sweep"
    argv = [
        "batch-sweep",
        "--tokens",
        "2e5",
        "--batch-sizes",
        "4,8,16",
        "--lr-rule",
        "sqrt",
        "--seq-len",
        "32",
        "--out",
        str(sweep),
    ]
    assert main(argv) == 0
    assert sweep_cli.settings(_parse("batch-sweep", "--config", str(sweep / "config.yaml"))) == sweep_cli.settings(
        _parse(*argv)
    )
