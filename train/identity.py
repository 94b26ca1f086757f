"""A run's identity is immutable: what a resume, a ladder rerun or a sweep rerun may change.

A run that has trained (logged a step or saved a checkpoint) is defined by its ``config.json``;
resuming it with a request that changes the model, the data stream, the step count or the
optimisation would splice two different runs into one log, so it is refused before anything is
written, with one line naming the fields. Only these settings may change on resume:

* cadences and bookkeeping: ``eval_every``, ``log_every``, ``checkpoint_every``,
  ``keep_checkpoints``, ``max_bad_steps``, ``name``, ``out``, ``resume``;
* where things are and how the same math is laid out: ``data_dir``, ``mesh``, ``grad_accum``,
  ``eval_batch_size`` (evaluation batches are the same rows in other groupings).

A run that never trained (it failed before its first step) binds nothing and is started afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError

SAFE_TRAIN_FIELDS = frozenset(
    {
        "eval_every",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
        "max_bad_steps",
        "name",
        "out",
        "resume",
        "data_dir",
        "mesh",
        "grad_accum",
        "eval_batch_size",
    }
)
# Sections of config.json that define the run (accounting follows from model + seq_len).
_SECTIONS = ("model", "train", "data")


def config_diff(
    saved: Mapping[str, Any], requested: Mapping[str, Any], safe: Iterable[str] = SAFE_TRAIN_FIELDS
) -> list[str]:
    """Dotted names (``model.d_model``, ``train.lr``) whose values differ, safe train fields aside."""
    safe = set(safe)
    out = []
    for section in _SECTIONS:
        a, b = saved.get(section) or {}, requested.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if section == "train" and key in safe:
                continue
            if section == "train" and key == "overrides":
                if _norm(typed_or_given(a.get(key))) != _norm(typed_or_given(b.get(key))):
                    out.append(f"{section}.{key}")
                continue
            if _norm(a.get(key)) != _norm(b.get(key)):
                out.append(f"{section}.{key}")
    return out


def typed_or_given(overrides: Any) -> Any:
    """Model overrides in their fields' declared types (run and sweep directories written before
    ``--set`` values were typed hold texts such as ``"1"``); as given when they do not convert."""
    from scalinglab.models.config import typed_overrides

    if not isinstance(overrides, Mapping):
        return overrides
    try:
        return typed_overrides(overrides)
    except UserError:
        return overrides


def _norm(v: Any) -> Any:
    """JSON round-trip form (tuples as lists, ints as floats where equal) for comparison."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    return v


def _show(d: Mapping[str, Any], dotted: str) -> str:
    section, key = dotted.split(".", 1)
    return repr((d.get(section) or {}).get(key))


def check_resume(run_dir: str | Path, requested: Mapping[str, Any], saved: Mapping[str, Any] | None) -> None:
    """Refuse (UserError, exit 2) resuming the run in ``run_dir`` (saved ``config.json`` content
    ``saved``) with a ``requested`` config.json that differs in anything but the safe fields."""
    if saved is None:
        return
    diff = config_diff(saved, requested)
    if diff:
        shown = ", ".join(f"{d} {_show(saved, d)} -> {_show(requested, d)}" for d in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise UserError(
            f"{run_dir} was trained with other settings; a resume may not change {shown}{more}. "
            f"Start a new run with another --out"
        )


def plan_diff(saved_runs: list[dict], requested_runs: list[dict]) -> list[str]:
    """``<run>.<field>`` for every same-named run whose planned settings differ."""
    saved = {r.get("name"): r for r in saved_runs if isinstance(r, dict)}
    out = []
    for r in requested_runs:
        old = saved.get(r.get("name"))
        if old is None:
            continue
        for key in sorted(set(old) | set(r)):
            if _norm(old.get(key)) != _norm(r.get(key)):
                out.append(f"{r['name']}.{key}")
    return out


def train_kwargs_diff(saved: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Shared training settings of a ladder that differ, safe fields aside."""
    keys = (set(saved) | set(requested)) - SAFE_TRAIN_FIELDS
    return sorted(k for k in keys if _norm(saved.get(k)) != _norm(requested.get(k)))
