"""Flags and config-file keys generated from dataclass fields: each setting is declared once.

A setting is a dataclass field declared with :func:`option`; its metadata holds the help text
and the config-file section it belongs to::

    lr: float = option(1e-3, "peak learning rate", section="optimizer")

A :class:`Schema` lists, for one command, the dataclasses (:class:`Part`) whose fields it
exposes. From them it generates one flag per field (``seq_len`` → ``--seq-len``, default None
so that an absent flag never overrides a config file), reads ``--config FILE`` (YAML or JSON,
keys nested by section: ``optimizer: {lr: 3e-3}``), merges defaults ← file ← flags, and turns
built objects back into the nested dict that is written as the command's resolved config.

Flag form by field type (``option`` metadata can change each):

* ``int`` / ``float`` / ``str``: ``--name VALUE`` (``choices`` from metadata);
* ``bool`` defaulting to False: ``--name``; defaulting to True: ``--no-name``;
* ``tuple[T, ...]``: ``--name a,b,c``;
* anything else (dicts): a ``parse`` function in the metadata turns the flag's text (and a
  config file's value) into the field's value, raising :class:`UserError` on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scalinglab.errors import UserError

_META = "scalinglab.option"
# Config-file sections in the order help texts and written configs list them (others follow).
SECTION_ORDER = ("ladder", "sweep", "demo", "model", "data", "optimizer", "train")
# A run directory's config.json (written by the training loop) is accepted as --config: its
# "train" object holds the TrainConfig fields, flat. It is recognised by these two keys.
_RUN_CONFIG_KEYS = ("train", "accounting")


@dataclasses.dataclass(frozen=True)
class Meta:
    """What :func:`option` stores in a field's metadata."""

    help: str = ""
    section: str | None = None  # config-file section; None → the Part's section
    flag: str | None = None  # flag name; None → --field-name (--no-field-name for bools defaulting True)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None  # flag text / file value → field value (raises UserError)
    repeat: bool = False  # the flag may be given several times; ``parse`` gets the list of texts
    const: Any = None  # not None: the flag's value is optional, ``--name`` alone means ``const``
    merge: bool = False  # dict fields: flags update the file's dict instead of replacing it
    exclusive: str | None = None  # fields sharing this tag: one flag at most; giving one clears the others
    cli: bool = True  # False: a config-file key only (set by the program, e.g. for branched runs)


def option(
    default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING, **meta: Any
) -> Any:
    """A dataclass field that is a user setting (see :class:`Meta` for ``meta``)."""
    if "choices" in meta and meta["choices"] is not None:
        meta["choices"] = tuple(meta["choices"])
    return dataclasses.field(
        default=default, default_factory=default_factory, metadata={_META: Meta(help=help, **meta)}
    )


@dataclasses.dataclass(frozen=True)
class Part:
    """The fields of one dataclass that a command exposes.

    ``section``: config-file section of fields whose metadata names none. ``include``/``exclude``:
    which fields (None = all). ``defaults``: the command's own defaults, overriding the dataclass's.
    ``required``: fields that must be set by a flag or the file. ``help``: the command's own help
    text for some fields.
    """

    cls: type
    section: str | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    required: tuple[str, ...] = ()
    help: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Key:
    """One setting of one command: a field, its section, type and flag."""

    name: str
    section: str
    part: Part
    meta: Meta
    base: Any  # int, float, str, bool, tuple, dict or Any
    item: Any  # element type of a tuple
    optional: bool  # None allowed
    default: Any
    required: bool
    help: str

    @property
    def flag(self) -> str:
        if self.meta.flag:
            return self.meta.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.base is bool and self.default is True else f"--{dashed}"


def _unwrap(hint: Any) -> tuple[Any, Any, bool]:
    """(base type, tuple element type, optional) of a resolved annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else Any
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return tuple, (args[0] if args else Any), optional
    if origin in (dict, Mapping):
        return dict, None, optional
    if origin in (int, float, str, bool):
        return origin, None, optional
    return Any, None, optional


def _default(field: dataclasses.Field, part: Part) -> Any:
    if field.name in part.defaults:
        return part.defaults[field.name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


_KIND = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar(value: Any, base: Any, where: str, choices: tuple[str, ...] | None = None) -> Any:
    """``value`` as ``base`` (strings are parsed: YAML reads ``1e-3`` as a string), else UserError."""
    bad = UserError(f"{where}: expected {_KIND.get(base, base)}, got {_short(value)}")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad
    if base is int:
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (float, str)) else None
        except ValueError:
            raise bad from None
        if number is not None and number.is_integer():
            return int(number)
        raise bad
    if base is float:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if base is str:
        if not isinstance(value, str):
            raise bad
        if choices and value not in choices:
            raise UserError(f"{where}: expected one of {', '.join(choices)}, got {_short(value)}")
        return value
    if base is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise bad
    return value


def _split(text: str, key: Key, where: str) -> tuple:
    """``a,b,c`` → a tuple of the field's element type."""
    kind = "integers" if key.item is int else "numbers" if key.item is float else "values"
    try:
        values = tuple(_scalar(x.strip(), key.item, where) for x in text.split(",") if x.strip())
    except UserError:
        raise UserError(f"{where} expects comma-separated {kind}, got {text!r}") from None
    if not values:
        raise UserError(f"{where} is empty")
    return values


def _coerce(key: Key, value: Any, where: str) -> Any:
    """A flag's text or a config file's value → the field's value (UserError naming ``where``)."""
    if value is None:
        if key.optional:
            return None
        raise UserError(f"{where}: expected {_KIND.get(key.base, 'a value')}, got null")
    if key.meta.parse is not None:
        return key.meta.parse(value)
    if key.base is tuple:
        if isinstance(value, str):
            return _split(value, key, where)
        if isinstance(value, (list, tuple)):
            return tuple(_scalar(v, key.item, where) for v in value)
        raise UserError(f"{where}: expected a list, got {_short(value)}")
    return _scalar(value, key.base, where, key.meta.choices)


class Schema:
    """The settings of one command: generated flags, ``--config FILE``, merging, resolved output."""

    def __init__(self, command: str, *parts: Part):
        self.command = command
        self.parts = parts
        self.keys: dict[str, Key] = {}
        for part in parts:
            hints = typing.get_type_hints(part.cls)
            for field in dataclasses.fields(part.cls):
                if (part.include is not None and field.name not in part.include) or field.name in part.exclude:
                    continue
                if field.name in self.keys:
                    raise ValueError(f"{command}: setting {field.name!r} is in two parts")
                meta = field.metadata.get(_META, Meta())
                base, item, optional = _unwrap(hints[field.name])
                section = meta.section or part.section
                if section is None:
                    raise ValueError(f"{part.cls.__name__}.{field.name} has no config-file section")
                self.keys[field.name] = Key(
                    name=field.name,
                    section=section,
                    part=part,
                    meta=meta,
                    base=base,
                    item=item,
                    optional=optional,
                    default=_default(field, part),
                    required=field.name in part.required,
                    help=part.help.get(field.name, meta.help),
                )
        found = dict.fromkeys(k.section for k in self.keys.values())
        self.sections = tuple(sorted(found, key=lambda s: SECTION_ORDER.index(s) if s in SECTION_ORDER else 99))
        clash = set(self.sections) & set(self.keys)
        if clash:
            raise ValueError(f"{command}: {sorted(clash)} are both sections and keys")

    # ---- flags ----------------------------------------------------------------------------
    def add_flags(self, parser: argparse.ArgumentParser) -> None:
        """``--config FILE`` and one flag per setting (all default None: absent flags override nothing)."""
        parser.add_argument(
            "--config",
            metavar="FILE",
            help=f"YAML or JSON file of settings in sections ({', '.join(self.sections)}); flags override it",
        )
        groups: dict[str, Any] = {}
        for key in self.keys.values():
            if not key.meta.cli:
                continue
            target: Any = parser
            if key.meta.exclusive:
                if key.meta.exclusive not in groups:
                    groups[key.meta.exclusive] = parser.add_mutually_exclusive_group()
                target = groups[key.meta.exclusive]
            kwargs: dict[str, Any] = {"dest": key.name, "default": None, "help": self._help(key)}
            if key.base is bool:
                kwargs.update(action="store_const", const=not key.default)
            else:
                kwargs["metavar"] = key.meta.metavar
                if key.meta.repeat:
                    kwargs["action"] = "append"
                if key.meta.const is not None:
                    kwargs.update(nargs="?", const=key.meta.const)
                if not key.meta.repeat and key.meta.parse is None and key.base in (int, float):
                    kwargs["type"] = key.base
                if key.meta.choices:
                    kwargs["choices"] = key.meta.choices
            target.add_argument(key.flag, **kwargs)

    @staticmethod
    def _help(key: Key) -> str:
        text = key.help
        if key.required:
            text += " (required)"
        elif "default" not in text and key.default not in (None, "", (), {}) and key.base is not bool:
            text += f" (default {_show(key.default)})"
        setting = f"{key.section}.{key.name}"
        if key.base is bool:  # the flag sets the field to the opposite of its default
            setting += f": {str(not key.default).lower()}"
        text += f" [{setting}]"
        return text.strip().replace("%", "%%")

    # ---- config file ----------------------------------------------------------------------
    def read_file(self, path: str | Path) -> dict[str, Any]:
        """The settings in a config file (field name → value); unknown keys and bad types → UserError."""
        from scalinglab.train.config_file import read_config_file

        data = read_config_file(path)
        if all(k in data for k in _RUN_CONFIG_KEYS) and isinstance(data["train"], Mapping):
            data = data["train"]  # a run directory's config.json: its TrainConfig, flat
        out: dict[str, Any] = {}
        if any(k in self.sections for k in data):
            for section, body in data.items():
                if section not in self.sections:
                    raise UserError(self._unknown(path, str(section)))
                if body is None:
                    continue
                if not isinstance(body, Mapping):
                    raise UserError(f"--config {path}: section {section!r} must be a mapping of settings")
                for name, value in body.items():
                    key = self.keys.get(name)
                    if key is None or key.section != section:
                        raise UserError(self._unknown(path, f"{section}.{name}", key))
                    out[name] = _coerce(key, value, f"--config {path}: {section}.{name}")
        else:
            for name, value in data.items():
                key = self.keys.get(name)
                if key is None:
                    raise UserError(self._unknown(path, str(name)))
                out[name] = _coerce(key, value, f"--config {path}: {name}")
        return out

    def _unknown(self, path: str | Path, name: str, key: Key | None = None) -> str:
        hint = f" (it belongs in section {key.section!r})" if key is not None else ""
        return f"--config {path}: unknown key {name!r} for `scalinglab {self.command}`{hint}"

    # ---- merging ---------------------------------------------------------------------------
    def values(self, args: argparse.Namespace, config: str | Path | None = None) -> dict[str, Any]:
        """Settings given explicitly, file ← flags (field name → value); defaults are not filled in.

        ``config``: the config file to read (default: ``args.config``, the ``--config`` flag).
        """
        config = config or getattr(args, "config", None)
        out = self.read_file(config) if config else {}
        for key in self.keys.values():
            raw = getattr(args, key.name, None) if key.meta.cli else None
            if raw is None:
                continue
            value = raw if key.base is bool else _coerce(key, raw, key.flag)
            if key.meta.merge and isinstance(out.get(key.name), dict):
                value = {**out[key.name], **value}
            out[key.name] = value
            if key.meta.exclusive:
                for other in self.keys.values():
                    if other.meta.exclusive == key.meta.exclusive and other is not key:
                        out[other.name] = None
        for key in self.keys.values():
            if key.required and out.get(key.name) is None:
                raise UserError(f"{key.flag} is required (a flag, or `{key.section}: {key.name}:` in --config)")
        return out

    def fields_of(self, cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
        """The command's defaults for ``cls``'s exposed fields, updated with ``values``."""
        keys = [k for k in self.keys.values() if k.part.cls is cls]
        return {k.name: values[k.name] if k.name in values else k.default for k in keys}

    def build(self, cls: type, values: Mapping[str, Any], **fixed: Any) -> Any:
        """``cls`` from the command's defaults ← ``values`` (its exposed fields) ← ``fixed``."""
        return cls(**{**self.fields_of(cls, values), **fixed})

    # ---- resolved output --------------------------------------------------------------------
    def dump(self, *objs: Any) -> dict[str, dict[str, Any]]:
        """The exposed fields of ``objs`` nested by section: the command's resolved config, JSON/YAML-able."""
        by_cls = {type(o): o for o in objs}
        out: dict[str, dict[str, Any]] = {}
        for key in self.keys.values():
            obj = by_cls.get(key.part.cls)
            if obj is not None:
                out.setdefault(key.section, {})[key.name] = _plain(getattr(obj, key.name))
        return {section: out[section] for section in self.sections if section in out}


def _show(value: Any) -> str:
    """A default as a flag would spell it (``1e+12,3e+12``, ``0.001``)."""
    if isinstance(value, tuple):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
