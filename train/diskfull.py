"""Disk full during training: one clear error instead of orbax's background-thread tracebacks and hangs.

* :func:`~scalinglab.errors.is_disk_full` recognises ENOSPC/EDQUOT however it arrives (an ``OSError``, or orbax's
  ``ValueError: RESOURCE_EXHAUSTED ... No space left on device [os_error_code='28']``);
* :func:`translate` turns it into :class:`DiskFull` (an ``OSError`` with ``errno.ENOSPC``: the CLI
  prints one line and exits 1);
* :func:`quiet_background_errors` drops the log records and thread tracebacks that orbax's async
  writers emit for the same failure (remembered in :data:`seen`, re-raised by the main thread);
* :func:`wait_with_watchdog` bounds a blocking wait (orbax's ``wait_until_finished``), so a save
  that never finishes ends in an error rather than a hang.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

from scalinglab.errors import DISK_FULL_MARKERS, is_disk_full

# Default bound on one checkpoint wait, seconds (env SCALINGLAB_CHECKPOINT_TIMEOUT_S overrides).
DEFAULT_TIMEOUT_S = 1800.0
seen: list[str] = []  # disk-full messages swallowed from background threads / logs


class DiskFull(OSError):
    """No space left where the run writes (checkpoints, metrics): exit 1, the last checkpoint intact."""

    def __init__(self, path: Any, detail: str = ""):
        super().__init__(errno.ENOSPC, "No space left on device", str(path))
        self.detail = detail


class SaveTimeout(OSError):
    """A checkpoint save did not finish within the watchdog's bound."""


def translate(path: Any, fn: Callable[[], Any]) -> Any:
    """``fn()``, with a full disk re-raised as :class:`DiskFull` naming ``path``."""
    try:
        return fn()
    except DiskFull:
        raise
    except Exception as e:  # noqa: BLE001 - only disk-full is translated, the rest re-raised as is
        if is_disk_full(e):
            raise DiskFull(path, str(e).splitlines()[0] if str(e) else "") from None
        raise


# The loggers orbax's failed saves reach (a logger's filter sees only records logged to it, not
# those its children propagate): asyncio logs "Task exception was never retrieved" for them.
NOISY_LOGGERS = ("absl", "orbax", "asyncio", "")

# The error asyncio raises when an abandoned orbax save's tensorstore future completes after its
# event loop has closed (only ever a consequence of a failed save; printed from C with no header).
_LOOP_CLOSED = "Event loop is closed"


def _is_noise(exc: BaseException | None) -> bool:
    """A disk-full error, or the loop-closed error of an abandoned async save."""
    return is_disk_full(exc) or (isinstance(exc, RuntimeError) and _LOOP_CLOSED in str(exc))


def _remember(exc: BaseException | None, msg: str = "") -> None:
    text = msg or (str(exc).splitlines()[0] if exc is not None and str(exc) else "disk full")
    if is_disk_full(exc) or any(m in text for m in DISK_FULL_MARKERS):
        seen.append(text)


class _DropDiskFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if any(m in msg for m in DISK_FULL_MARKERS) or _LOOP_CLOSED in msg or _is_noise(exc):
            _remember(exc, msg.splitlines()[0] if msg else "")
            return False
        return True


@contextlib.contextmanager
def quiet_background_errors():
    """While training: orbax's disk-full log records and thread tracebacks are recorded, not printed.

    Disk-full errors from orbax's threads are remembered in :data:`seen` (the main thread raises
    :class:`DiskFull`); the 'Event loop is closed' errors of its abandoned saves are dropped. After a
    full disk the hooks stay installed until the process exits: the abandoned threads keep failing.
    """
    seen.clear()
    filt = _DropDiskFull()
    loggers = [logging.getLogger(n) for n in NOISY_LOGGERS]
    for lg in loggers:
        lg.addFilter(filt)
    previous_hook = threading.excepthook
    previous_unraisable, previous_except = sys.unraisablehook, sys.excepthook

    def swallow(exc_value: BaseException | None) -> bool:
        if _is_noise(exc_value):
            _remember(exc_value)
            return True
        return False

    threading.excepthook = lambda a: swallow(a.exc_value) or previous_hook(a)
    sys.unraisablehook = lambda u: swallow(u.exc_value) or previous_unraisable(u)
    sys.excepthook = lambda t, v, tb: swallow(v) or previous_except(t, v, tb)  # PyErr_Print from C callbacks
    disk_full = False
    try:
        yield
    except BaseException as e:
        disk_full = is_disk_full(e)
        raise
    finally:
        if not (seen or disk_full):
            threading.excepthook = previous_hook
            sys.unraisablehook, sys.excepthook = previous_unraisable, previous_except
            for lg in loggers:
                lg.removeFilter(filt)


def wait_with_watchdog(fn: Callable[[], Any], path: Any, timeout_s: float | None = None) -> None:
    """Run the blocking ``fn`` in a daemon thread; DiskFull/its error when it fails, SaveTimeout when
    it has not returned after ``timeout_s`` (the thread is abandoned; the process should exit)."""
    if timeout_s is None:
        timeout_s = float(os.environ.get("SCALINGLAB_CHECKPOINT_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    box: dict[str, BaseException] = {}

    def target():
        try:
            translate(path, fn)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e

    t = threading.Thread(target=target, name="checkpoint-wait", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        if seen:
            raise DiskFull(path, seen[0])
        raise SaveTimeout(errno.ETIMEDOUT, f"checkpoint save did not finish within {timeout_s:.0f} s", str(path))
    if "error" in box:
        raise box["error"]
    if seen:
        raise DiskFull(path, seen[0])
