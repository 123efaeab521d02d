"""RFC 5260 §6 index: :index and :last on header, address and date."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import FileInto
from pochta.sieve.errors import SieveError
from pochta.sieve.script import compile_script

from .helpers import run

MESSAGE = (
    b"To: first@friep.example.com\r\nX-A: First\r\nTo: second@friep.example.com\r\n"
    b"X-A: Second\r\nTo: third@friep.example.com\r\nX-A: Third\r\n"
    b"X-D: Mon, 20 Jul 2009 21:44:43 +0300\r\nX-D: Tue, 21 Jul 2009 10:00:00 +0300\r\n"
    b"Subject: Frop!\r\n\r\nFrop\r\n"
)


def _filed(script: str) -> list[str]:
    return [a.mailbox for a in run(script, MESSAGE).actions if isinstance(a, FileInto)]


def test_header_index() -> None:
    script = """require ["index", "fileinto"];
    if header :index 2 "x-a" "Second" { fileinto "2"; }
    if header :index 2 "x-a" ["First", "Third"] { fileinto "wrong"; }
    if header :index 1 :last "x-a" "Third" { fileinto "last"; }
    if header :index 4 "x-a" "" { fileinto "none"; }
    if header "x-a" "First" { fileinto "plain"; }"""
    assert _filed(script) == ["2", "last", "plain"]


def test_address_index() -> None:
    script = """require ["index", "fileinto"];
    if address :localpart :index 2 "to" "second" { fileinto "2"; }
    if address :localpart :index 2 :last "to" "second" { fileinto "2 from the end"; }
    if address :localpart :index 3 "to" ["first", "second"] { fileinto "wrong"; }"""
    assert _filed(script) == ["2", "2 from the end"]


def test_date_index() -> None:
    script = """require ["index", "date", "fileinto"];
    if date :originalzone :index 2 "x-d" "day" "21" { fileinto "2"; }
    if date :originalzone :index 1 :last "x-d" "weekday" "2" { fileinto "tuesday"; }
    if date :originalzone :index 1 "x-d" "day" "21" { fileinto "wrong"; }"""
    assert _filed(script) == ["2", "tuesday"]


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('if header :index 1 "x" "y" {}', 'needs require "index"'),
        ('require "index"; if header :index "1" "x" "y" {}', "must be a number"),
        ('require "index"; if header :last "x" "y" {}', "':last' needs ':index'"),
        ('require "index"; if address :index 0 "to" "y" {}', "counts from 1"),
    ],
)
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(script)
