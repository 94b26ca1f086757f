"""Atomic file output: readers never see a half-written file, a crash leaves the old one."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

# A URL (``gs://bucket/x``, ``s3://...``): not a path this process can write with the OS.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def require_local(path: str | os.PathLike, flag: str) -> None:
    """Refuse a URL where scalinglab needs a local or mounted directory (a UserError: exit 2).

    Run directories are written with the OS (atomic renames, hard-linked locks) and prepared data
    is read by array_record, which opens local files only (google/array_record#120); a bucket is
    used through a mount such as gcsfuse, which is what ``scalinglab-launch-tpu`` sets up.
    """
    text = os.fspath(path)
    if isinstance(text, str) and _URL.match(text):
        from scalinglab.errors import UserError

        bucket = text.split("://", 1)[1].split("/", 1)[0] or "BUCKET"
        raise UserError(
            f"{flag} {text}: needs a local or mounted directory, not a URL; mount the bucket (e.g. "
            f"`gcsfuse --implicit-dirs {bucket} ~/gcs/{bucket}`, as scalinglab-launch-tpu does) and pass "
            f"~/gcs/{bucket}/{text.split('://', 1)[1].partition('/')[2]}"
        )


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


def outermost_missing(path: str | os.PathLike) -> Path | None:
    """The outermost of ``path`` and its ancestors that does not exist yet (``None`` when ``path``
    exists): the directory that creating ``path`` with ``parents=True`` adds, to prune on failure."""
    missing = None
    for p in (Path(path), *Path(path).parents):
        if p.exists():
            break
        missing = p
    return missing


def prune_empty_dirs(top: str | os.PathLike | None) -> None:
    """Remove ``top`` and every directory under it that holds no files (bottom-up): the parents a
    failed write created. A directory with anything in it stays."""
    if top is None or not Path(top).is_dir():
        return
    for d, _, _ in os.walk(top, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(d)


@contextlib.contextmanager
def built_in_temp_dir(final: str | os.PathLike, *, tag: str = "", merge: bool = False) -> Iterator[Path]:
    """Build a whole output directory in a temp dir beside ``final``, then swap it into place.

    ``with built_in_temp_dir(out) as tmp:`` write everything into ``tmp``; when the block ends without
    an error ``tmp`` replaces ``final`` (an old ``final`` is moved aside first and then deleted; with
    ``merge`` the entries of ``tmp`` instead replace their namesakes inside an existing ``final``,
    leaving its other files alone). On an error ``final`` is untouched, ``tmp`` is removed, and so are the empty parents
    it created.
    """
    final = Path(final)
    created = outermost_missing(final.parent)
    tmp = temp_dir_beside(final, tag)
    try:
        yield tmp
        if merge and final.is_dir():
            for entry in tmp.iterdir():
                os.replace(entry, final / entry.name)
        else:
            swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        prune_empty_dirs(created)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the finished directory ``tmp`` (from :func:`temp_dir_beside`) to ``final``; an existing
    ``final`` is first moved aside (a directory cannot be renamed onto a non-empty one), then deleted."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / "x")
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def json_safe(obj: Any, *, drop_keys: Collection[str] = ()) -> Any:
    """``obj`` as strict JSON values: numpy/JAX scalars and arrays become Python numbers and lists,
    non-finite floats ``None`` (strict JSON has no NaN/Infinity), tuples lists, dict keys strings;
    keys in ``drop_keys`` are left out at every depth."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()  # numpy/JAX arrays and scalars
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v, drop_keys=drop_keys) for k, v in obj.items() if k not in drop_keys}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, drop_keys=drop_keys) for v in obj]
    return obj


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
