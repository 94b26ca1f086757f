"""Config files of the training commands: read YAML or JSON (one-line errors), write YAML.

``*.json`` files are read as JSON, anything else as YAML (a superset of JSON). The top level
must be a mapping; which keys are allowed is the command's :class:`~scalinglab.train.options.Schema`'s
business. Every training command writes its resolved settings as ``scalinglab.rundir.RESOLVED_CONFIG`` into its
output directory; passing that file back as ``--config`` repeats the command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError
from scalinglab.fileio import atomic_write_text


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML/JSON file; a missing file, a directory or bad syntax → UserError (one line)."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise UserError(f"--config {path}: is a directory, not a YAML or JSON file")
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read it ({type(e).__name__})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserError(f"--config {path}: not valid JSON ({e})") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise UserError(f"--config {path}: not valid YAML{where} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def write_config_file(path: str | Path, sections: Mapping[str, Any]) -> None:
    """Write ``sections`` as YAML, atomically (sections and keys in the given order)."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(dict(sections), sort_keys=False, default_flow_style=False))
