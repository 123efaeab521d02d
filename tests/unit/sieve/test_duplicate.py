"""RFC 7352 duplicate: the id, the tracker, and what is recorded for the delivery side."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pochta.sieve.actions import Discard, FileInto
from pochta.sieve.errors import SieveError
from pochta.sieve.extensions.duplicate import duplicate_id
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import compile_script

from .helpers import run

MESSAGE = (
    b"From: a@example.com\r\nTo: me@example.org\r\nMessage-ID: <1234@example.com>\r\n"
    b"X-Ticket: 77\r\nSubject: x\r\n\r\nbody\r\n"
)


@dataclass
class Tracker:
    """A DuplicateTracker that remembers what it was asked."""

    known: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    def seen(self, duplicate_id: str) -> bool:
        self.asked.append(duplicate_id)
        return duplicate_id in self.known


def test_rfc7352_example_discard_duplicates() -> None:
    # RFC 7352 §3.1's first example: discard a message seen before.
    script = 'require ["duplicate", "fileinto", "mailbox"]; if duplicate { discard; stop; }'
    tracker = Tracker()
    first = run(script, MESSAGE, duplicates=tracker)
    assert first.actions == ()
    assert first.implicit_keep
    message_id = duplicate_id("", "<1234@example.com>")
    assert first.duplicate_ids == ((message_id, SieveLimits().duplicate_default_period_seconds),)
    tracker.known.add(message_id)
    second = run(script, MESSAGE, duplicates=tracker)
    assert second.actions == (Discard(),)
    assert second.duplicate_ids == ()  # seen, no :last: the first period keeps running


def test_header_uniqueid_handle_and_seconds() -> None:
    # RFC 7352 §3.1 example 2: by a header, under a handle, with its own period.
    tracker = Tracker()
    result = run(
        """require ["duplicate", "variables", "fileinto"];
        if duplicate :header "X-Ticket" :handle "tickets" :seconds 1800 { fileinto "dup"; }
        if header :matches "subject" "*" { set "s" "${1}"; }
        if duplicate :uniqueid "${s}" :handle "subjects" { fileinto "dup2"; }""",
        MESSAGE,
        duplicates=tracker,
    )
    assert result.actions == ()
    assert tracker.asked == [duplicate_id("tickets", "77"), duplicate_id("subjects", "x")]
    assert result.duplicate_ids == (
        (duplicate_id("tickets", "77"), 1800),
        (duplicate_id("subjects", "x"), SieveLimits().duplicate_default_period_seconds),
    )


def test_handles_keep_ids_apart() -> None:
    assert duplicate_id("a", "x") != duplicate_id("b", "x")
    assert duplicate_id("", "ab") != duplicate_id("a", "b")


def test_last_records_again() -> None:
    # RFC 7352 §3.4: with :last the period runs from the latest message.
    key = duplicate_id("", "<1234@example.com>")
    result = run(
        'require ["duplicate", "fileinto"]; if duplicate :last :seconds 60 { fileinto "d"; }',
        MESSAGE,
        duplicates=Tracker(known={key}),
    )
    assert result.actions == (FileInto(mailbox="d"),)
    assert result.duplicate_ids == ((key, 60),)


def test_missing_field_is_never_a_duplicate() -> None:
    result = run(
        'require "duplicate"; if duplicate :header "x-none" { discard; }',
        MESSAGE,
        duplicates=Tracker(known={duplicate_id("", "")}),
    )
    assert result.actions == ()
    assert result.duplicate_ids == ()


def test_without_a_tracker_nothing_is_a_duplicate() -> None:
    result = run('require "duplicate"; if duplicate { discard; }', MESSAGE)
    assert result.actions == ()
    assert len(result.duplicate_ids) == 1


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "duplicate"; duplicate;', "is a test, not a command"),
        ('require "duplicate"; if duplicate :header "X" :uniqueid "y" {}', "not both"),
        ('require "duplicate"; if duplicate :seconds "a" {}', "must be a number"),
        ('require "duplicate"; if duplicate "frop" {}', "positional"),
    ],
)
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(script)
