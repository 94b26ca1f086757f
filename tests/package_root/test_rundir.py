"""The run directory's one metrics reader: a torn last line is dropped, corruption elsewhere is an error."""

import json
import math

import pytest

from scalinglab.errors import UserError
from scalinglab.rundir import METRICS_FILE, finite_or, is_complete, is_run_dir, read_metrics


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_metrics_drops_only_a_torn_last_line(tmp_path):
    rows = [{"step": 1, "loss": 3.5}, {"step": 2, "loss": 3.25}]
    body = "".join(json.dumps(r) + "\n" for r in rows)
    _write(tmp_path / METRICS_FILE, body + '{"step": 3, "lo')  # killed mid-write
    assert read_metrics(tmp_path) == rows  # the run directory or the file itself
    assert read_metrics(tmp_path / METRICS_FILE) == rows
    _write(tmp_path / METRICS_FILE, body + "\n  \n")  # blank lines are not records
    assert read_metrics(tmp_path) == rows
    assert read_metrics(tmp_path / "missing") == []


def test_read_metrics_refuses_a_corrupt_line_before_the_last(tmp_path):
    path = _write(tmp_path / METRICS_FILE, '{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(UserError, match=rf"{METRICS_FILE}:2: malformed JSON line"):
        read_metrics(path)


def test_run_dir_and_complete(tmp_path):
    assert not is_run_dir(tmp_path) and not is_complete(tmp_path)
    for name in ("config.json", "metrics.jsonl"):
        (tmp_path / name).write_text("{}")
    assert is_run_dir(tmp_path) and not is_complete(tmp_path)
    (tmp_path / "summary.json").write_text("{}")
    assert is_complete(tmp_path)


def test_finite_or_keeps_finite_numbers_only():
    assert finite_or(2) == 2.0 and finite_or("0.5") == 0.5
    assert [finite_or(v, -1.0) for v in (None, "x", float("nan"), float("inf"), [1])] == [-1.0] * 5
    assert math.isnan(finite_or(None))
