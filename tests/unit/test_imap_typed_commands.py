"""The typed IMAP commands (issue 18 point 3): every ``*_args`` function of
protocols/imap/commands.py returns a dataclass, and the session's handlers take the core's
``Command``, never ``Any``."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from pochta.protocols.imap import commands as C
from pochta.protocols.imap.core import Command

ARGS_FUNCTIONS = sorted(
    n for n in dir(C) if n.endswith("_args") and not n.startswith("_") and callable(getattr(C, n))
)


@pytest.mark.parametrize("name", ARGS_FUNCTIONS)
def test_every_args_function_returns_a_dataclass(name: str) -> None:
    returned = typing.get_type_hints(getattr(C, name))["return"]
    assert dataclasses.is_dataclass(returned), f"C.{name} returns {returned}"


def test_the_typed_arguments() -> None:
    assert C.login_args(Command("a", "LOGIN", ["u", "p"])) == C.LoginArgs("u", "p")
    assert "hunter2" not in repr(C.login_args(Command("a", "LOGIN", ["u", "hunter2"])))
    auth = C.authenticate_args(Command("a", "AUTHENTICATE", ["plain", "="]))
    assert auth == C.AuthenticateArgs("PLAIN", b"")
    assert C.rename_args(Command("a", "RENAME", ["x", "inbox"])) == C.RenameArgs("x", "INBOX")
    create = C.create_args(Command("a", "CREATE", ["x", ["USE", ["\\Drafts"]]]))
    assert create == C.CreateArgs("x", ["\\Drafts"])
    status = C.status_args(Command("a", "STATUS", ["x", ["messages"]]))
    assert status == C.StatusArgs("x", ["MESSAGES"])
    append = C.append_args(Command("a", "APPEND", ["x", ["\\Seen"], b"m"]))
    assert append == C.AppendArgs("x", [C.AppendMessage(["\\Seen"], None, b"m")])
    assert C.enable_args(Command("a", "ENABLE", ["utf8=accept"])) == C.EnableArgs(["utf8=accept"])


def test_no_any_for_commands_in_the_session() -> None:
    access = Path(C.__file__).parents[2] / "access"
    for path in sorted(access.glob("imap*.py")):
        text = path.read_text()
        assert not re.search(r"\b(cmd|event|params|seqset): Any\b", text), path
        assert "def next_event(self) -> Any" not in text, path
