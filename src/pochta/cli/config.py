"""`pochta config get|set`: read and change single settings, as postconf(1) does for main.cf.

``get KEY`` prints the effective value (the file's, else the default), ``get`` every setting,
``get -n`` only those the file sets (postconf -n). ``set KEY VALUE`` edits pochta.toml in
place with tomlkit, so its comments, order and layout stay, and writes it only when the
result passes the same checks as ``pochta check``; otherwise the file is left untouched.

A value is read as TOML (``4``, ``true``, ``["a", "b"]``, ``"text"``); where the setting is a
string, a plain word is taken as it is (``set server.hostname mail.example.org``), and where
it is a list, several arguments or a comma/space-separated text (as main.cf writes lists)
make its items.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import msgspec
import msgspec.inspect as mi

from pochta.cli.common import config_path, fail
from pochta.config.load import ConfigError, read_config
from pochta.config.settings import Settings

# Settings the loader fills in itself; never read from the file.
_INTERNAL = frozenset({"config_path"})


@dataclass(frozen=True, slots=True)
class _Setting:
    """One leaf setting: its dotted key and its type."""

    key: str
    type: mi.Type


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


def _settings_of(t: mi.Type, prefix: str = "") -> dict[str, _Setting]:
    """Every leaf setting under the Struct ``t``, by dotted key, in declaration order."""
    found: dict[str, _Setting] = {}
    st = _unwrap(t)
    assert isinstance(st, mi.StructType)
    for f in st.fields:
        if f.name in _INTERNAL:
            continue
        key = f"{prefix}.{f.encode_name}" if prefix else f.encode_name
        inner = _unwrap(f.type)
        if isinstance(inner, mi.StructType):
            found.update(_settings_of(inner, key))
        else:
            found[key] = _Setting(key, f.type)
    return found


SETTINGS: dict[str, _Setting] = _settings_of(mi.type_info(Settings))
_TABLES = frozenset(k.rsplit(".", 1)[0] for k in SETTINGS if "." in k)


def _value_at(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[part]
    return data


def _set_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """The leaf settings a parsed file sets (its keys that name settings)."""
    keys: list[str] = []
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if key in SETTINGS:
            keys.append(key)
        elif isinstance(value, dict) and key in _TABLES:
            keys.extend(_set_keys(value, key))
    return keys


def _toml(value: Any) -> str:
    """``value`` as it would be written on the right of ``=`` in pochta.toml."""
    import tomlkit

    item = tomlkit.item(value)
    if isinstance(item, tomlkit.items.AoT):  # a list of tables: write it inline
        array = tomlkit.array()
        for entry in value:
            inline = tomlkit.inline_table()
            inline.update(entry)
            array.append(inline)
        return str(array.as_string())
    return str(item.as_string())


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, list(SETTINGS), n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    if key in _TABLES or (key and any(k.startswith(key + ".") for k in SETTINGS)):
        return f"{key} is a table, not a setting; name one of its keys, e.g. {_first_in(key)}"
    return f"no setting {key}{hint} (pochta config get lists every setting)"


def _first_in(table: str) -> str:
    return next(k for k in SETTINGS if k.startswith(table + "."))


@click.group("config")
def config() -> None:
    """Read and change settings of pochta.toml (postconf's job)."""


@config.command("get")
@click.argument("keys", metavar="[KEY]...", nargs=-1)
@click.option(
    "-n",
    "only_set",
    is_flag=True,
    help="Only the settings the file sets (postconf -n), not the defaults.",
)
@click.pass_context
def get(ctx: click.Context, keys: tuple[str, ...], only_set: bool) -> None:
    """Print KEY = VALUE for each KEY (table.key, e.g. server.hostname), or for every
    setting; a TABLE prints its keys. Values are the effective ones: the file's, else the
    default."""
    path = config_path(ctx)
    try:
        walked = read_config(path)
    except ConfigError as exc:
        fail("; ".join(str(p) for p in exc.problems))
    if walked.settings is None:
        fail(f"{path}: " + "; ".join(str(p) for p in walked.problems))
    effective = msgspec.to_builtins(walked.settings)
    wanted: list[str] = []
    for key in keys:
        if key in SETTINGS:
            wanted.append(key)
        elif key in _TABLES:
            wanted.extend(k for k in SETTINGS if k.startswith(key + "."))
        else:
            fail(_unknown_key(key))
    if not keys:
        wanted = list(SETTINGS)
    if only_set:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        in_file = set(_set_keys(raw))
        wanted = [k for k in wanted if k in in_file]
    for key in wanted:
        click.echo(f"{key} = {_toml(_value_at(effective, key))}")


# -- set -----------------------------------------------------------------------------------


def _is_str(t: mi.Type) -> bool:
    t = _unwrap(t)
    if isinstance(t, mi.StrType):
        return True
    if isinstance(t, mi.LiteralType):
        return all(isinstance(v, str) for v in t.values)
    if isinstance(t, mi.UnionType):
        return any(_is_str(x) for x in t.types)
    return False


def _list_item_type(t: mi.Type) -> mi.Type | None:
    t = _unwrap(t)
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return t.item_type
    return None


def _parse_toml(text: str) -> tuple[bool, Any]:
    try:
        return True, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return False, None


def _one_value(t: mi.Type, text: str) -> Any:
    """One argument as a value of type ``t``: TOML, or the plain text where ``t`` is a string
    (a quoted TOML string still loses its quotes)."""
    ok, value = _parse_toml(text)
    if _is_str(t) and not (ok and isinstance(value, str)):
        return text
    if not ok:
        raise click.BadParameter(f'{text!r} is not a TOML value (e.g. 4, true, "text", ["a"])')
    return value


def parse_value(setting: _Setting, texts: tuple[str, ...]) -> Any:
    """The value ``set KEY VALUE...`` writes: a TOML value, a plain string for a string
    setting, or for a list several arguments or a comma/space-separated text (main.cf's list
    syntax, postconf(5) "Specify a list of ... separated by comma or whitespace")."""
    item = _list_item_type(setting.type)
    if item is None:
        if len(texts) != 1:
            raise click.BadParameter(
                f"{setting.key} takes one value; quote it if it has spaces: "
                f"pochta config set {setting.key} '{' '.join(texts)}'"
            )
        return _one_value(setting.type, texts[0])
    if len(texts) == 1:
        ok, value = _parse_toml(texts[0])
        if ok and isinstance(value, list):
            return value
    words = [w for text in texts for w in re.split(r"[,\s]+", text.strip()) if w]
    return [_one_value(item, w) for w in words]


def _edit(text: str, key: str, value: Any) -> str:
    """``text`` (pochta.toml) with ``key`` set to ``value``; comments and layout kept, the
    table made at the end if the file has none."""
    import tomlkit

    doc = tomlkit.parse(text)
    *tables, name = key.split(".")
    container: Any = doc
    for part in tables:
        if part not in container:
            container.add(part, tomlkit.table())
        container = container[part]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        array = tomlkit.array()
        for entry in value:
            inline = tomlkit.inline_table()
            inline.update(entry)
            array.append(inline)
        container[name] = array
    else:
        container[name] = value
    return tomlkit.dumps(doc)


def _restart_only(key: str) -> bool:
    from pochta.server.app import RESTART_ONLY_SERVER_KEYS

    table, _, name = key.partition(".")
    return table == "listen" or (table == "server" and name in RESTART_ONLY_SERVER_KEYS)


@config.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("key")
@click.argument("values", metavar="VALUE...", nargs=-1, required=True)
@click.pass_context
def set_(ctx: click.Context, key: str, values: tuple[str, ...]) -> None:
    """Set KEY (table.key) to VALUE in the config file, keeping its comments and layout. The
    file is written only if the result passes pochta check; then reload the server (SIGHUP)."""
    from pochta.checks import checked_settings_from_dict
    from pochta.durable import write_atomic

    setting = SETTINGS.get(key)
    if setting is None:
        fail(_unknown_key(key))
    try:
        value = parse_value(setting, values)
    except click.BadParameter as exc:
        fail(f"{key}: {exc.message}")
    path = Path(config_path(ctx))
    try:
        before = path.read_text(encoding="utf-8")
        st = path.stat()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        old_data = tomllib.loads(before)
    except tomllib.TOMLDecodeError as exc:
        fail(f"{path}: TOML syntax error: {exc}; fix it first (pochta check)")
    after = _edit(before, key, value)
    try:
        checked_settings_from_dict(tomllib.loads(after), config_path=str(path.resolve()))
    except ConfigError as exc:
        click.echo(
            f"pochta: error: not changed: with {key} = {_toml(value)}, {path} would not "
            "pass pochta check:",
            err=True,
        )
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        raise SystemExit(1) from None
    try:
        write_atomic(
            path,
            after.encode("utf-8"),
            mode=stat.S_IMODE(st.st_mode),
            owner=(st.st_uid, st.st_gid) if os.geteuid() == 0 else None,
        )
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}; {path} is unchanged")
    try:
        old = _toml(_value_at(old_data, key))
    except (KeyError, TypeError):
        old = "(default)"
    click.echo(f"{key} = {_toml(value)} (was {old})")
    if _restart_only(key):
        click.echo("restart pochta to apply it (a reload keeps the running value)")
    else:
        click.echo(f"reload to apply it: {_reload_hint(path)}")


def _reload_hint(path: Path) -> str:
    try:
        settings = read_config(path).settings_or_raise()
    except ConfigError:
        return "send SIGHUP to pochta serve"
    if settings.server.pid_file:
        return f"kill -HUP $(cat {settings.path(settings.server.pid_file)})"
    return "send SIGHUP to pochta serve"
