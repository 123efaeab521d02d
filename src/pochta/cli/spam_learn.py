"""``pochta spam learn``: train the Bayes classifier from message files (sa-learn's job).

    pochta spam learn --spam ~/spam.mbox
    pochta spam learn --ham --user alice@example.org /var/mail/alice/cur /tmp/good.eml

Each PATH is a message file, an mbox file, a Maildir (its ``cur`` and ``new``) or a folder
of these. Learning goes through ``spam/training.Trainer``, the code the IMAP Junk moves
use, into the statistics in the directory database; a progress bar shows long runs and a
summary says how many messages were learned, already known, moved from the other class,
and unreadable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.spam.bayes_store import BayesStore, BayesStoreError
from pochta.spam.training import Trainer, Unreadable, count_files, read_messages

PROGRESS_FROM = 20
"""Runs over at least this many files show a progress bar."""


@click.command("learn")
@click.option(
    "--spam", "as_spam", flag_value=True, default=None, help="Learn the messages as spam."
)
@click.option("--ham", "as_spam", flag_value=False, help="Learn the messages as ham (not spam).")
@click.option(
    "--user",
    default="",
    metavar="ADDRESS",
    help="Learn into this account's statistics (and the global ones, [bayes] learn_global).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON document.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.pass_context
def learn(
    ctx: click.Context, as_spam: bool | None, user: str, as_json: bool, paths: tuple[Path, ...]
) -> None:
    """Learn the messages in PATH... (files, mbox files, Maildirs, folders) as spam or ham."""
    if as_spam is None:
        fail("say what the messages are: --spam or --ham")
    settings = load_cli_settings(ctx, check_files=False)
    if user:
        directory = open_directory(settings)
        try:
            account = directory.get_account(user)
        finally:
            directory.close()
        if account is None:
            fail(f"no account {user}; see pochta user list")
        user = account.address
    store = BayesStore(settings.directory_db)
    trainer = Trainer(store, learn_global=settings.bayes.learn_global)
    totals = {"learned": 0, "known": 0, "moved": 0, "unreadable": 0}
    problems: list[str] = []
    try:
        files = count_files(paths)
        with click.progressbar(
            length=files,
            label="Learning",
            file=sys.stderr,
            hidden=files < PROGRESS_FROM,
        ) as bar:
            current = ""
            for source in read_messages(paths):
                file_name = source.name.split("#", 1)[0]
                if file_name != current:
                    if current:
                        bar.update(1)
                    current = file_name
                if source.content is None:
                    totals["unreadable"] += 1
                    problems.append(f"{source.name}: {source.error}")
                    continue
                try:
                    outcome = trainer.learn(source.content, spam=as_spam, user=user)
                except Unreadable as exc:
                    totals["unreadable"] += 1
                    problems.append(f"{source.name}: {exc}")
                    continue
                totals[outcome] += 1
            if current:
                bar.update(1)
    except BayesStoreError as exc:
        fail(str(exc))
    finally:
        store.close()
    for problem in problems[:20]:
        click.echo(f"unreadable: {problem}", err=True)
    if len(problems) > 20:
        click.echo(f"... and {len(problems) - 20} more unreadable", err=True)
    if as_json:
        click.echo(json.dumps({"class": "spam" if as_spam else "ham", "user": user, **totals}))
        return
    what = "spam" if as_spam else "ham"
    scope = f" for {user}" if user else ""
    click.echo(
        f"Learned {totals['learned']} as {what}{scope}, {totals['known']} already known, "
        f"{totals['moved']} moved from the other class, {totals['unreadable']} unreadable."
    )
