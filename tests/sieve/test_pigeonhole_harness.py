"""The Pigeonhole harness itself: that it finds blocks, tells pass from fail, and keeps the
testsuite's global state as the suite's README says. Without these, a harness that called
every block passed would make test_pigeonhole.py pass too."""

from __future__ import annotations

from pathlib import Path

from tests.sieve.pigeonhole.harness import run_file
from tests.sieve.pigeonhole.layout import load
from tests.sieve.pigeonhole.outcome import FAIL, PASS, SKIP, FileOutcome
from tests.sieve.pigeonhole.world import envelope_for


def _run(tmp_path: Path, text: str, name: str = "case.svtest") -> FileOutcome:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return run_file(load(path, tmp_path))


def _statuses(outcome: FileOutcome) -> dict[str, str]:
    return {b.name: b.status for b in outcome.blocks}


def test_blocks_found_outside_comments_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "x.svtest"
    path.write_text(
        'require "vnd.dovecot.testsuite";\n'
        '/* test "commented" { } */\n'
        '# test "hashed" { }\n'
        'test "Quote \\"x\\"" { }\n'
        'test_set "message" text:\ntest "in text" {\n.\n;\n'
        'test "twice" { }\ntest "twice" { }\n',
        encoding="utf-8",
    )
    assert load(path, tmp_path).blocks == ('Quote "x"', "twice", "twice#2")


def test_pass_fail_and_state_across_blocks(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'test "default message" {\n'
        '  if not header :is "subject" "Frop!" { test_fail "default subject"; }\n'
        "}\n"
        'test "fails" { test_fail "on purpose"; }\n'
        'test_set "message" text:\n'
        "From: a@example.net\nTo: b@example.org\nSubject: Two\n\nx\n.\n;\n"
        'test "message persists" {\n'
        '  if not header :is "subject" "Two" { test_fail "message not set"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {
        "default message": PASS,
        "fails": FAIL,
        "message persists": PASS,
    }
    assert "on purpose" in outcome.blocks[1].reason


def test_compile_error_fails_every_block(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\ntest "a" { }\ntest "b" { frobnicate; }\n',
    )
    assert _statuses(outcome) == {"a": FAIL, "b": FAIL}
    assert outcome.file_error.startswith("does not compile")


def test_fileinto_execute_and_read_back(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\nrequire "fileinto";\nrequire "mailbox";\n'
        'test "store" {\n'
        '  fileinto :create "INBOX.Box";\n'
        '  if not test_result_execute { test_fail "execute failed"; }\n'
        '  if not test_message :folder "INBOX.Box" 0 { test_fail "not stored"; }\n'
        '  if test_message :folder "INBOX.Box" 1 { test_fail "stored twice"; }\n'
        '  if not header :is "subject" "Frop!" { test_fail "wrong message"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {"store": PASS}, outcome.blocks


def test_unmapped_setting_skips_the_block(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'test "needs setting" {\n'
        '  test_config_set "sieve_frobnicate" "1";\n'
        '  test_fail "should have been skipped";\n'
        "}\n"
        'test "after" { }\n',
    )
    assert _statuses(outcome) == {"needs setting": SKIP, "after": PASS}
    assert "sieve_frobnicate" in outcome.blocks[0].reason


def test_envelope_rules() -> None:
    env = envelope_for(
        b"Return-path: <rp@example.net>\r\nFrom: f@example.net\r\n"
        b"Envelope-To: et@example.org\r\nTo: t@example.org\r\n\r\nx\r\n"
    )
    assert (env.sender, env.recipient, env.original_recipient) == (
        "rp@example.net",
        "et@example.org",
        "et@example.org",
    )
    env = envelope_for(b"Sender: s@example.net\r\nFrom: f@example.net\r\n\r\nx\r\n")
    assert (env.sender, env.recipient) == ("s@example.net", "recipient@example.com")
    env = envelope_for(b"Subject: none\r\n\r\nx\r\n")
    assert env.sender == "sender@example.com"


def test_failed_action_falls_back_to_keep(tmp_path: Path) -> None:
    # RFC 5228 §2.10.6, as the delivery side does it: a fileinto that fails keeps the message.
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\nrequire "fileinto";\n'
        'test "missing mailbox" {\n'
        '  fileinto "Nowhere";\n'
        '  if test_result_execute { test_fail "execute should fail"; }\n'
        '  if not test_error :contains "Nowhere" { test_fail "no error logged"; }\n'
        '  if not test_message :folder "INBOX" 0 { test_fail "not kept"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {"missing mailbox": PASS}, outcome.blocks
