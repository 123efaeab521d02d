"""`pochta user import FILE|-`: many accounts in one run (one process, one transaction).

The file is a CSV with a header or Dovecot passwd-file lines (``directory.account_import``
describes both). The safe default is all or nothing: every line is read and checked against
the directory first, and if one is wrong, each wrong line is reported with its number and
nothing is imported. ``--continue`` imports the good lines and reports the others (exit
status 1 all the same, so a script notices). Existing accounts are refused unless
``--update``, which replaces their password (and their quota when the line names one).
Missing domains are refused unless ``--create-domains``, which adds them as ``pochta domain
add`` does (DKIM keys, report aliases); they are removed again if the import then fails.

Plaintext passwords are hashed before the transaction, over every core (see
``account_import.hash_entries``), with a progress bar on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from pochta.cli.common import fail, opened_directory, reports_errors
from pochta.config.settings import Settings
from pochta.directory.account_import import (
    hash_entries,
    plan_import,
    read_accounts,
    to_account,
)
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.passwd_file import LineError


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _read(file: str) -> tuple[str, str]:
    """(text, the name used in messages) of FILE, or of stdin for ``-``."""
    if file == "-":
        data, source = sys.stdin.buffer.read(), "stdin"
    else:
        source = file
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise DirectoryError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig"), source
    except UnicodeDecodeError as exc:
        raise DirectoryError(
            f"{source} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it with: "
            f"iconv -t UTF-8"
        ) from None


@contextlib.contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr when it is a terminal; none in a pipe or a log."""
    if total == 0 or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def _create_domains(settings: Settings, directory: Directory, names: list[str]) -> list[str]:
    """Add each domain as `pochta domain add` does; on a failure remove those made and stop."""
    from pochta.cli.domain import add_report_aliases
    from pochta.mailauth.dkim_keys import DkimKeyError, add_domain_keys

    made: list[str] = []
    try:
        for name in names:
            directory.add_domain(name)
            made.append(name)
            add_domain_keys(directory, name, settings.dkim_dir)
            add_report_aliases(directory, name)
    except (DkimKeyError, DirectoryError, OSError) as exc:
        _remove_domains(directory, made)
        fail(
            f"nothing imported: the domain {name} could not be added ({exc}); add it with "
            f"pochta domain add {name} and import again"
        )
    return made


def _remove_domains(directory: Directory, names: list[str]) -> None:
    for name in reversed(names):
        with contextlib.suppress(DirectoryError):
            directory.remove_domain(name, force=True)


def _report_errors(errors: list[LineError]) -> None:
    for error in sorted(errors, key=lambda e: e.line):
        click.echo(f"pochta: error: {error}", err=True)


@click.command("import")
@click.argument("file", metavar="FILE|-")
@click.option(
    "--continue",
    "keep_going",
    is_flag=True,
    help="Import the good lines, report the bad ones and exit 1 (default: import nothing "
    "if one line is bad).",
)
@click.option("--update", is_flag=True, help="Replace the password of accounts that exist.")
@click.option(
    "--create-domains", is_flag=True, help="Add missing domains (as pochta domain add does)."
)
@click.pass_context
@reports_errors
def import_(
    ctx: click.Context, file: str, keep_going: bool, update: bool, create_domains: bool
) -> None:
    """Create the accounts listed in FILE (or stdin for -): a CSV with a header
    (address, password or password_hash, quota, enabled) or Dovecot passwd-file lines
    (user@domain:{SCHEME}hash:... or user@domain:password). Hashes are kept as Dovecot wrote
    them and become Argon2id at the first login; plaintext passwords are hashed now."""
    text, source = _read(file)
    entries, errors = read_accounts(text, source)
    with opened_directory(ctx) as (settings, directory):
        plan = plan_import(directory, entries, source, update=update, create_domains=create_domains)
        errors += plan.errors
        bad = len({e.line for e in errors})
        if errors and not keep_going:
            _report_errors(errors)
            fail(
                f"nothing imported: {_count(bad, 'line')} of {source} cannot be imported; "
                "fix them, or import the other lines with --continue"
            )
        todo = plan.new + plan.replace
        if not todo:
            _report_errors(errors)
            fail(f"nothing to import from {source}" + (f" ({bad} bad lines)" if bad else ""))
        plain = sum(1 for e in todo if e.password)
        with _progress(plain, f"hashing {_count(plain, 'password')}") as progress:
            hashed = hash_entries(todo, progress=progress)
        default_quota = settings.directory.default_quota_bytes
        new = [to_account(e, default_quota, replacing=False) for e in hashed[: len(plan.new)]]
        replace = [to_account(e, 0, replacing=True) for e in hashed[len(plan.new) :]]
        created = _create_domains(settings, directory, plan.create_domains)
        try:
            added, replaced = directory.import_accounts(new, replace)
        except DirectoryError as exc:
            _remove_domains(directory, created)
            # Another writer changed the directory between the check and the transaction.
            raise DirectoryError(f"nothing imported from {source}: {exc}; import again") from None
    summary = f"imported {_count(added, 'account')} from {source}"
    if replaced:
        summary += f", replaced the password of {replaced}"
    if created:
        summary += f", added {_count(len(created), 'domain')} ({', '.join(created)})"
    click.echo(summary)
    if errors:
        _report_errors(errors)
        fail(f"skipped {_count(bad, 'line')} of {source} that could not be imported")
