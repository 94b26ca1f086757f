"""Type checks of config dataclasses: a value of the wrong type (``"batch_size": "32"`` in a config
file, a list where a number belongs) is one UserError naming the field, not a traceback later."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from scalinglab.errors import UserError


def _allowed(hint: Any) -> tuple[type, ...] | None:
    """The runtime types a field annotation admits (None: anything)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(hint):
            sub = _allowed(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (int, float)  # an integer is a fine float
    if hint in (int, str, bool):
        return (hint,)
    if origin in (dict, list, tuple) or hint in (dict, list, tuple):
        return (origin or hint,)
    return None


def check_field_types(obj: Any, what: str = "config") -> None:
    """Raise UserError when a field of the dataclass ``obj`` holds a value its annotation does not admit."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        allowed = _allowed(hints.get(field.name))
        value = getattr(obj, field.name)
        if allowed is None:
            continue
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in allowed}))
            raise UserError(f"{what} field {field.name!r} must be {names}, got {value!r} ({type(value).__name__})")
