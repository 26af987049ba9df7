"""Typed configuration: dataclasses filled from YAML, checked completely at load.

Every setting smf reads lives in a dataclass whose fields carry their defaults and a
help text (`setting(default, "help")`). YAML files and command-line flags only
override fields; `from_dict` merges a mapping into a dataclass field by field and
checks it whole before any model is touched:

- a key that is not a field is refused, with the closest field name suggested;
- a key listed in the class's `RENAMED` is refused with the name that replaced it;
- every value is checked against the field's type (int, float, str, bool, optional,
  lists and tuples, nested config dataclasses, and `Literal` choices, whose wrong value
  is refused with the closest choice suggested, as an unknown key is);
- then the class's own `check()` tests what types cannot (ranges, choices).

Errors are `SmfError`s of one line that name where the problem is
("configs/x.yaml: methods.lora: unknown key 'lr_rate'; did you mean 'lr'?").
`add_arguments` turns the same fields into documented command-line flags.

A YAML file may extend another: `base: ../offline.yaml` (a path relative to the file)
reads that file first and merges this one's keys over it (`read_config`): a mapping
merges key by key, at any depth; any other value replaces the base's. A base may have
a base of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping

from smf.errors import SmfError
from smf.io import excerpt, read_yaml_mapping

BASE = "base"  # the key of a YAML config that names the config it extends


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its default (or default factory) and its help text."""
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


class Config:
    """Mixin of the config dataclasses: load from a mapping, check, serialize."""

    #: old key → the key that replaced it; such a key is refused with the new name
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "config"):
        """The config of `raw` merged over the defaults, fully checked; raises SmfError."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise SmfError(f"{where}: expected a mapping of settings, got {_kind(raw)} {excerpt(raw)}")
        check_keys(cls, raw, where)
        hints = field_types(cls)
        values = {name: coerce(value, hints[name], at(where, name)) for name, value in raw.items()}
        if "checked" in hints:  # a class that checks itself when built directly: check here, with `where`
            values["checked"] = False
        config = cls(**values)
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """Checks that types cannot express (ranges, choices); raise SmfError."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def check_choices(config: Any, where: str) -> None:
    """Refuse a value of a `Literal` field of `config` that is not one of its choices (as `from_dict`
    does), for a config built directly rather than loaded."""
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        hint = hints[f.name]
        arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if any(typing.get_origin(a) is typing.Literal for a in arms):
            coerce(getattr(config, f.name), hint, at(where, f.name))


def read_config(path: str | Path, what: str = "settings") -> dict[str, Any]:
    """The mapping of the YAML file `path`, merged over the chain of configs its `base:` names
    (each path relative to the file that names it); raises SmfError on a missing base, a base
    that is not a mapping, or a cycle."""
    chain: list[Path] = []
    layers: list[dict[str, Any]] = []  # the furthest base first
    path = Path(path)
    while True:
        if path.resolve() in chain:
            cycle = " → ".join(str(p) for p in [*chain, path.resolve()])
            raise SmfError(f"{path}: its base: chain comes back to itself ({cycle}); remove one of the base: keys")
        chain.append(path.resolve())
        if not path.is_file() and len(chain) > 1:
            raise SmfError(f"{chain[-2]}: base: {path} not found; give a path relative to this file")
        raw = read_yaml_mapping(path, what)
        layers.insert(0, raw)
        if BASE not in raw:
            break
        base = raw[BASE]
        if not isinstance(base, str) or not base.strip():
            raise SmfError(f"{path}: base: give the path of the config this one extends, got {_kind(base)} {excerpt(base)}")
        path = path.parent / base
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, {k: v for k, v in layer.items() if k != BASE})
    return merged


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` deep-merged over `base`: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_keys(cls, raw: Mapping[str, Any], where: str, known: list[str] | None = None, renamed: Mapping[str, str] | None = None) -> None:
    """Refuse keys that are not fields of `cls` (or not in `known`), naming the fix."""
    known = field_names(cls) if known is None else known
    renamed = getattr(cls, "RENAMED", {}) if renamed is None else renamed
    for key in raw:
        if key in known:
            continue
        if key in renamed:
            raise SmfError(f"{at(where, str(key))}: this key is now '{renamed[key]}'; rename it")
        raise SmfError(f"{where}: unknown key {excerpt(key)}{suggest(str(key), known)}")


def closest(word: str, choices) -> str | None:
    """The choice a misspelt `word` most likely meant, or None."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return close[0]
    prefixed = [c for c in choices if len(c) >= 2 and (str(word).startswith(c) or c.startswith(str(word)))]
    return max(prefixed, key=len) if prefixed else None


def suggest(word: str, choices: list[str]) -> str:
    """'; did you mean X?' or the list of known keys."""
    close = closest(word, choices)
    return f"; did you mean '{close}'?" if close else f"; known keys: {', '.join(choices)}"


def choice(value: Any, choices, what: str, where: str) -> None:
    """Refuse `value` unless it is one of `choices`, suggesting the closest."""
    choices = list(choices)
    if value not in choices:
        close = closest(str(value), choices)
        hint = f"; did you mean '{close}'?" if close else ""
        raise SmfError(f"{where}: unknown {what} {excerpt(value)}; choose one of {', '.join(map(str, choices))}{hint}")


def at(where: str, name: str) -> str:
    """'study.yaml' + 'train' → 'study.yaml: train'; 'study.yaml: train' + 'lr' → 'study.yaml: train.lr'."""
    return f"{where}.{name}" if ": " in where else f"{where}: {name}"


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", list: "a list",
            dict: "a mapping", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


_EXPONENT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")  # YAML 1.1 reads 1e-4 as text


def _number(value: Any) -> float | None:
    """`value` as a float setting reads it (a number, or text in exponent form), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _EXPONENT.match(value.strip()):
        return float(value)
    return None


def coerce(value: Any, hint: Any, where: str) -> Any:
    """`value` checked against the type `hint` (and converted where lossless); raises SmfError."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 and (dataclasses.is_dataclass(arms[0]) or typing.get_origin(arms[0]) is typing.Literal
                               or isinstance(value, (list, dict))):
            return coerce(value, arms[0], where)  # its own, more precise error
        if float in arms and _number(value) is not None and not math.isfinite(_number(value)):
            return coerce(value, float, where)  # its own error: not finite, rather than "a number or null"
        for arm in arms:
            try:
                return coerce(value, arm, where)
            except SmfError:
                continue
        wanted = " or ".join(_describe(a) for a in args)
        raise SmfError(f"{where}: expected {wanted}, got {_kind(value)} {excerpt(value)}")
    if origin is typing.Literal:
        if value not in args:
            close = closest(str(value), args)
            hint = f"; did you mean '{close}'?" if close else ""
            raise SmfError(f"{where}: unknown choice {excerpt(value)}; choose one of {', '.join(map(str, args))}{hint}")
        return value
    if dataclasses.is_dataclass(hint):
        return hint.from_dict(value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SmfError(f"{where}: expected {_describe(hint)}, got {_kind(value)} {excerpt(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise SmfError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise SmfError(f"{where}: expected a mapping, got {_kind(value)} {excerpt(value)}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = _number(value)
        if number is not None and not math.isfinite(number):  # every float setting reaches a model or a report
            raise SmfError(f"{where}: expected a finite number, got {excerpt(value)}")
        if number is not None:
            return number
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise AssertionError(f"config type {hint!r} is not supported")
    raise SmfError(f"{where}: expected {_describe(hint)}, got {_kind(value)} {excerpt(value)}")


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if origin in (list, tuple):
        return "a list"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", dict: "a mapping"}.get(hint, str(hint))


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------ command line


def parse_flag(text: str, hint: Any) -> Any:
    """A command-line string as a value of type `hint` (lists: comma-separated; none → None).

    A choice (`Literal`) is passed on as written: `from_dict` refuses a wrong one in one line
    with the closest choice, as it refuses the same mistake in a YAML file."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return text
    if origin in (typing.Union, types.UnionType):
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if "," in text:  # a comma-separated value is meant as a list where the setting takes one
            arms.sort(key=lambda a: typing.get_origin(a) not in (list, tuple))
        for arm in arms:
            try:
                return parse_flag(text, arm)
            except (ValueError, argparse.ArgumentTypeError):
                continue
        raise argparse.ArgumentTypeError(f"expected {' or '.join(_describe(a) for a in args)}, got {excerpt(text)}")
    if origin in (list, tuple):
        item = args[0] if args else str
        return [parse_flag(part.strip(), item) for part in text.split(",") if part.strip()]
    if hint is bool:
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {excerpt(text)}")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {excerpt(text)}") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {excerpt(text)}") from None
    return text


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser, cls, *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None, prefix: str = "") -> list[str]:
    """A flag per field of `cls` (help from the field, default shown); unset flags are None.

    Returns the field names added. `prefix` goes before each help text (e.g. "[lora] ").
    """
    instance = cls()
    hints = field_types(cls)
    added = []
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        hint = hints[f.name]
        default = getattr(instance, f.name)
        shown = "none" if default is None else (",".join(map(str, default)) if isinstance(default, (list, tuple)) else default)
        switch = {"nargs": "?", "const": True} if hint is bool else {}  # --flag alone is true; --flag false still works
        parser.add_argument(
            flag(f.name), dest=f.name, default=None, metavar=metavar(f.name, hint),
            type=lambda text, hint=hint: parse_flag(text, hint),
            help=f"{prefix}{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%"), **switch,
        )
        added.append(f.name)
    return added


def metavar(name: str, hint: Any) -> str:
    """A flag's placeholder in the help: its choices where the setting is a `Literal`, else its name."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    choices = [str(c) for a in arms if typing.get_origin(a) is typing.Literal for c in typing.get_args(a)]
    return "{" + ",".join(choices) + "}" if choices else name.upper()


def given(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The flags among `names` that the user set."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}
