"""RFC 5228 core: the compiler's checks, control, tests, actions and the run limits."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import Discard, FileInto, Keep, Redirect, Reject
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import CAPABILITIES, compile_script, run_script

from .helpers import context, run

RFC5228_EXAMPLE = """#
# Example Sieve Filter
# Declare any optional features or extension used by the script
#
require ["fileinto"];

#
# Handle messages from known mailing lists
# Move messages from IETF filter discussion list to filter mailbox
#
if header :is "Sender" "owner-ietf-mta-filters@imc.org"
        {
        fileinto "filter";  # move to "filter" mailbox
        }
#
# Keep all messages to or from people in my company
#
elsif address :DOMAIN :is ["From", "To"] "example.com"
        {
        keep;               # keep in "In" mailbox
        }

#
# Try and catch unsolicited email.  If a message is not to me,
# or it contains a subject known to be spam, file it away.
#
elsif anyof (NOT address :all :contains
               ["To", "Cc", "Bcc"] "me@example.com",
             header :matches "subject"
               ["*make*money*fast*", "*university*dipl*mas*"])
        {
        fileinto "spam";   # move to "spam" mailbox
        }
else
        {
        # Move all other (non-company) mail to "personal"
        # mailbox.
        fileinto "personal";
        }
"""


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("Sender: owner-ietf-mta-filters@imc.org\r\nFrom: a@b.example", FileInto(mailbox="filter")),
        ("From: Boss <boss@EXAMPLE.com>\r\nTo: me@example.com", Keep()),
        ("From: x@spam.example\r\nTo: you@example.net", FileInto(mailbox="spam")),
        (
            "From: x@spam.example\r\nTo: y@example.net\r\nCc: me@example.com\r\n"
            "Subject: Make MONEY fast now",
            FileInto(mailbox="spam"),
        ),
        ("From: friend@home.example\r\nCc: me@example.com", FileInto(mailbox="personal")),
    ],
)
def test_rfc5228_section9_example(headers: str, expected: object) -> None:
    result = run(RFC5228_EXAMPLE, headers.encode() + b"\r\n\r\nbody\r\n")
    assert result.actions == (expected,)
    assert result.implicit_keep is False


def test_implicit_keep_stays_without_actions() -> None:
    # RFC 5228 §2.10.2
    result = run("if false { discard; }")
    assert result.actions == ()
    assert result.implicit_keep is True


def test_stop_ends_the_run() -> None:
    result = run("discard; stop; keep;")
    assert result.actions == (Discard(),)
    assert result.implicit_keep is False


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("frobnicate;", "unknown command 'frobnicate'", (1, 1)),
        ('fileinto "x";', "command 'fileinto' needs require \"fileinto\"", (1, 1)),
        ('require "nosuch";', "unsupported extension 'nosuch' in require", (1, 9)),
        ('keep;\nrequire "fileinto";', "'require' must come before every other command", (2, 1)),
        ("else { keep; }", "'else' must follow 'if' or 'elsif'", (1, 1)),
        ('if header "a" { keep; }', "test 'header' takes string-list string-list", (1, 4)),
        ("if size 10 { keep; }", "test 'size' needs ':over' or ':under'", (1, 4)),
        ("if size :over :under 10 {}", "test 'size' takes ':over' or ':under', not both", (1, 15)),
        ('if header :is :contains "a" "b" {}', "test 'header' takes one match type", (1, 15)),
        ('if header :frop "a" "b" {}', "unknown tag ':frop' for test 'header'", (1, 11)),
        ("if keep {}", "'keep' is a command, not a test", (1, 4)),
        ("if true;", "expected a block", (1, 1)),
        ("keep { }", "expected ';' after command 'keep', not a block", (1, 1)),
        ('if size :over "a" {}', "argument 1 of test 'size' must be a number", (1, 15)),
        ("if true true {}", "test 'true' takes no test", (1, 9)),
        ("if anyof true {}", "test 'anyof' needs a test list", (1, 4)),
        ('if header :comparator "i;ascii-numeric" "a" "1" {}', "needs require", (1, 11)),
        ('if header :comparator "x;nope" "a" "1" {}', "unknown comparator 'x;nope'", (1, 11)),
        ('redirect "not an address";', "redirect needs a valid address", (1, 1)),
        ('if exists "bad header:" {}', "is not a valid header field name", (1, 4)),
        (
            'require ["comparator-i;ascii-numeric"];\n'
            'if header :contains :comparator "i;ascii-numeric" "a" "1" {}',
            "comparator 'i;ascii-numeric' cannot be used with ':contains'",
            (2, 4),
        ),
    ],
)
def test_compile_errors_have_a_position(text: str, message: str, where: tuple[int, int]) -> None:
    with pytest.raises(SieveError) as e:
        compile_script(text)
    assert message in e.value.message
    assert (e.value.line, e.value.column) == where


def test_compile_reports_every_error() -> None:
    with pytest.raises(SieveError) as e:
        compile_script("frop;\nkeep;\nfriep;\n")
    assert [(x.line, x.message) for x in e.value.errors] == [
        (1, "unknown command 'frop'"),
        (3, "unknown command 'friep'"),
    ]


def test_extensions_argument_restricts_require() -> None:
    with pytest.raises(SieveError, match="unsupported extension 'fileinto'"):
        compile_script('require "fileinto";', extensions=["envelope"])
    compile_script('require "fileinto";', extensions=["fileinto"])


def test_capabilities_lists_the_extensions() -> None:
    for name in ("fileinto", "envelope", "copy", "reject", "ereject", "relational"):
        assert name in CAPABILITIES


MESSAGE = (
    b'From: "Frop" <frop@example.com>\r\n'
    b"To: undisclosed:;, Team: a@one.example, B <b+tag@Two.Example>;\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= is\r\n open\r\n"
    b"X-Empty:\r\n"
    b"\r\n"
    b"body text\r\n"
)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('header :is "subject" "café is open"', True),  # RFC 2047 decoded, unfolded
        ('header :contains "Subject" "CAFÉ"', False),  # i;ascii-casemap folds ASCII only
        ('header :contains "Subject" "CAFé"', True),
        ('header :is "x-empty" ""', True),
        ('header :is "x-missing" ""', False),
        ('exists ["from", "x-empty"]', True),
        ('exists ["from", "x-missing"]', False),
        ('address :is "from" "frop@example.com"', True),
        ('address :localpart "from" "frop"', True),
        ('address :domain :is "to" "two.example"', True),  # group members are addresses
        ('address :all :is "to" "b+tag@Two.Example"', True),
        ('address :is "to" "Team"', False),  # a group's name is not an address
        ('address :matches :localpart "to" "b+*"', True),
        (f"size :over {len(MESSAGE) - 1}", True),
        (f"size :over {len(MESSAGE)}", False),
        (f"size :under {len(MESSAGE)}", False),
        (f"size :under {len(MESSAGE) + 1}", True),
        ('allof (true, header :is "subject" "nope")', False),
        ('anyof (false, header :contains "subject" "open")', True),
        ('not exists "x-missing"', True),
        ('header :is :comparator "i;octet" "from" "\\"frop\\" <frop@example.com>"', False),
        ('header :is :comparator "i;octet" "from" "\\"Frop\\" <frop@example.com>"', True),
    ],
)
def test_core_tests(test: str, expected: bool) -> None:
    result = run(f"if {test} {{ discard; }}", MESSAGE)
    assert (result.actions == (Discard(),)) is expected


def test_envelope() -> None:
    text = 'require "envelope";\nif envelope :domain "to" "example.org" { discard; }\n'
    assert run(text).actions == (Discard(),)
    text = 'require "envelope";\nif envelope :is "from" "" { discard; }'
    assert run(text, sender="").actions == (Discard(),)
    with pytest.raises(SieveError, match="unknown envelope part 'body'"):
        compile_script('require "envelope";\nif envelope "body" "x" {}')


def test_duplicate_actions_are_one() -> None:
    # RFC 5228 §2.10.3
    text = (
        'require "fileinto";\n'
        'fileinto "a"; fileinto "a"; keep; keep;\n'
        'redirect "x@example.com"; redirect "x@EXAMPLE.com";'
    )
    result = run(text)
    assert result.actions == (FileInto(mailbox="a"), Keep(), Redirect(address="x@example.com"))


def test_copy_keeps_the_implicit_keep() -> None:
    # RFC 3894 §3
    text = 'require ["copy", "fileinto"];\nredirect :copy "x@example.com"; fileinto :copy "b";'
    result = run(text)
    assert result.implicit_keep is True
    assert result.actions == (Redirect(address="x@example.com"), FileInto(mailbox="b"))
    with pytest.raises(SieveError, match='needs require "copy"'):
        compile_script('redirect :copy "x@example.com";')


@pytest.mark.parametrize(
    "text",
    [
        'require ["reject", "fileinto"]; fileinto "a"; reject "no";',
        'require ["reject"]; reject "no"; keep;',
        'require ["reject"]; redirect "a@example.com"; reject "no";',
        'require ["reject", "ereject"]; reject "no"; ereject "no";',
    ],
)
def test_reject_conflicts(text: str) -> None:
    # RFC 5429 §2.1.3
    with pytest.raises(SieveRuntimeError, match="reject"):
        run(text)


def test_reject_and_ereject() -> None:
    result = run('require "ereject"; ereject "go away";')
    assert result.actions == (Reject(reason="go away", extended=True),)
    assert result.implicit_keep is False
    result = run('require "reject"; discard; reject "no";')
    assert result.actions == (Discard(), Reject(reason="no"))


def test_max_actions() -> None:
    limits = SieveLimits(max_actions=2)
    text = 'require "fileinto"; fileinto "a"; fileinto "b"; fileinto "c";'
    with pytest.raises(SieveRuntimeError, match="max_actions"):
        run(text, limits=limits)
    run('require "fileinto"; fileinto "a"; fileinto "b"; fileinto "a";', limits=limits)


def test_max_redirects() -> None:
    limits = SieveLimits(max_redirects=1)
    with pytest.raises(SieveRuntimeError, match="max_redirects"):
        run('redirect "a@example.com"; redirect "b@example.com";', limits=limits)
    run('redirect "a@example.com"; redirect "a@example.com";', limits=limits)


def test_max_run_seconds_with_an_injected_clock() -> None:
    ticks = iter(range(1000))
    limits = SieveLimits(max_run_seconds=3)
    script = compile_script("keep; keep; keep; keep; keep;")
    with pytest.raises(SieveRuntimeError, match="max_run_seconds"):
        run_script(script, context(clock=lambda: float(next(ticks))), limits=limits)
    result = run_script(script, context(clock=lambda: 0.0), limits=limits)
    assert result.actions == (Keep(),)


def test_redirect_invalid_address_at_run_time() -> None:
    with pytest.raises(SieveRuntimeError, match="invalid address"):
        run('require "variables"; set "a" "no address"; redirect "${a}";')
