"""``pochta spam``: the spam filter's commands, each in its own module, loaded when used."""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute" (as cli/main.py's SUBCOMMANDS).
SPAM_COMMANDS: dict[str, str] = {
    "score": "pochta.cli.spam_score:score",
    "learn": "pochta.cli.spam_learn:learn",
    "allow": "pochta.cli.spam_lists:allow",
    "block": "pochta.cli.spam_lists:block",
}


class _LazySpamGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SPAM_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SPAM_COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazySpamGroup)
def spam() -> None:
    """The spam filter: score a message, train Bayes, edit the allow and block lists."""
