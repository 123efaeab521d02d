"""What pochta says it is stays in step: `pochta --help`, pyproject's description and the
README name the same features, and each names only what a module implements."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

from click.testing import CliRunner

from pochta.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]

# Each feature a summary may claim, with the module that implements it.
FEATURES = {
    "SMTP": "pochta.protocols.smtp.server",
    "IMAP": "pochta.access.imap",
    "POP3": "pochta.access.pop3",
    "Sieve": "pochta.sieve.script",
    "ManageSieve": "pochta.access.managesieve",
    "SPF": "pochta.mailauth.spf",
    "DKIM": "pochta.mailauth.dkim_sign",
    "DMARC": "pochta.mailauth.dmarc",
    "spam filtering": "pochta.spam.scanner",
}


def _claims(text: str) -> set[str]:
    flat = " ".join(text.split()).lower()  # --help wraps its lines
    return {name for name in FEATURES if name.lower() in flat}


def test_help_names_what_pyproject_names_and_each_exists() -> None:
    described = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"]
    summary = CliRunner().invoke(cli, ["--help"]).output.split("Options:")[0]
    claimed = _claims(described)
    assert claimed, described
    assert claimed <= _claims(summary), (described, summary)
    for name in _claims(summary) | claimed:
        importlib.import_module(FEATURES[name])


def test_readme_opening_names_the_same_features() -> None:
    opening = (ROOT / "README.md").read_text().split("\n\n")[1]
    summary = CliRunner().invoke(cli, ["--help"]).output.split("Options:")[0]
    # The README's first paragraph names the mail protocols and the checks as --help does.
    for name in ("SMTP", "IMAP", "POP3", "SPF", "DKIM", "DMARC"):
        assert name in opening, name
        assert name in summary, name
