"""RFC 5293 editheader: the edits on the raw message (extensions/headeredit.py)."""

from __future__ import annotations

import pytest

from pochta.sieve.extensions.headeredit import (
    add_field,
    delete_fields,
    encode_value,
    field_values,
    is_protected,
    valid_field_name,
    valid_field_value,
)

MESSAGE = (
    b"X-A: First\r\nReceived: by a\r\nX-A: Second\r\nSubject: Frop!\r\nX-A: Third\r\n\r\nBody\r\n"
)


def test_addheader_first_and_last() -> None:
    first = add_field(MESSAGE, "X-New", "one")
    assert first.startswith(b"X-New: one\r\nX-A: First\r\n")
    last = add_field(MESSAGE, "X-New", "two", last=True)
    assert last.endswith(b"X-A: Third\r\nX-New: two\r\n\r\nBody\r\n")


def test_addheader_keeps_lf_messages_lf() -> None:
    out = add_field(b"Subject: x\n\nbody\n", "X-New", "v", last=True)
    assert out == b"Subject: x\nX-New: v\n\nbody\n"


def test_addheader_encodes_non_ascii() -> None:
    # RFC 5293 §4: non-ASCII values are stored as RFC 2047 encoded words.
    out = add_field(MESSAGE, "X-Name", "Één dag")
    assert out.isascii()
    assert field_values(out, "x-name") == ["=?utf-8?b?w4nDqW4gZGFn?="]
    assert encode_value("plain") == "plain"


def test_deleteheader_all_and_by_value() -> None:
    out, n = delete_fields(MESSAGE, "x-a")
    assert n == 3
    assert b"X-A" not in out
    out, n = delete_fields(MESSAGE, "X-A", lambda v: v.startswith("S"))
    assert n == 1
    assert field_values(out, "x-a") == ["First", "Third"]


def test_deleteheader_index_and_last() -> None:
    out, n = delete_fields(MESSAGE, "X-A", index=2)
    assert n == 1
    assert field_values(out, "x-a") == ["First", "Third"]
    out, n = delete_fields(MESSAGE, "X-A", index=1, last=True)
    assert n == 1
    assert field_values(out, "x-a") == ["First", "Second"]
    out, n = delete_fields(MESSAGE, "X-A", index=4)
    assert n == 0
    assert out == MESSAGE
    # The index picks the field, then the value must match too.
    out, n = delete_fields(MESSAGE, "X-A", lambda v: v == "First", index=2)
    assert n == 0


def test_unfolded_values() -> None:
    assert field_values(b"X-F: a\r\n b\r\n\r\n", "x-f") == ["a b"]


def test_protected_and_valid() -> None:
    assert is_protected("Received")
    assert is_protected("AUTO-SUBMITTED")
    assert not is_protected("Subject")
    assert valid_field_name("X-Frop")
    assert not valid_field_name("X Frop")
    assert not valid_field_name("X:F")
    assert not valid_field_name("")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("a b", True), ("a\r\n b", True), ("a\nb", True), ("a\x07", True), ("a\0", False)],
)
def test_valid_values(value: str, ok: bool) -> None:
    assert valid_field_value(value) is ok


def test_multiline_values_are_unfolded() -> None:
    assert encode_value("Frop\nFrml") == "Frop Frml"
    assert encode_value("by sieve.example.com\nid 3; Mon\n") == "by sieve.example.com id 3; Mon"
