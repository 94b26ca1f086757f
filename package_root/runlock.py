"""One trainer per run directory: a lock file with owner, host, pid and a lease.

``RUN_DIR/lock.json`` = ``{"owner", "host", "pid", "token", "acquired", "lease_s", "expires"}``
(times in Unix seconds). It is created atomically (the whole file appears at once, or not at all):
on a local filesystem by hard-linking a finished temporary file onto the name, which fails when
the name exists (on a mount without hard links, such as gcsfuse, by an exclusive create); on
other ``etils.epath`` filesystems (``gs://``) by writing it when absent and
reading it back (best effort: object stores have no exclusive create).

A lock is *stale*, and is taken over, when its lease expired (the holder stopped renewing) or,
on the same host, when its pid is no longer alive. Anything else refuses the second trainer with
one line naming the owner (:class:`LockHeld`, a UserError: exit 2).

Holders renew the lease (:meth:`RunLock.renew`, or ``auto_renew`` in a daemon thread every
``lease_s / 3``); a holder whose lock was taken over (it stalled past its lease) finds out at
its next :meth:`RunLock.check` (:class:`LockLost`). The same API serves a remote executor: a
task acquires the lock of the run it trains, renews it while training, releases it when done.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from typing import Any

from scalinglab.errors import UserError
from scalinglab.fileio import default_mode

LOCK_FILE = "lock.json"
# What os.link raises on a filesystem without hard links (gcsfuse, some network mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV}
DEFAULT_LEASE_S = 300.0


class LockHeld(UserError):
    """Another live trainer holds the run directory."""


class LockLost(UserError):
    """Our lock was taken over (our lease expired) or removed: stop writing into the run."""


def _epath(path: Any):
    from etils import epath

    return epath.Path(path)


def _is_local(path) -> bool:
    return "://" not in str(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def describe(info: dict[str, Any]) -> str:
    """``owner@host pid N (lease ends in Ts)`` for messages."""
    left = float(info.get("expires", 0)) - time.time()
    return (
        f"{info.get('owner', '?')}@{info.get('host', '?')} pid {info.get('pid', '?')} "
        f"(lease {'ends in ' + format(left, '.0f') + ' s' if left > 0 else 'expired'})"
    )


def is_stale(info: dict[str, Any], *, host: str | None = None, now: float | None = None) -> bool:
    """Whether a lock's holder is gone: lease expired, or a dead pid on this host."""
    now = time.time() if now is None else now
    if float(info.get("expires", 0)) < now:
        return True
    host = socket.gethostname() if host is None else host
    return info.get("host") == host and not _pid_alive(info.get("pid", -1))


class RunLock:
    """The lock of one run directory. ``with RunLock(run_dir): ...`` or acquire()/release().

    ``lease_s``: how long the lock stays valid without a renewal. ``auto_renew``: renew from a
    daemon thread every ``lease_s / 3`` while held.
    """

    def __init__(self, run_dir, *, lease_s: float = DEFAULT_LEASE_S, owner: str | None = None, auto_renew: bool = True):
        self.path = _epath(run_dir) / LOCK_FILE
        self.lease_s = float(lease_s)
        self.auto_renew = auto_renew
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid()) if hasattr(os, "getuid") else "user"
        self.owner = owner or user
        self.host = socket.gethostname()
        self.token = uuid.uuid4().hex
        self.held = False
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io = threading.Lock()

    # ---- file helpers
    def _info(self) -> dict[str, Any]:
        now = time.time()
        return {
            "owner": self.owner,
            "host": self.host,
            "pid": os.getpid(),
            "token": self.token,
            "acquired": now,
            "lease_s": self.lease_s,
            "expires": now + self.lease_s,
        }

    def read(self) -> dict[str, Any] | None:
        """The current lock file's content (None when absent; ``{}`` when unreadable: a torn write)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def _create(self, info: dict[str, Any]) -> bool:
        """Create the lock file with ``info`` iff it does not exist; True when we created it."""
        data = json.dumps(info)
        if not _is_local(self.path):
            if self.path.exists():
                return False
            self.path.write_text(data)
            return (self.read() or {}).get("token") == self.token
        d = os.fspath(self.path.parent)
        fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, os.fspath(self.path))
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in _NO_HARD_LINKS:
                    raise
                return self._create_exclusive(data)
            return True
        finally:
            os.unlink(tmp)

    def _create_exclusive(self, data: str) -> bool:
        """Exclusive create (``O_EXCL``) of the lock file, for mounts without hard links (gcsfuse):
        the name still appears once; a reader may briefly see it empty (read as no information)."""
        try:
            fd = os.open(os.fspath(self.path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, default_mode())
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def _write(self, info: dict[str, Any]) -> None:
        if _is_local(self.path):
            from scalinglab.fileio import atomic_write_text

            atomic_write_text(os.fspath(self.path), json.dumps(info))
        else:
            self.path.write_text(json.dumps(info))

    # ---- API
    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one; LockHeld (exit 2, names the owner) otherwise."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            if self._create(self._info()):
                break
            info = self.read()
            if info is None:
                continue  # released meanwhile: try again
            if info and not is_stale(info, host=self.host):
                raise LockHeld(
                    f"{self.path.parent} is being trained by {describe(info)}; wait for it to finish, "
                    f"or stop it (a lock whose holder died is taken over automatically)"
                )
            if not info:  # unreadable: a holder mid-write, or garbage; garbage older than a lease is stale
                try:
                    age = time.time() - self.path.stat().mtime
                except FileNotFoundError:
                    continue
                if age < self.lease_s:
                    raise LockHeld(f"{self.path} is unreadable and recent; another trainer may be starting")
            self._take_over(info)
        else:
            raise LockHeld(f"could not take the lock {self.path} (contended)")
        self.held = True
        if self.auto_renew:
            self._thread = threading.Thread(target=self._renew_loop, name=f"runlock:{self.path}", daemon=True)
            self._thread.start()
        return self

    def _take_over(self, stale: dict[str, Any]) -> None:
        """Move a stale lock aside (if it is still the one we judged stale) so the next create wins."""
        aside = self.path.parent / f".{LOCK_FILE}.stale-{uuid.uuid4().hex[:8]}"
        try:
            self.path.rename(aside)
        except FileNotFoundError:
            return
        moved = None
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            pass
        if stale and isinstance(moved, dict) and moved.get("token") != stale.get("token"):
            # a live holder took it over between our read and the rename: give it back
            try:
                if _is_local(self.path):
                    try:
                        os.link(os.fspath(aside), os.fspath(self.path))
                    except OSError as e:
                        if e.errno not in _NO_HARD_LINKS:
                            raise
                        self._create_exclusive(json.dumps(moved))
                elif not self.path.exists():
                    self.path.write_text(json.dumps(moved))
            except FileExistsError:
                pass
        try:
            aside.unlink()
        except FileNotFoundError:
            pass

    def check(self) -> None:
        """Raise LockLost when the lock is no longer ours (taken over after our lease expired)."""
        if not self.held:
            return
        if self.lost is None:
            info = self.read()
            if info is None or (info and info.get("token") != self.token):
                self.lost = "removed" if info is None else f"taken over by {describe(info)}"
        if self.lost is not None:
            raise LockLost(f"lost the lock of {self.path.parent} ({self.lost}); stopped to leave it to the new holder")

    def renew(self) -> None:
        """Extend the lease by ``lease_s`` from now (LockLost when it is no longer ours)."""
        with self._io:
            self.check()
            info = self._info()
            current = self.read() or {}
            info["acquired"] = current.get("acquired", info["acquired"])
            self._write(info)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except LockLost:
                return
            except OSError:  # a full or flaky disk: try again next period (the lease has slack)
                continue

    def release(self) -> None:
        """Stop renewing and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if not self.held:
            return
        self.held = False
        with self._io:
            info = self.read()
            if info and info.get("token") == self.token:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
