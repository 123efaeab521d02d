"""docs/admin-guide.md runs as written: each section's files, config and commands, in order,
against one `pochta init` of example.org (mail.example.org), comparing the output shown.

The guide's conventions: a ```` ```text file=PATH ```` block is a file to write, a
```` ```toml ```` block is added to pochta.toml (each key replaces the one `pochta init`
wrote), and in a ```` ```console ```` block each ``$ pochta ...`` line (optionally
``echo 'X' | pochta ...``) is run, and the lines up to the next ``$`` are its exact output.
``/etc/pochta/`` stands for a directory of the test's own, ``/var/lib/pochta/`` for the
data directory.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import PochtaEnv, make_pochta_env, set_key

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "admin-guide.md"
_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```$", re.M | re.S)
_ECHO = re.compile(r"echo '([^']*)' \| (pochta .*)")


@dataclass
class Command:
    argv: list[str]
    stdin: str | None
    expected: list[str]


@dataclass
class Section:
    title: str
    files: dict[str, str] = field(default_factory=dict)
    config: list[dict[str, dict[str, object]]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


def sections(text: str, etc: Path, data: Path | None = None) -> list[Section]:
    text = text.replace("/etc/pochta/", f"{etc}/")
    if data is not None:
        text = text.replace("/var/lib/pochta/", f"{data}/")
    out: list[Section] = []
    for chunk in re.split(r"^## ", text, flags=re.M)[1:]:
        section = Section(chunk.splitlines()[0])
        for info, body in _FENCE.findall(chunk):
            words = info.split()
            if words[:1] == ["toml"]:
                section.config.append(tomllib.loads(body))
            elif words[:1] == ["text"] and words[1:2] and words[1].startswith("file="):
                section.files[words[1].removeprefix("file=")] = body
            elif words[:1] == ["console"]:
                section.commands.extend(_commands(body))
        out.append(section)
    return out


def _commands(body: str) -> list[Command]:
    commands: list[Command] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            command = line[2:]
            stdin = None
            if found := _ECHO.fullmatch(command):
                stdin, command = found.group(1) + "\n", found.group(2)
            argv = shlex.split(command)
            assert argv[0] == "pochta", line
            commands.append(Command(argv[1:], stdin, []))
        else:
            assert commands, f"output before any command: {line!r}"
            commands[-1].expected.append(line)
    return commands


@pytest.fixture(scope="module")
def guide_env(tmp_path_factory: pytest.TempPathFactory) -> PochtaEnv:
    return make_pochta_env(tmp_path_factory.mktemp("guide") / "data", "mail.example.org")


def _who_runs_files(alias_file: Path) -> str:
    """local(8): the alias file's owner, nobody for root."""
    uid = alias_file.stat().st_uid
    return "nobody" if uid == 0 else pwd.getpwuid(uid).pw_name


def test_the_guide_has_examples_in_every_section(tmp_path: Path) -> None:
    found = sections(GUIDE.read_text(), tmp_path)
    titles = [s.title for s in found]
    for topic in (
        "Address classes",
        "Tables and their types",
        "Aliases",
        "Transports",
        "Relay domains and backup MX",
        "Quotas",
        "Password schemes",
        "Migrating a Postfix + Dovecot install",
    ):
        assert topic in titles, titles
    for section in found:
        assert section.commands, f"{section.title}: no example to run"


def test_the_guide_runs_as_written(guide_env: PochtaEnv, tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    # pochta init in the guide made example.org; the fixture's init made example.test too.
    guide_env.run("domain", "add", "example.org", "--no-dkim", check=True)
    for section in sections(GUIDE.read_text(), etc, guide_env.data_dir):
        for path, body in section.files.items():
            Path(path).write_text(body)
        for fragment in section.config:
            for table, keys in fragment.items():
                for key, value in keys.items():
                    set_key(guide_env.config_path, table, key, json.dumps(value))
        checked = guide_env.run("check")
        assert checked.returncode == 0, f"{section.title}: {checked.stdout}{checked.stderr}"
        for command in section.commands:
            proc = guide_env.run(*command.argv, input=command.stdin)
            expected = command.expected
            if any(" as nobody" in line for line in expected) and os.geteuid() != 0:
                owner = _who_runs_files(etc / "aliases")
                expected = [line.replace(" as nobody", f" as {owner}") for line in expected]
            where = f"{section.title}: pochta {shlex.join(command.argv)}"
            assert proc.stdout.splitlines() == expected, f"{where}\n{proc.stdout}{proc.stderr}"
            if not any("refused" in line for line in expected):
                assert proc.returncode == 0, f"{where} exited {proc.returncode}: {proc.stderr}"
