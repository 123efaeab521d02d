"""`pochta table`: query and check lookup tables, like postmap(1) -q and postalias(1) -q.

Needs no config file: it reads only the table named on the command line.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from pochta.tables.aliases_file import AliasTable, expand_includes, render_target
from pochta.tables.postfix_text import PostfixTable
from pochta.tables.regexp import RegexpTable
from pochta.tables.source import TableError
from pochta.tables.spec import TableKind, open_table

KIND_OPTION = click.option(
    "--type",
    "kind",
    type=click.Choice(["map", "aliases"]),
    default="map",
    show_default=True,
    help="Read SPEC as a lookup table (postmap syntax) or an aliases(5) file.",
)


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1 (postmap exits 1 on fatal errors too)."""
    click.echo(f"pochta: error: {message}", err=True)
    sys.exit(1)


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        click.echo(f"pochta: warning: {warning}", err=True)


def _open(spec: str, kind: TableKind) -> PostfixTable | RegexpTable | AliasTable:
    try:
        return open_table(spec, kind=kind)
    except TableError as exc:
        _fail(str(exc))


@click.group()
def table() -> None:
    """Query and check Postfix-style lookup tables and aliases files.

    SPEC is TYPE:PATH (texthash, hash, btree, lmdb, cdb: all read the text file PATH)
    or a bare path.
    """


@table.command()
@KIND_OPTION
@click.argument("spec")
@click.argument("key")
def query(kind: TableKind, spec: str, key: str) -> None:
    """Print the value of KEY in SPEC, like `postmap -q KEY SPEC`.

    Exit status 0 when found, 1 when not found (nothing printed) or on error. Aliases print
    their targets joined by ", ", as `postalias -q` does.
    """
    opened = _open(spec, kind)
    _warn(opened.warnings)
    if isinstance(opened, AliasTable):
        targets = opened.get(key)
        if targets is None:
            sys.exit(1)
        click.echo(", ".join(render_target(target) for target in targets))
        return
    value = opened.get(key)
    if value is None:
        sys.exit(1)
    click.echo(value)


@table.command()
@KIND_OPTION
@click.argument("spec")
def check(kind: TableKind, spec: str) -> None:
    """Parse SPEC and report warnings and errors (exit 1 on errors).

    For aliases files the :include: files are read too.
    """
    opened = _open(spec, kind)
    if isinstance(opened, AliasTable):
        try:
            opened = expand_includes(opened)
        except TableError as exc:
            _fail(str(exc))
    _warn(opened.warnings)
    noun = "alias" if kind == "aliases" else "entry"
    plural = "aliases" if kind == "aliases" else "entries"
    count = len(opened)
    warned = len(opened.warnings)
    click.echo(
        f"{opened.path}: {count} {noun if count == 1 else plural}, "
        f"{warned} warning{'' if warned == 1 else 's'}"
    )
