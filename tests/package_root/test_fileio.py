"""Atomic outputs: ordinary permissions, nothing left behind on failure."""

import os
import stat

import pytest

from scalinglab.fileio import atomic_write_bytes, atomic_write_json, read_json, temp_dir_beside


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
