"""Bad inputs: one line on stderr, exit 2, nothing written (issue 12, item 7)."""

import dataclasses

import pytest

from scalinglab.cli import main
from scalinglab.errors import UserError


def _one_line_exit_2(capsys, *argv) -> str:
    rc = main(list(argv))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (argv, rc, err)
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--budgets", ""], "--budgets"),
        (["--size-span", "-3"], "--size-span"),
        (["--size-span", "0"], "--size-span"),
        (["--size-span", "1"], "must be > 1"),
        (["--batch-size", "0"], "--batch-size"),
        (["--tokens-per-param", "0"], "--tokens-per-param"),
        (["--throughput", "-5"], "--throughput"),
        (["--aspect-ratio", "0"], "--aspect-ratio"),
    ],
)
def test_ladder_flags_validated_by_range(capsys, flags, message):
    line = _one_line_exit_2(capsys, "ladder", "--dry-run", "--vocab-size", "257", *flags)
    assert message in line


@pytest.mark.parametrize(
    "field, value", [("norm_eps", "-1"), ("norm_eps", "0"), ("init_std", "-0.02"), ("rope_theta", "0")]
)
def test_model_values_validated_by_range(field, value):
    from scalinglab.models.config import get_config

    with pytest.raises(UserError, match=f"{field} must be positive"):
        get_config("gpt2-tiny", {field: value})


def test_config_field_of_the_wrong_type_is_named():
    from scalinglab.train.config import TrainConfig, validate

    with pytest.raises(UserError, match="train field 'batch_size' must be int, got '32'"):
        validate(dataclasses.replace(TrainConfig(steps=1), batch_size="32"))
    with pytest.raises(UserError, match="train field 'lr' must be float or int"):
        validate(dataclasses.replace(TrainConfig(steps=1), lr=True))


@pytest.mark.parametrize(
    "rows, law",
    [
        (["1e6,1e8,3.0"] * 20, "chinchilla"),  # 20 identical rows
        ([f"1e6,{d:.0f},{2 + 1e3 / d:.6f}" for d in (1e7, 2e7, 4e7, 8e7, 1.6e8, 3.2e8)], "kaplan-n"),  # one N
        ([f"1e6,{d:.0f},{2 + 1e3 / d:.6f}" for d in (1e7, 2e7, 4e7, 8e7, 1.6e8, 3.2e8)], "chinchilla"),
    ],
)
def test_fit_that_cannot_identify_the_law_says_so(tmp_path, capsys, rows, law):
    csv = tmp_path / "runs.csv"
    csv.write_text("params,tokens,loss\n" + "\n".join(rows) + "\n")
    line = _one_line_exit_2(capsys, "fit", str(csv), "--law", law)
    assert f"cannot identify {law}" in line and "distinct N" in line


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["train", "--preset", "gpt2-tiny", "--steps", "2", "--out", "gs://bkt/runs/a"], "--out gs://bkt/runs/a"),
        (["ladder", "--dry-run", "--out", "gs://bkt/lad"], "--out gs://bkt/lad"),
        (["data", "prepare", "--dataset", "synthetic_markov", "--data-dir", "gs://bkt/data"], "--data-dir"),
        (["report", "runs", "--out", "s3://bkt/rep"], "--out s3://bkt/rep"),
    ],
)
def test_a_bucket_url_where_a_directory_is_written_is_refused(tmp_path, monkeypatch, capsys, argv, flag):
    """Not silently a local directory named 'gs:' (what pathlib makes of the URL), not a traceback:
    one line that says to mount the bucket (gcsfuse), naming the mounted path to use instead."""
    monkeypatch.chdir(tmp_path)
    line = _one_line_exit_2(capsys, *argv)
    assert flag in line and "gcsfuse --implicit-dirs bkt ~/gcs/bkt" in line
    assert list(tmp_path.iterdir()) == []


def test_a_bucket_url_as_the_data_dir_environment_variable_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCALINGLAB_DATA_DIR", "gs://bkt/data")
    line = _one_line_exit_2(capsys, "data", "stats", "--dataset", "synthetic_markov")
    assert "SCALINGLAB_DATA_DIR gs://bkt/data" in line and "~/gcs/bkt/data" in line
    assert list(tmp_path.iterdir()) == []
