"""The ``scalinglab`` command: one entry point, one subcommand per job.

Each sub-package contributes its subcommands through a ``register(subparsers)``
function in its own ``cli`` module; this file only wires them together and turns
:class:`scalinglab.errors.UserError` (and argparse errors) into one line on
stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from scalinglab import compile_cache, host_malloc, platforms
from scalinglab.errors import Interrupted, UserError
from scalinglab.fileio import require_local

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    "scalinglab.models.cli",  # params, flops
    "scalinglab.data.cli",  # data prepare|stats
    "scalinglab.train.cli",  # train
    "scalinglab.train.sweep_cli",  # batch-sweep
    "scalinglab.train.ladder_cli",  # ladder, demo
    "scalinglab.train.aot_cli",  # aot
    "scalinglab.scaling.cli",  # fit
    "scalinglab.scaling.batch_cli",  # fit-batch
    "scalinglab.scaling.report_cli",  # report
    "scalinglab.benchmarks.cli",  # bench
)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def parse_set(items: Sequence[str] | None) -> dict[str, str]:
    """Parse repeated ``--set key=value`` arguments into a dict of raw strings."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key] = value.strip()
    return out


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (the ``--json`` contract of every subcommand)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def build_parser() -> Parser:
    parser = Parser(
        prog="scalinglab",
        description="Train transformer size ladders and fit scaling laws.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for command in _leaf_parsers(parser):
        command.add_argument(
            "--no-cache",
            action="store_true",
            help="do not use the persistent JAX compilation cache (~/.cache/scalinglab/jax-*)",
        )
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run (``data prepare``, not ``data``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [parser]
    return [leaf for a in subs for p in dict.fromkeys(a.choices.values()) for leaf in _leaf_parsers(p)]


# The flags that name a directory scalinglab writes: local or mounted, never a URL.
_DIRECTORY_FLAGS = {"out": "--out", "plot": "--plot", "data_dir": "--data-dir"}


def main(argv: Sequence[str] | None = None) -> int:
    platforms.skip_absent_tpu()  # before anything imports JAX, which reads JAX_PLATFORMS once
    if platforms.runs_on_cpu():  # before JAX starts its threads
        host_malloc.keep_freed_memory()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "no_cache", False):
        compile_cache.enable()
    try:
        for attr, flag in _DIRECTORY_FLAGS.items():
            if isinstance(getattr(args, attr, None), str):
                require_local(getattr(args, attr), flag)
        rc = args.func(args)
    except UserError as e:
        sys.stderr.write(f"scalinglab {args.command}: error: {e}\n")
        return 2
    except Interrupted as e:
        sys.stderr.write(f"scalinglab {args.command}: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("scalinglab: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - re-raised unless it is (or wraps) a known OSError
        rc = os_error_exit_code(e)
        if rc is None:
            raise
        sys.stderr.write(f"scalinglab {args.command}: error: {describe_os_error(e, args.command)}\n")
        if rc == 1 and argv is None:  # the command line itself: skip the interpreter shutdown, where
            sys.stderr.flush()  # orbax's abandoned writer threads would print their own tracebacks
            sys.stdout.flush()
            os._exit(rc)
        return rc
    return int(rc or 0)


# OSErrors that are the user's input (a path that cannot be written): one line, exit 2.
_USER_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOTDIR,
    errno.EISDIR,
    errno.EEXIST,
    errno.ENOENT,
    errno.ENAMETOOLONG,
    errno.ELOOP,
}
# Resource exhaustion (disk full, quota): one line, exit 1 (the run's last checkpoint stays valid).
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ETIMEDOUT}


def os_error_exit_code(e: BaseException) -> int | None:
    """2 for a path the user gave that cannot be used, 1 for a full disk, None for anything else."""
    seen = set()
    while isinstance(e, BaseException) and id(e) not in seen:  # orbax and others wrap the OSError
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _RESOURCE_ERRNOS:
            return 1
        if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
            return 2
        e = e.__cause__ or e.__context__
    return None


# The commands that train: after a full disk their newest checkpoint is still the one to resume from.
_TRAINING_COMMANDS = ("train", "ladder", "batch-sweep", "demo")


def describe_os_error(e: BaseException, command: str = "") -> str:
    """One line for an OSError: what failed and on which path (``disk full`` for ENOSPC; for a
    training ``command`` it adds that the last checkpoint is intact)."""
    while not (isinstance(e, OSError) and e.errno is not None) and (e.__cause__ or e.__context__):
        e = e.__cause__ or e.__context__
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {e.filename}" if e.filename else ""
        intact = " (the last checkpoint is intact)" if command in _TRAINING_COMMANDS else ""
        return f"disk full{where} ({e.strerror}); free space and rerun{intact}"
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
