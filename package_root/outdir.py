"""Output directories that never destroy inputs.

Every command that writes a directory (``report``, ``fit --plot``, ``fit-batch --plot``, ``demo``,
``ladder``, ``batch-sweep``) first calls :func:`check_out_dir`, before any work:

* an ``--out`` under a file, or in a directory we cannot write, is refused (one line, exit 2);
* an ``--out`` that exists and is not ours is refused unless ``force``. A directory is *ours* when
  it holds the marker file :data:`MARKER` written by the same kind of command, when it is empty, or
  when every entry in it is a name this command writes (outputs of versions before the marker);
* a directory that holds training runs is never ours for a command of another kind.

Writers that produce a finished set of files (reports, figures) build them in a temporary
directory beside the target and :func:`swap_in` only those names: nothing else in the directory
is touched, even under ``force``. The marker lists the files written, so a later run of the same
command removes its own stale files (a figure not drawn this time) and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_json, temp_dir_beside

MARKER = ".scalinglab.json"
# Files whose presence makes a directory a training run, a ladder or a sweep.
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "checkpoints", "plan.json", "sweep.json")


def read_marker(directory: str | os.PathLike) -> dict | None:
    """The marker's content (``{"kind", "files"}``), or None when absent or unreadable."""
    try:
        with open(Path(directory) / MARKER, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(directory: str | os.PathLike, kind: str, files: Iterable[str] = ()) -> None:
    """Name ``directory`` as the output of a scalinglab ``kind`` command that wrote ``files``."""
    atomic_write_json(Path(directory) / MARKER, {"kind": kind, "files": sorted(files)})


def holds_runs(directory: str | os.PathLike) -> bool:
    """True when ``directory`` is, or directly contains, a run, ladder or sweep directory."""
    d = Path(directory)
    if any((d / name).exists() for name in RUN_FILES):
        return True
    try:
        children = [c for c in d.iterdir() if c.is_dir()]
    except OSError:
        return False
    return any((c / name).exists() for c in children for name in RUN_FILES)


def run_started(run_dir: str | os.PathLike) -> bool:
    """Whether a run directory has trained (logged a step, saved a checkpoint or finished); a run
    that failed before its first step has not, and its files bind nothing."""
    d = Path(run_dir)
    try:
        if (d / "summary.json").exists() or (d / "metrics.jsonl").stat().st_size > 0:
            return True
    except OSError:
        pass
    ckpt = d / "checkpoints"
    try:
        return ckpt.is_dir() and any(c.name[:1].isdigit() for c in ckpt.iterdir())
    except OSError:
        return False


def _check_writable_parent(out: Path, flag: str) -> None:
    """The nearest existing ancestor of ``out`` must be a directory we can write into."""
    parent = out.absolute().parent
    while not parent.exists():
        if parent.is_symlink():  # a dangling link
            raise UserError(f"{flag} {out}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {out}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK) and not out.exists():
        raise UserError(f"{flag} {out}: cannot create it, {parent} is not writable")


def is_ours(out: str | os.PathLike, kind: str, owned: Iterable[str] = (), signature: str | None = None) -> bool:
    """Whether an existing directory ``out`` may be written by a ``kind`` command (see module doc);
    ``signature``: a file that marks this kind's output written before markers existed (``plan.json``)."""
    out = Path(out)
    marker = read_marker(out)
    if marker is not None:
        return marker.get("kind") == kind
    if signature is not None and (out / signature).exists():
        return True
    owned = set(owned) | {MARKER}
    # a marker being written (fileio's atomic temp file): a second driver starting on the same new directory
    in_flight = lambda name: name.startswith(f".{MARKER}.") and name.endswith(".tmp")  # noqa: E731
    return all(e.name in owned or in_flight(e.name) for e in out.iterdir())


def check_out_dir(
    out: str | os.PathLike,
    kind: str,
    *,
    owned: Iterable[str] = (),
    signature: str | None = None,
    force: bool | None = False,
    flag: str = "--out",
) -> bool:
    """Refuse an output directory this ``kind`` of command must not write (UserError, exit 2).

    ``owned``: names this command writes (an existing directory holding only those is ours).
    ``signature``: see :func:`is_ours`. ``force``: write into a directory that is not ours anyway (only our
    own names get replaced); None when the command offers no ``--force``.
    Returns whether the directory is ours (new, empty, marked or legacy output), i.e. may be marked.
    """
    out = Path(out)
    _check_writable_parent(out, flag)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"{flag} {out}: exists and is not a directory")
        if not os.access(out, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {out}: directory is not writable")
        if is_ours(out, kind, owned, signature):
            return True
        if not force:
            what = "holds training runs" if holds_runs(out) else "exists and was not written by scalinglab " + kind
            hint = (
                ""
                if force is None
                else (f" (or pass --force to write only {kind}'s own files into it, replacing nothing else)")
            )
            raise UserError(f"{flag} {out} {what}; choose another directory{hint}")
        return False
    return True


def swap_in(tmp: str | os.PathLike, out: str | os.PathLike, kind: str, *, mark: bool = True) -> list[str]:
    """Move every entry of the finished temporary directory ``tmp`` into ``out``; returns their names.

    A new ``out`` is the renamed ``tmp`` (atomic). An existing one gets each entry replaced by
    name (``os.replace``; a directory entry is moved aside first, then deleted), so files that are
    not ours are never touched. With ``mark``, the marker records the names; names listed by a
    previous marker of the same kind but not written now are removed (our own stale outputs).
    ``tmp`` is gone afterwards.
    """
    tmp, out = Path(tmp), Path(out)
    names = sorted(e.name for e in tmp.iterdir() if e.name != MARKER)
    try:
        if not out.exists():
            if mark:
                write_marker(tmp, kind, names)
            os.replace(tmp, out)
            return names
        old = read_marker(out) if mark else None
        trash = temp_dir_beside(out, "old-")
        try:
            for name in names:
                target = out / name
                if target.is_dir() and not target.is_symlink():
                    os.replace(target, trash / name)
                os.replace(tmp / name, target)
            if old is not None and old.get("kind") == kind:
                for name in set(old.get("files") or ()) - set(names):
                    stale = out / str(name)
                    if os.sep not in str(name) and stale.exists() and stale.parent == out:
                        os.replace(stale, trash / stale.name)
            if mark:
                write_marker(out, kind, names)
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def mark_out_dir(out: str | os.PathLike, kind: str, ours: bool) -> None:
    """Create ``out`` (a directory commands add to over time: ladders, sweeps, demos) and mark it
    as ``kind``'s output when it is ours (``check_out_dir``'s answer) and not marked yet."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if ours and read_marker(out) is None:
        write_marker(out, kind)
