"""Atomic file output: readers never see a half-written file, a crash leaves the old one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def default_mode(base: int = 0o666) -> int:
    """The permissions a plain ``open()`` (``base`` 0o666) or ``mkdir`` (0o777) would give under
    the process umask; temp files and dirs are 0o600/0o700, which outputs should not keep."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def temp_dir_beside(path: str | os.PathLike, tag: str = "") -> Path:
    """A new hidden directory next to ``path`` (same filesystem, so ``os.replace`` onto ``path``
    is atomic), with ordinary directory permissions (``mkdtemp`` alone gives 0o700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{tag}", dir=path.parent))
    os.chmod(tmp, default_mode(0o777))
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
