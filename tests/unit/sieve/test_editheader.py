"""RFC 5293 editheader: the edits on the raw message (extensions/headeredit.py)."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import FileInto, Keep, Redirect
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.extensions.headeredit import (
    add_field,
    delete_fields,
    encode_value,
    field_values,
    is_protected,
    valid_field_name,
    valid_field_value,
)
from pochta.sieve.script import compile_script

from .helpers import run

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


# -- addheader and deleteheader in scripts (RFC 5293) --------------------------------------

SPAMMY = (
    b"Received: by mx.example.org\r\nX-Spam-Level: ********\r\nX-Spam-Level: **\r\n"
    b"Subject: Win!\r\nFrom: a@example.com\r\n\r\nbody\r\n"
)


def test_edits_are_seen_by_later_tests_and_carried_by_later_actions() -> None:
    # RFC 5293 §4: the header as edited is what later tests and actions see.
    result = run(
        """require ["editheader", "fileinto"];
        keep;
        addheader :last "X-Sieve" "seen";
        if header "x-sieve" "seen" { fileinto "edited"; }
        deleteheader :contains "x-spam-level" "*****";
        redirect "other@example.net";""",
        SPAMMY,
    )
    keep, fileinto, redirect = result.actions
    assert isinstance(keep, Keep)
    assert keep.content is None  # taken before any edit: the message as received
    assert isinstance(fileinto, FileInto)
    assert fileinto.mailbox == "edited"
    assert fileinto.content is not None
    assert b"X-Sieve: seen\r\n\r\nbody" in fileinto.content
    assert b"********" in fileinto.content
    assert isinstance(redirect, Redirect)
    assert redirect.content is not None
    assert b"********" not in redirect.content
    assert b"X-Spam-Level: **\r\n" in redirect.content
    assert result.final_content == redirect.content


def test_implicit_keep_gets_the_edited_message() -> None:
    result = run('require "editheader"; addheader "X-Seen" "1";', SPAMMY)
    assert result.implicit_keep
    assert result.final_content == b"X-Seen: 1\r\n" + SPAMMY


def test_no_edit_no_final_content() -> None:
    assert run('require "editheader"; deleteheader "x-none";', SPAMMY).final_content is None


def test_protected_fields_stay() -> None:
    # RFC 5293 §7: Received and Auto-Submitted cannot be deleted; the run says so.
    message = b"Auto-Submitted: auto-generated\r\n" + SPAMMY
    result = run(
        'require "editheader"; deleteheader "Received"; deleteheader "auto-submitted";',
        message,
    )
    assert result.final_content is None
    assert len(result.warnings) == 2
    assert "protected" in result.warnings[0]


def test_non_ascii_value_is_encoded() -> None:
    result = run('require "editheader"; addheader "X-Note" "Één dag";', SPAMMY)
    assert result.final_content is not None
    assert result.final_content.startswith(b"X-Note: =?utf-8?b?w4nDqW4gZGFn?=\r\n")
    checked = run(
        'require ["editheader", "fileinto"]; addheader "X-Note" "Één dag";'
        ' if header "x-note" "Één dag" { fileinto "decoded"; }',
        SPAMMY,
    )
    assert [a.mailbox for a in checked.actions if isinstance(a, FileInto)] == ["decoded"]


def test_deleteheader_index_needs_no_index_require() -> None:
    # RFC 5293 §5 defines :index/:last on deleteheader itself.
    result = run('require "editheader"; deleteheader :index 1 :last "X-Spam-Level";', SPAMMY)
    assert result.final_content is not None
    assert b"X-Spam-Level: ********\r\n" in result.final_content
    assert b"X-Spam-Level: **\r\n" not in result.final_content


def test_invalid_name_made_by_variables_fails_the_run() -> None:
    with pytest.raises(SieveRuntimeError, match="field name 'X-field:' is invalid"):
        run('require ["editheader", "variables"]; set "h" "X-field:"; addheader "${h}" "v";')


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('require "editheader"; addheader "X field" "v";', "is invalid"),
        ('require "editheader"; deleteheader "X-field:";', "is invalid"),
        ('require "editheader"; deleteheader :last "X-field";', "':last' needs ':index'"),
        ('require "editheader"; addheader "X";', "takes string string"),
        ('addheader "X" "v";', 'needs require "editheader"'),
    ],
)
def test_compile_errors(script: str, error: str) -> None:
    with pytest.raises(SieveError, match=error):
        compile_script(script)


def test_long_ascii_values_are_folded() -> None:
    value = " ".join(["word"] * 40)
    out = add_field(b"Subject: x\r\n\r\nbody\r\n", "X-Long", value)
    first = out.split(b"\r\n")
    assert all(len(line) <= 78 for line in first)
    assert first[1].startswith(b" word")
    assert field_values(out, "x-long") == [value]
