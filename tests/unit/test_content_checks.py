"""cleanup/content_checks.py without a server: what is a header, a MIME header, a nested
message's header and a body line, and which bytes come out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pochta.cleanup.content_checks import BODY_CHECKS_SIZE_LIMIT, ContentChecks, open_checks
from pochta.cleanup.pipeline import Cleanup, CleanupInput, CleanupResult
from pochta.config.settings import TablesSettings
from pochta.protocols.smtp.replies import Reply
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings

INFO = CleanupInput(sender="a@example.org", recipients=["b@example.test"], queue_id="Q1")


def checks(tmp_path: Path, header: str = "", body: str = "") -> ContentChecks:
    specs: dict[str, list[str]] = {"header": [], "body": []}
    for name, text in (("header", header), ("body", body)):
        if text:
            path = tmp_path / name
            path.write_text(text)
            specs[name] = [f"regexp:{path}"]
    return ContentChecks(open_checks(specs["header"]), open_checks(specs["body"]))


def run(filter_: ContentChecks, content: bytes) -> CleanupResult | Reply:
    return filter_.check(CleanupResult(content, "a@example.org", ["b@example.test"]), INFO)


NESTED = (
    b"Subject: outer\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"preamble line\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"X-Inner: yes\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def test_nested_message_headers_are_headers(tmp_path: Path) -> None:
    # nested_header_checks = $header_checks: an attached message's header is checked too.
    found = run(checks(tmp_path, header="/^Subject: inner$/ REJECT inner seen\n"), NESTED)
    assert found == Reply(550, "5.7.1", "inner seen")


def test_mime_headers_are_not_body_lines(tmp_path: Path) -> None:
    body = "/^(Content-Type|Subject|--b1)/ REJECT body saw a header\n"
    found = run(checks(tmp_path, body=body), NESTED)
    assert isinstance(found, CleanupResult)
    body_hit = run(checks(tmp_path, body="/^inner body$/ REJECT x\n/^epilogue$/ WARN\n"), NESTED)
    assert body_hit == Reply(550, "5.7.1", "x")


def test_untouched_message_is_byte_identical(tmp_path: Path) -> None:
    found = run(checks(tmp_path, header="/^X-Nothing:/ IGNORE\n", body="/^zzz$/ IGNORE\n"), NESTED)
    assert isinstance(found, CleanupResult)
    assert found.content == NESTED


def test_ignore_removes_a_folded_header(tmp_path: Path) -> None:
    found = run(checks(tmp_path, header="/^X-Inner:/ IGNORE\n"), NESTED)
    assert isinstance(found, CleanupResult)
    assert found.content == NESTED.replace(b"X-Inner: yes\r\n", b"")


def test_body_checks_stop_at_the_size_limit(tmp_path: Path) -> None:
    # body_checks_size_limit = 51200: only that much of each part is inspected.
    filler = b"x" * 78 + b"\r\n"
    lines = filler * (BODY_CHECKS_SIZE_LIMIT // len(filler) + 1)
    tables = checks(tmp_path, body="/^bad$/ REJECT\n")
    late = run(tables, b"Subject: s\r\n\r\n" + lines + b"bad\r\n")
    assert isinstance(late, CleanupResult)
    early = run(tables, b"Subject: s\r\n\r\nbad\r\n" + lines)
    assert isinstance(early, Reply)


def test_first_reject_wins_and_hold_is_the_verdict(tmp_path: Path) -> None:
    tables = checks(tmp_path, header="/^Subject: h/ HOLD wait\n/^X-R:/ REJECT no\n")
    held = run(tables, b"Subject: h\r\n\r\nbody\r\n")
    assert isinstance(held, CleanupResult)
    assert (held.verdict.action, held.verdict.reason) == ("hold", "wait")
    assert run(tables, b"Subject: h\r\nX-R: 1\r\n\r\nbody\r\n") == Reply(550, "5.7.1", "no")


@pytest.fixture(scope="module")
def any_checks(tmp_path_factory: pytest.TempPathFactory) -> ContentChecks:
    path = tmp_path_factory.mktemp("checks")
    return checks(path, header="/^X-Drop:/ IGNORE\n", body="/^nothing-matches-this$/ IGNORE\n")


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=2000))
def test_any_content_passes_unchanged_when_nothing_matches(
    any_checks: ContentChecks, content: bytes
) -> None:
    content = content.replace(b"X-Drop", b"X-Keep")
    found = run(any_checks, content)
    assert isinstance(found, CleanupResult)
    assert found.content == content


async def test_a_later_filter_does_not_undo_hold(tmp_path: Path) -> None:
    # header_checks HOLD, then a spam filter that files the message into Junk: still held,
    # and Junk is where it goes once released.
    path = tmp_path / "header_checks"
    path.write_text("/^Subject: hold me/ HOLD review\n")
    tables = TablesSettings(header_checks=[f"regexp:{path}"])
    settings = make_settings({"server.hostname": "mail.example.test", "tables": tables})

    async def junk(result: CleanupResult, info: CleanupInput) -> CleanupResult:
        return result.decide("folder", "spam", folder="Junk")

    cleanup = Cleanup(settings, ConfiguredTables.open(tables), filters=[junk])
    found = await cleanup.process(b"Subject: hold me\r\n\r\nbody\r\n", INFO)
    assert (found.verdict.action, found.verdict.reason, found.verdict.folder) == (
        "hold",
        "review",
        "Junk",
    )
    plain = await cleanup.process(b"Subject: other\r\n\r\nbody\r\n", INFO)
    assert plain.verdict.action == "folder"
