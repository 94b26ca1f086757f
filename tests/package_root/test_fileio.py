"""Atomic outputs: ordinary permissions, nothing left behind on failure; strict JSON values."""

import json
import os
import stat

import numpy as np
import pytest

from scalinglab.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    built_in_temp_dir,
    json_safe,
    outermost_missing,
    prune_empty_dirs,
    read_json,
    temp_dir_beside,
)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_write_has_umask_permissions_and_replaces(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_json(tmp_path / "a.json", {"x": 2})
        d = temp_dir_beside(tmp_path / "out")
    finally:
        os.umask(old)
    assert read_json(tmp_path / "a.json") == {"x": 2}
    assert _mode(tmp_path / "a.json") == 0o644  # not mkstemp's 0o600
    assert _mode(d) == 0o755 and d.parent == tmp_path and d.name.startswith(".out.")


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    atomic_write_bytes(tmp_path / "f", b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "f", object())  # not bytes: the write fails midway
    assert (tmp_path / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_built_in_temp_dir_replaces_on_success_and_keeps_old_on_error(tmp_path):
    out = tmp_path / "out"
    with built_in_temp_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with pytest.raises(RuntimeError):
        with built_in_temp_dir(out) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("fails midway")
    assert sorted(p.name for p in out.iterdir()) == ["a"]  # old output untouched
    with built_in_temp_dir(out) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]  # replaced as a whole
    with built_in_temp_dir(out, merge=True) as tmp:
        (tmp / "c").write_text("3")
        (tmp / "b").write_text("4")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"b": "4", "c": "3"}  # merged in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old dirs left


def test_failed_build_removes_the_parents_it_created_and_only_those(tmp_path):
    keep = tmp_path / "a" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("x")
    assert outermost_missing(tmp_path / "a" / "b" / "c" / "out") == tmp_path / "a" / "b"
    assert outermost_missing(tmp_path / "a") is None
    with pytest.raises(RuntimeError), built_in_temp_dir(tmp_path / "a" / "b" / "c" / "out") as tmp:
        (tmp / "f").write_text("partial")
        raise RuntimeError("fails half way")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/keep.txt"]
    prune_empty_dirs(tmp_path / "a")  # holds a file: stays
    assert keep.read_text() == "x"


def test_json_safe_gives_strict_json_values():
    obj = {
        1: np.float32(0.5),
        "nan": float("nan"),
        "inf": np.float64(-np.inf),
        "i": np.int64(7),
        "b": np.bool_(True),
        "arr": np.array([[1.0, np.nan]]),
        "t": (1, "x", None),
        "drop": 1,
        "deep": [{"drop": 2, "k": 3}],
    }
    out = json_safe(obj, drop_keys=("drop",))
    assert out == {
        "1": 0.5,
        "nan": None,
        "inf": None,
        "i": 7,
        "b": True,
        "arr": [[1.0, None]],
        "t": [1, "x", None],
        "deep": [{"k": 3}],
    }
    assert type(out["i"]) is int and type(out["b"]) is bool
    assert json.loads(json.dumps(out, allow_nan=False)) == out
