"""Persistent JAX compilation cache for the command line.

A ``scalinglab`` process compiles the same XLA programs as the previous one (the fit's
batched L-BFGS, a train step of the same shape); JAX can keep the compiled executables on
disk and load them instead of compiling again. :func:`enable` switches that on for every
``scalinglab`` command (``--no-cache`` or ``SCALINGLAB_NO_CACHE=1`` switch it off).

Where: ``$XDG_CACHE_HOME/scalinglab/jax-<jax version>`` (``~/.cache`` when XDG_CACHE_HOME is
unset), so an upgrade of JAX starts a fresh directory; JAX's own key (the program's HLO,
compile options, jaxlib version, backend) decides hits inside it. Every compilation is kept
(no minimum compile time: a new process pays a few ms per tiny eager op otherwise), bounded
to ``MAX_BYTES`` by JAX's least-recently-used eviction (which also file-locks reads and
writes, so concurrent processes never read a half-written entry).

The settings go through JAX's environment variables when JAX is not imported yet (the
command line imports it lazily; a ``JAX_COMPILATION_CACHE_DIR`` the user set wins), else
through ``jax.config``.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

DISABLE_ENV = "SCALINGLAB_NO_CACHE"
MAX_BYTES = 4 << 30


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/scalinglab/jax-<version>`` (``~/.cache/...`` without XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scalinglab" / f"jax-{importlib.metadata.version('jax')}"


def disabled_by_env() -> bool:
    """True when ``SCALINGLAB_NO_CACHE`` is set to anything but ``""``/``0``."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def _settings(path: Path) -> dict[str, object]:
    try:
        import filelock  # noqa: F401 - JAX's size-bounded cache locks entries with it

        max_bytes = MAX_BYTES
    except ImportError:
        max_bytes = -1
    return {
        "jax_compilation_cache_dir": str(path),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": -1,
        "jax_compilation_cache_max_size": max_bytes,
    }


def enable(path: str | os.PathLike | None = None) -> Path | None:
    """Use the persistent cache at ``path`` (default :func:`cache_dir`) in this process.

    Returns the directory, or None when ``SCALINGLAB_NO_CACHE`` disables the cache. A cache
    that cannot be written (read-only home) only costs the compile: JAX warns and goes on.
    """
    if disabled_by_env():
        return None
    path = Path(path) if path is not None else cache_dir()
    settings = _settings(path)
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:  # a cache directory the user chose through JAX's own variable wins
        for name, value in settings.items():
            os.environ.setdefault(name.upper(), str(value))
    return path
