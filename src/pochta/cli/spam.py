"""``pochta spam``: the spam filter's commands, each in its own module, loaded when used."""

from __future__ import annotations

import importlib
import importlib.util

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
        return sorted(name for name, target in SPAM_COMMANDS.items() if _present(target))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SPAM_COMMANDS.get(cmd_name)
        if target is None or not _present(target):
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


def _present(target: str) -> bool:
    """Whether the command's module exists (parts of the filter land one by one)."""
    return importlib.util.find_spec(target.split(":")[0]) is not None


@click.group(cls=_LazySpamGroup)
def spam() -> None:
    """The spam filter: score a message, train Bayes, edit the allow and block lists."""
