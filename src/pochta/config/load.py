"""Load pochta.toml into Settings, collecting every problem instead of stopping at the first.

msgspec stops at the first error, so the file is first walked against the Structs' type
information (``msgspec.inspect``): each unknown key, wrong type, missing key or number
outside the range its field declares (``msgspec.Meta`` ge/gt/le/lt) becomes one problem with
its TOML key path and, for a number, the allowed range. Only a file without problems is
converted into ``Settings``.

This module checks syntax, types and ranges only. The checks of meaning (ports, host names,
table files, rules joining two settings) need other packages and run after it:
``pochta.checks.load_checked_settings`` walks with ``read_config`` and adds them, so one run
of ``pochta check`` still lists every problem.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi

from pochta.config.problems import ConfigError, Problem
from pochta.config.settings import Settings

__all__ = [
    "ConfigError",
    "Problem",
    "Walked",
    "find_config_path",
    "load_settings",
    "range_text",
    "read_config",
    "settings_from_dict",
    "walk_settings",
]

DEFAULT_CONFIG_PATHS = ("/etc/pochta/pochta.toml",)
CONFIG_ENV = "POCHTA_CONFIG"
_INTERNAL_FIELDS = frozenset({"config_path"})


@dataclass(frozen=True, slots=True)
class Walked:
    """A config after the structural walk: its problems, and the Settings with the defaults
    standing in for the keys that were wrong (None when a required key is missing)."""

    config_path: str
    settings: Settings | None
    problems: list[Problem]

    def settings_or_raise(self) -> Settings:
        """The Settings when there is no problem; else ConfigError listing them all."""
        if self.problems or self.settings is None:
            raise ConfigError(self.config_path, self.problems)
        return self.settings


def find_config_path(explicit: str | None) -> Path:
    """The config named on the command line, else $POCHTA_CONFIG, else /etc/pochta/pochta.toml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return Path(DEFAULT_CONFIG_PATHS[0])


def load_settings(path: str | Path) -> Settings:
    """Read the config file and convert it (syntax, types, ranges); ConfigError lists every
    problem. The checks of meaning are ``pochta.checks.load_checked_settings``."""
    return read_config(path).settings_or_raise()


def read_config(path: str | Path) -> Walked:
    """Read and walk the config file; ConfigError when it cannot be read or is not TOML."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(p),
            [
                Problem(
                    "",
                    f"config file {p} not found; create one with: pochta init --data DIR "
                    "--hostname HOST --domain DOMAIN, or name it with --config FILE "
                    f"or ${CONFIG_ENV}",
                )
            ],
        ) from None
    except OSError as exc:
        raise ConfigError(str(p), [Problem("", f"cannot read {p}: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), [Problem("", f"{p} is not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [Problem("", f"{p}: TOML syntax error: {exc}")]) from None
    return walk_settings(data, config_path=str(p.resolve()))


def settings_from_dict(data: dict[str, Any], *, config_path: str = "") -> Settings:
    """``load_settings`` of data already parsed from TOML."""
    return walk_settings(data, config_path=config_path).settings_or_raise()


def walk_settings(data: dict[str, Any], *, config_path: str = "") -> Walked:
    """Every structural problem of ``data``, and the Settings of the keys that were right."""
    problems: list[Problem] = []
    clean = _walk_struct(mi.type_info(Settings), data, "", problems)
    try:
        settings = msgspec.convert({**clean, "config_path": config_path}, Settings)
    except msgspec.ValidationError:
        # Only a missing required key gets here, and it is already a problem.
        return Walked(config_path, None, problems)
    return Walked(config_path, settings, problems)


# -- the structural walk ------------------------------------------------------------------


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _suggest(key: str, known: list[str]) -> str | None:
    near = difflib.get_close_matches(key, known, n=1)
    if near:
        return near[0]
    starts = [k for k in known if k.startswith(key) or key.startswith(k)]
    return starts[0] if len(starts) == 1 else None


def _walk_struct(st: mi.Type, data: Any, prefix: str, problems: list[Problem]) -> dict[str, Any]:
    """Record every problem in ``data``; return the data without the keys that were wrong."""
    assert isinstance(st, mi.StructType)
    if not isinstance(data, dict):
        problems.append(Problem(prefix, f"must be a table; write [{prefix}] and its keys"))
        return {}
    fields = {f.encode_name: f for f in st.fields if f.name not in _INTERNAL_FIELDS}
    clean: dict[str, Any] = {}
    for key, value in data.items():
        path = _join(prefix, key)
        field = fields.get(key)
        if field is None:
            near = _suggest(key, list(fields))
            hint = f"did you mean {near!r}? " if near else ""
            problems.append(
                Problem(path, f"unknown key; {hint}known keys here: {', '.join(sorted(fields))}")
            )
            continue
        before = len(problems)
        sub = _walk_value(field.type, value, path, problems)
        if len(problems) == before or isinstance(sub, dict):
            clean[key] = sub
    for name, field in fields.items():
        if field.required and name not in data:
            ftype = _unwrap(field.type)
            if isinstance(ftype, mi.StructType):
                problems.append(
                    Problem(_join(prefix, name), f"missing; add a [{_join(prefix, name)}] table")
                )
            else:
                problems.append(
                    Problem(_join(prefix, name), f"missing; write {name} = {_example(ftype)}")
                )
    return clean


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _example(t: mi.Type) -> str:
    if isinstance(t, mi.StrType):
        return '"..."'
    if isinstance(t, mi.BoolType):
        return "true"
    if isinstance(t, mi.IntType | mi.FloatType):
        return "0"
    if isinstance(t, mi.LiteralType):
        return " or ".join(f'"{v}"' for v in t.values)
    if isinstance(t, mi.ListType):
        return "[]"
    if isinstance(t, mi.DictType):
        return "{}"
    return "a value"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


_CHECKS: dict[type, Callable[[Any], bool]] = {
    mi.StrType: lambda v: isinstance(v, str),
    mi.BoolType: lambda v: isinstance(v, bool),
    mi.IntType: lambda v: isinstance(v, int) and not isinstance(v, bool),
    mi.FloatType: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}
_NAMES: dict[type, str] = {
    mi.StrType: "a string in quotes",
    mi.BoolType: "true or false",
    mi.IntType: "a whole number",
    mi.FloatType: "a number",
}


def _walk_value(t: mi.Type, value: Any, path: str, problems: list[Problem]) -> Any:
    """Record the problems of one value; return it (a struct's table without its bad keys)."""
    t = _unwrap(t)
    if isinstance(t, mi.StructType):
        return _walk_struct(t, value, path, problems)
    if isinstance(t, mi.LiteralType):
        if value not in t.values:
            choices = ", ".join(f'"{v}"' for v in t.values)
            problems.append(
                Problem(path, f"{_describe(value)} is not allowed; use one of {choices}")
            )
        return value
    if isinstance(t, mi.ListType):
        if not isinstance(value, list):
            problems.append(Problem(path, f'{_describe(value)} is not a list; write ["...", ...]'))
            return value
        for i, item in enumerate(value):
            _walk_value(t.item_type, item, f"{path}[{i}]", problems)
        return value
    if isinstance(t, mi.DictType):
        # A table of names to values (e.g. spam.scores = { BAYES_SPAM = 5.0 }): the keys are
        # TOML keys (always strings); each value is checked with its key in the path.
        if not isinstance(value, dict):
            problems.append(
                Problem(path, f"{_describe(value)} is not a table; write {{ NAME = value, ... }}")
            )
            return {}
        clean: dict[str, Any] = {}
        for key, item in value.items():
            before = len(problems)
            _walk_value(t.value_type, item, _join(path, key), problems)
            if len(problems) == before:
                clean[key] = item
        return clean
    check = _CHECKS.get(type(t))
    if check is None:  # pragma: no cover - a Settings field of a type the walker lacks
        raise TypeError(f"config walker cannot check {t!r} at {path}")
    if not check(value):
        problems.append(Problem(path, f"{_describe(value)} is not {_NAMES[type(t)]}"))
    elif isinstance(t, mi.IntType | mi.FloatType) and not _in_range(t, value):
        problems.append(Problem(path, f"{_describe(value)} is out of range; use {_range_text(t)}"))
    return value


def _in_range(t: mi.IntType | mi.FloatType, value: float) -> bool:
    """The msgspec.Meta(ge/gt/le/lt) constraints of the field's Annotated."""
    return (
        (t.ge is None or value >= t.ge)
        and (t.gt is None or value > t.gt)
        and (t.le is None or value <= t.le)
        and (t.lt is None or value < t.lt)
    )


def range_text(t: mi.Type) -> str:
    """The allowed range of a numeric field, e.g. "a whole number from 1 to 65535"."""
    t = _unwrap(t)
    assert isinstance(t, mi.IntType | mi.FloatType)
    return _range_text(t)


def _range_text(t: mi.IntType | mi.FloatType) -> str:
    noun = _NAMES[type(t)]
    if t.ge is not None and t.le is not None:
        return f"{noun} from {_number(t.ge)} to {_number(t.le)}"
    parts = []
    if t.ge is not None:
        parts.append(f"at least {_number(t.ge)}")
    if t.gt is not None:
        parts.append(f"more than {_number(t.gt)}")
    if t.le is not None:
        parts.append(f"at most {_number(t.le)}")
    if t.lt is not None:
        parts.append(f"less than {_number(t.lt)}")
    return f"{noun} " + " and ".join(parts) if parts else noun


def _number(n: float) -> str:
    """As TOML may write it: 65535, 1_000_000."""
    return f"{n:_}" if abs(n) >= 100_000 else str(n)
