"""``scalinglab data prepare|stats``: output contract and error paths (exit 2, one line)."""

import json

from scalinglab.cli import main


def test_prepare_and_stats_json(tmp_path, capsys):
    rc = main(
        [
            "data",
            "prepare",
            "--dataset",
            "synthetic_markov/cli",
            "--data-dir",
            str(tmp_path),
            "--config",
            "train_docs=3",
            "--config",
            "validation_docs=2",
            "--config",
            "doc_length=40",
            "--config",
            "vocab=5",
            "--json",
        ]
    )
    assert rc == 0
    prepared = json.loads(capsys.readouterr().out)  # stdout is pure JSON
    assert prepared["splits"]["train"] == {"documents": 3, "document_tokens": 120, "tokens": 123}
    rc = main(
        [
            "data",
            "stats",
            "--dataset",
            "synthetic_markov/cli",
            "--data-dir",
            str(tmp_path),
            "--json",
            "--seq-len",
            "8",
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["vocab_size"] == 6 and s["separator_id"] == 5 and s["tokenizer"] == "ids"
    assert s["total_tokens"] == 123 + 82
    assert s["entropy_rate"] > 0 and len(s["conditional_entropies"]) == 3
    b = s["batching"]
    assert b["tokens_per_batch"] == 32 and b["stream_tokens_per_batch"] == 36
    assert b["windows_per_epoch"] == 123 // 9 and b["batches_per_epoch"] == (123 // 9) // 4
    h1, e = s["conditional_entropies"][1], s["entropy_rate"]
    assert abs(b["window_entropy"] - (h1 + 7 * e) / 8) < 1e-12
    rc = main(["data", "stats", "--dataset", "synthetic_markov/cli", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "entropy_rate" in out and "123 tokens" in out


def test_stats_missing_dataset_names_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCALINGLAB_DATA_DIR", str(tmp_path))
    assert main(["data", "stats", "--dataset", "local_text"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "scalinglab data prepare --dataset local_text" in lines[0]
    assert str(tmp_path) in lines[0]  # the data dir came from the environment variable


def test_prepare_bad_input_exits_2(tmp_path, capsys):
    assert main(["data", "prepare", "--dataset", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "unknown dataset builder" in capsys.readouterr().err
    assert (
        main(["data", "prepare", "--dataset", "synthetic_markov", "--data-dir", str(tmp_path), "--config", "order=x"])
        == 2
    )
    assert "order" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                "--dataset",
                "local_text/x",
                "--data-dir",
                str(tmp_path),
                "--config",
                f"root={tmp_path / 'nothing'}",
            ]
        )
        == 2
    )
    assert "not a directory" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "prepare",
                "--dataset",
                "synthetic_markov",
                "--data-dir",
                str(tmp_path),
                "--config",
                "tokenizer=bpe",
            ]
        )
        == 2
    )
    capsys.readouterr()
    # nothing half-written is left behind
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
