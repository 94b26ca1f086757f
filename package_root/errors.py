"""User-facing errors: raised anywhere, printed by the CLI as one line with exit code 2; and the
recognition of a full disk however a library reports it (exit 1)."""

import errno

# How a full disk or quota shows in the text of errors that do not carry an errno (orbax's
# ValueError, tensorstore/array_record RuntimeErrors).
DISK_FULL_MARKERS = (
    "No space left on device",
    "os_error_code='28'",
    "[Errno 28]",
    "Disk quota exceeded",
    "[Errno 122]",
)


def is_disk_full(e: BaseException | None) -> bool:
    """Whether ``e`` or anything in its cause/context chain is a full disk or quota."""
    visited = set()
    while e is not None and id(e) not in visited:
        visited.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(e) for m in DISK_FULL_MARKERS):
            return True
        e = e.__cause__ or e.__context__
    return False


class UserError(Exception):
    """Bad input from the user (unknown preset, malformed table, missing data...).

    The CLI prints ``scalinglab: error: <message>`` on stderr and exits with code 2;
    no traceback, no partial output files.
    """


class Interrupted(Exception):
    """A SIGTERM or SIGINT stopped the work after the current run was checkpointed.

    The CLI prints one line and exits with ``128 + signum`` (143 for SIGTERM, 130 for SIGINT);
    ladders and sweeps never start their next run after one.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def stop_if_signalled(summary: dict, what: str) -> None:
    """Raise :class:`Interrupted` when a run's result says a signal stopped (or arrived during) it."""
    signum = summary.get("signal") if isinstance(summary, dict) else None
    if signum:
        step = summary.get("steps")
        raise Interrupted(
            int(signum),
            f"stopped by signal {int(signum)} during {what}"
            f"{f' (checkpoint at step {step})' if step is not None else ''}; "
            f"rerun the same command to resume",
        )
