"""Passes over the training data: counted in the plan (``ladder --dry-run``), refused for a ladder
preset on a dataset too small for it unless ``--allow-repeat``, and reported."""

import json

import pytest

from scalinglab.cli import main

MARKOV = {"vocab": 6, "order": 1, "train_docs": 10, "validation_docs": 2, "doc_length": 299}  # 3000 train tokens


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from scalinglab.data import pipeline

    data_dir = tmp_path_factory.mktemp("epochs_data")
    ds = pipeline.prepare_dataset("synthetic_markov/epochs", data_dir, MARKOV)
    assert ds.n_tokens("train") == 3000 and ds.vocab_size == 7
    return str(data_dir)


def test_epochs_closed_form():
    from scalinglab.data.prepared import epochs

    # 3000 stream tokens hold 3000 // 65 = 46 windows of seq_len 64 (+1); 23 batches of 4 read 92 of them
    assert epochs(3000, 64, 4, 23) == pytest.approx(2.0)
    assert epochs(3000, 64, 4, 11) == pytest.approx(44 / 46)
    assert epochs(10, 64, 4, 1) == float("inf")


def _ladder(tiny, *extra):
    return ["ladder", "--dataset", "synthetic_markov/epochs", "--data-dir", tiny, "--dry-run", *extra]


def test_dry_run_lists_epochs_per_run(tiny, capsys):
    args = _ladder(
        tiny, *"--plan sizes --sizes 2e3 --tokens 1.1e5,4.4e5 --lr-protocol fixed --seq-len 64 --batch-size 16".split()
    )
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr()
    runs = json.loads(out.out)
    assert [r["steps"] for r in runs] == [107, 430]  # round(D / (16 * 64))
    for r in runs:
        assert r["epochs"] == pytest.approx(r["steps"] * 16 / (3000 // 65))
        assert r["config"]["vocab_size"] == 7  # from the dataset
    assert "the data repeats" in out.err
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "epochs" in table.splitlines()[0] and f"{107 * 16 / 46:.2f}" in table
    assert "2 of 2 runs read the training data more than once" in table


def test_ladder_preset_needs_enough_data_or_allow_repeat(tiny, capsys, tmp_path):
    out = tmp_path / "ladder"
    for dry in ([], ["--dry-run"]):
        argv = [
            "ladder",
            "--ladder-preset",
            "gpu-h100",
            "--dataset",
            "synthetic_markov/epochs",
            "--data-dir",
            tiny,
            "--out",
            str(out),
            *dry,
        ]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--allow-repeat" in err and "epochs of the 3,000" in err
        assert not out.exists()
    assert main(_ladder(tiny, "--ladder-preset", "gpu-h100", "--allow-repeat", "--json")) == 0
    runs = json.loads(capsys.readouterr().out)
    assert all(r["epochs"] > 1 and r["config"]["vocab_size"] == 7 for r in runs)
    # without a prepared dataset the plan still prints, epochs unknown
    assert (
        main(
            [
                "ladder",
                "--ladder-preset",
                "gpu-h100",
                "--dataset",
                "files/none",
                "--data-dir",
                tiny,
                "--dry-run",
                "--json",
            ]
        )
        == 0
    )
    assert all(r["epochs"] is None for r in json.loads(capsys.readouterr().out))


def test_report_names_repeated_runs(tmp_path):
    from scalinglab.scaling.report_fits import repeated_data

    for name, epochs in (("a", 0.5), ("b", 3.25), ("c", None), ("d", 1.0)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"name": f"run-{name}", "data": {"epochs": epochs}}))
    assert repeated_data(tmp_path) == {"run-b": 3.25}
