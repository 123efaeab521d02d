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


_SPAM_MESSAGE = (
    b"From: a@example.net\r\nX-Check: Yes, score=7.5 required=5.0\r\n"
    b"X-Max: 15\r\nX-Stars: ***\r\nX-Virus: Found to be infected.\r\n\r\nx\r\n"
)


def test_spam_verdict_read_from_configured_header() -> None:
    # Pigeonhole ext-spamvirustest-common.c: "Name: regex" takes group 1 of the match.
    from tests.sieve.pigeonhole.verdicts import spam_info, virus_info

    settings = {
        "sieve_spamtest_status_header": "X-Check: [a-z]+, score=(-?[0-9.]+)",
        "sieve_spamtest_score_max_header": "X-Max",
    }
    spam = spam_info(_SPAM_MESSAGE, settings)
    assert (spam.tested, spam.score, spam.max_score) == (True, 0.5, 1.0)
    strlen = {
        "sieve_spamtest_status_header": "X-Stars",
        "sieve_spamtest_status_type": "strlen",
        "sieve_spamtest_score_max_value": "6",
    }
    assert spam_info(_SPAM_MESSAGE, strlen).score == 0.5
    # Both maxima (or neither) configured: Dovecot's reload check fails, "not tested".
    both = {**settings, "sieve_spamtest_score_max_value": "10"}
    assert not spam_info(_SPAM_MESSAGE, both).tested
    assert not spam_info(_SPAM_MESSAGE, {}).tested
    text = {
        "sieve_virustest_status_header": "X-Virus: Found to be (.+)\\.",
        "sieve_virustest_status_type": "text",
        "sieve_virustest_text_value/1": "clean",
        "sieve_virustest_text_value/4": "infected",
    }
    assert virus_info(_SPAM_MESSAGE, text).status == 4
    text["sieve_virustest_text_value/4"] = "Infected"  # compared exactly
    assert virus_info(_SPAM_MESSAGE, text).status == 0


def test_config_reload_gives_the_script_the_verdict(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\nrequire "spamtest";\n'
        'test_set "message" text:\nX-Spam: 10\n\nx\n.\n;\n'
        'test "before reload" { if not spamtest :is "0" { test_fail "tested"; } }\n'
        'test_config_set "sieve_spamtest_status_header" "X-Spam";\n'
        'test_config_set "sieve_spamtest_score_max_value" "10";\n'
        'test_config_reload :extension "spamtest";\n'
        'test "after reload" { if not spamtest :is "10" { test_fail "not read"; } }\n',
    )
    assert _statuses(outcome) == {"before reload": PASS, "after reload": PASS}, outcome.blocks


def test_failed_compile_logs_the_summary_error(tmp_path: Path) -> None:
    # Pigeonhole sieve.c sieve_compile_script: one more error, "parse failed" or
    # "validation failed", after the compile errors themselves.
    (tmp_path / "bad-parse.sieve").write_text("keep\n", encoding="utf-8")
    (tmp_path / "bad-valid.sieve").write_text("frobnicate;\n", encoding="utf-8")
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'require "relational";\nrequire "comparator-i;ascii-numeric";\n'
        'test "parse" {\n'
        '  if test_script_compile "bad-parse.sieve" { test_fail "compiled"; }\n'
        '  if not test_error :count "eq" :comparator "i;ascii-numeric" "2" { test_fail "count"; }\n'
        '  if not test_error :index 2 :contains "parse failed" { test_fail "summary"; }\n'
        "}\n"
        'test "validation" {\n'
        '  if test_script_compile "bad-valid.sieve" { test_fail "compiled"; }\n'
        '  if not test_error :count "eq" :comparator "i;ascii-numeric" "2" { test_fail "count"; }\n'
        '  if not test_error :index 2 :contains "validation failed" { test_fail "summary"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {"parse": PASS, "validation": PASS}, outcome.blocks


def test_multiscript_uses_the_delivery_rule(tmp_path: Path) -> None:
    # deliver/sieve_delivery: the next script runs only while the keep is in force; the
    # implicit keep of the last script decides; a failed script keeps the message.
    (tmp_path / "pass.sieve").write_text("# nothing: implicit keep\n", encoding="utf-8")
    (tmp_path / "file.sieve").write_text(
        'require ["fileinto", "mailbox"];\nfileinto :create "Box";\n', encoding="utf-8"
    )
    (tmp_path / "discard.sieve").write_text("discard;\n", encoding="utf-8")
    (tmp_path / "broken.sieve").write_text("frobnicate;\n", encoding="utf-8")
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'test "sequence" {\n'
        '  if not test_multiscript ["pass.sieve", "file.sieve"] { test_fail "failed"; }\n'
        '  if not test_message :folder "Box" 0 { test_fail "not filed"; }\n'
        '  if test_message :folder "INBOX" 0 { test_fail "kept too"; }\n'
        "}\n"
        'test "stops after discard" {\n'
        '  if not test_multiscript ["discard.sieve", "file.sieve"] { test_fail "failed"; }\n'
        '  if test_message :folder "Box" 1 { test_fail "second script ran"; }\n'
        "}\n"
        'test "broken script keeps" {\n'
        '  if test_multiscript ["pass.sieve", "broken.sieve"] { test_fail "succeeded"; }\n'
        '  if not test_message :folder "INBOX" 0 { test_fail "not kept"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {
        "sequence": PASS,
        "stops after discard": PASS,
        "broken script keeps": PASS,
    }, outcome.blocks


def test_append_result_combines_as_delivery(tmp_path: Path) -> None:
    # Pigeonhole multiscript/conflicts.svtest "Duplicates": fileinto INBOX twice and keep
    # are one keep (plan_results: the same folder is one copy).
    (tmp_path / "inbox.sieve").write_text('require "fileinto";\nfileinto "INBOX";\n')
    (tmp_path / "keep.sieve").write_text("keep;\n")
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'require "relational";\nrequire "comparator-i;ascii-numeric";\n'
        'test "dup" {\n'
        '  if not allof (test_script_compile "inbox.sieve", test_script_run) {\n'
        '    test_fail "first";\n  }\n'
        '  if not allof (test_script_compile "inbox.sieve", test_script_run :append_result) {\n'
        '    test_fail "second";\n  }\n'
        '  if not allof (test_script_compile "keep.sieve", test_script_run :append_result) {\n'
        '    test_fail "third";\n  }\n'
        '  if not test_result_action :count "eq" :comparator "i;ascii-numeric" "1" {\n'
        '    test_fail "not one action";\n  }\n'
        '  if not test_result_action :index 1 "keep" { test_fail "not keep"; }\n'
        "}\n",
    )
    assert _statuses(outcome) == {"dup": PASS}, outcome.blocks


def test_failures_directory_expects_every_block_to_fail(tmp_path: Path) -> None:
    # Pigeonhole testsuite -F (the suite's README): a failed block is the expected outcome;
    # a block that passes fails the file.
    (tmp_path / "failures").mkdir()
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\n'
        'test "fails" { test_fail "as it should"; }\n'
        'test "aborts" { test_message :folder "Nowhere" 0; }\n',
        name="failures/all-fail.svtest",
    )
    assert _statuses(outcome) == {"fails": PASS, "aborts": PASS}, outcome.blocks
    outcome = _run(
        tmp_path,
        'require "vnd.dovecot.testsuite";\ntest "fails" { test_fail "x"; }\ntest "passes" { }\n',
        name="failures/one-passes.svtest",
    )
    assert _statuses(outcome) == {"fails": PASS, "passes": FAIL}, outcome.blocks
