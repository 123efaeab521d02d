"""``pochta spam``: the spam filter's commands, each in its own module, loaded when used."""

from __future__ import annotations

import click

from pochta.cli.lazy import LazyGroup

# name -> "module:attribute" (as cli/main.py's SUBCOMMANDS).
SPAM_COMMANDS: dict[str, str] = {
    "score": "pochta.cli.spam_score:score",
    "learn": "pochta.cli.spam_learn:learn",
    "allow": "pochta.cli.spam_lists:allow",
    "block": "pochta.cli.spam_lists:block",
}


@click.group(cls=LazyGroup, lazy=SPAM_COMMANDS)
def spam() -> None:
    """The spam filter: score a message, train Bayes, edit the allow and block lists."""
