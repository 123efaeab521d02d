"""What every subcommand shares: the selected config, the directory, errors, passwords."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import click

from pochta.checks import load_checked_settings
from pochta.config.load import ConfigError, find_config_path
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError
from pochta.directory.base import DirectoryError

P = ParamSpec("P")
R = TypeVar("R")

if TYPE_CHECKING:
    from pochta.directory.base import Directory

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def fail(message: str) -> NoReturn:
    """One clear line on stderr and exit status 1."""
    click.echo(f"pochta: error: {message}", err=True)
    sys.exit(1)


def config_path(ctx: click.Context) -> str:
    root = ctx.find_root()
    explicit = root.obj.get("config") if isinstance(root.obj, dict) else None
    return str(find_config_path(explicit))


def load_cli_settings(
    ctx: click.Context, *, check_files: bool = True, check_tables: bool = False
) -> Settings:
    """Settings from --config, $POCHTA_CONFIG or the default path; else exit 1 with the problems.

    The table files are checked only with ``check_tables`` (``check``, ``serve``): a command
    that never reads them (``user add``) must not fail because one is being edited."""
    path = config_path(ctx)
    try:
        return load_checked_settings(path, check_files=check_files, check_tables=check_tables)
    except ConfigError as exc:
        if len(exc.problems) == 1:
            only = exc.problems[0]
            fail(f"{path}: {only}" if only.key else only.message)
        click.echo(f"pochta: error: {path} has {len(exc.problems)} problems:", err=True)
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(1)


def open_directory(settings: Settings, *, create: bool = False) -> Directory:
    """The directory of ``settings``; a database that is not there is refused rather than
    made (a mistyped ``directory.sqlite_path`` would otherwise start an empty directory and
    every account would seem gone), unless ``create`` (``pochta domain add``, which says
    so; ``pochta init`` makes the first one)."""
    from pochta.directory.open import open_directory as _open

    missing = settings.directory.backend == "sqlite" and not settings.directory_db.exists()
    if missing and create:
        click.echo(f"new directory database at {settings.directory_db}", err=True)
    elif missing:
        fail(
            f"no directory database at {settings.directory_db}: fix directory.sqlite_path in "
            f"{settings.config_path or 'the config'}, or make one with pochta init"
        )
    try:
        return _open(settings)
    except OSError as exc:
        fail(f"cannot open the directory {settings.directory_db}: {exc}")


def read_password(password_stdin: bool, *, confirm: bool) -> str:
    """A password from one line of stdin, or a hidden prompt (never from the command line)."""
    if password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        if not sys.stdin.isatty():
            fail("no terminal to prompt for the password; use --password-stdin")
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=confirm, prompt_suffix=": "
        )
    if not password:
        fail("the password is empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        fail(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    if "\x00" in password:
        fail("the password contains a NUL character, which SASL cannot carry")
    return password


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a refused input (bad address, duplicate, missing domain) into one line on stderr
    and exit status 1. Put it directly above the function, under the click decorators."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (AddressError, DirectoryError) as exc:
            fail(str(exc))

    return wrapper


@contextlib.contextmanager
def opened_directory(
    ctx: click.Context, *, create: bool = False
) -> Iterator[tuple[Settings, Directory]]:
    """The settings of the selected config and its directory, closed on the way out."""
    settings = load_cli_settings(ctx)
    directory = open_directory(settings, create=create)
    try:
        yield settings, directory
    finally:
        directory.close()
