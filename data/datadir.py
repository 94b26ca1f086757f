"""Where prepared datasets live on disk.

Resolution order (the contract in docs/interfaces.md): an explicit ``data_dir``
argument (the CLI's ``--data-dir``), else the environment variable
``SCALINGLAB_DATA_DIR``, else ``~/.cache/scalinglab/data`` (``$XDG_CACHE_HOME`` is
honoured when set). It is a local or mounted directory: array_record reads local files only, so a
``gs://`` bucket is mounted (gcsfuse) and a URL is refused with one line.

A dataset name is ``BUILDER`` or ``BUILDER/VARIANT`` (TFDS style, e.g. ``local_text``,
``local_text/bpe``, ``synthetic_markov``); it is stored under
``<data_dir>/<BUILDER>/<VARIANT or "default">/``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from scalinglab.errors import UserError
from scalinglab.fileio import require_local

ENV_VAR = "SCALINGLAB_DATA_DIR"
DEFAULT_VARIANT = "default"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data dir: ``data_dir`` if given, else ``$SCALINGLAB_DATA_DIR``, else the user cache."""
    if data_dir:
        require_local(data_dir, "--data-dir")
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        require_local(env, ENV_VAR)
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "scalinglab" / "data"


def split_name(name: str) -> tuple[str, str]:
    """``"builder/variant"`` → ``("builder", "variant")``; a bare builder gets variant ``default``."""
    parts = name.split("/") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(_PART.match(p) for p in parts):
        raise UserError(
            f"bad dataset name {name!r}: expected BUILDER or BUILDER/VARIANT (letters, digits, '_', '-', '.')"
        )
    return parts[0], parts[1] if len(parts) == 2 else DEFAULT_VARIANT


def dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Directory holding the prepared dataset ``name`` (it need not exist)."""
    builder, variant = split_name(name)
    return resolve_data_dir(data_dir) / builder / variant
