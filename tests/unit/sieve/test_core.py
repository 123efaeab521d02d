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
        ('header :contains "subject:" ""', False),  # not a field name: matches nothing
        ('exists "from:"', False),
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


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("a@example.com", "a@example.com"),
        ('"Stephan Bosch" <"S.Bosch"@example.net>', "S.Bosch@example.net"),
        ('"S[r]us"@example.net', '"S[r]us"@example.net'),
    ],
)
def test_redirect_address_forms(given: str, sent: str) -> None:
    # RFC 5228 §4.2: any RFC 5322 address; sent on as its addr-spec
    text = 'redirect "' + given.replace('"', '\\"') + '";'
    assert run(text).actions == (Redirect(address=sent),)


def test_redirect_invalid_address_at_run_time() -> None:
    with pytest.raises(SieveRuntimeError, match="invalid address"):
        run('require "variables"; set "a" "no address"; redirect "${a}";')


def test_fileinto_the_default_mailbox_is_keep() -> None:
    # RFC 5228 §2.10.3 and §4.3: keep is fileinto the default mailbox; once is enough
    result = run('require "fileinto"; keep; fileinto "inbox"; fileinto "Other";')
    assert result.actions == (Keep(), FileInto(mailbox="Other"))


def test_size_counts_crlf_line_ends() -> None:
    # RFC 5228 §5.9: the size as sent, with CRLF, whether the store keeps LF or CRLF
    message = b"Subject: x\n\nbody\n"
    size = len(message) + 3
    assert run(f"if size :under {size + 1} {{ discard; }}", message).actions == (Discard(),)
    assert run(f"if size :over {size - 1} {{ discard; }}", message).actions == (Discard(),)
    assert run(f"if size :over {size} {{ discard; }}", message).actions == ()


@pytest.mark.parametrize(
    ("path", "test", "expected"),
    [
        ("<@relay.example,@b.example:user@example.org>", ':localpart "to" "user"', True),
        ("<user@example.org>", ':all "to" "user@example.org"', True),
        ("<<user@example.org>", ':all :contains "to" ""', False),
        ("user@example.org>", ':all :contains "to" ""', False),
        ("user@", ':all :contains "to" ""', False),
        ("<MAILER-DAEMON>", ':all "to" "MAILER-DAEMON"', True),
        ("<@.example:user@example.org>", ':domain :contains "to" ""', False),
    ],
)
def test_envelope_paths(path: str, test: str, expected: bool) -> None:
    # RFC 5228 §5.4 with RFC 5321 §4.1.2 paths: source routes ignored, bad paths match nothing
    text = f'require "envelope";\nif envelope {test} {{ discard; }}'
    assert (run(text, recipient=path).actions == (Discard(),)) is expected


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('address :localpart "from" "stephan"', False),
        ('address :all "from" "stephan@"', True),
        ('address :domain "to" "example.org"', False),
        ('address :all "cc" "nonsense"', True),
        ('address :all "resent-to" ""', True),
        ('address :domain "bcc" "frop.example.com"', True),
        ('address :localpart "bcc" ""', False),
    ],
)
def test_invalid_addresses_only_match_all(test: str, expected: bool) -> None:
    # RFC 5228 §2.7.4: an address that does not parse is not matched by :localpart/:domain
    message = (
        b"From: stephan@\r\nTo: @example.org\r\nCc: nonsense\r\nResent-To:\r\n"
        b"Bcc: nico@frop.example.com, @example.org\r\n\r\nTest.\r\n"
    )
    assert (run(f"if {test} {{ discard; }}", message).actions == (Discard(),)) is expected


# -- RFC 5228 §5.1: the address test only on headers with addresses ----------------------


@pytest.mark.parametrize("header", ["frop", "Subject", '["to", "x-mailer"]'])
def test_address_on_a_header_without_addresses_is_a_compile_error(header: str) -> None:
    name = header if header.startswith("[") else f'"{header}"'
    with pytest.raises(SieveError, match=r"holds no addresses \(RFC 5228 §5\.1\)"):
        compile_script(f'if address :is {name} "frml" {{ keep; }}')


@pytest.mark.parametrize(
    "header", ["From", "reply-to", "Resent-Cc", "x-original-to", "mail-followup-to", "from:"]
)
def test_address_headers_compile(header: str) -> None:
    compile_script(f'if address :is "{header}" "frml" {{ keep; }}')


def test_address_on_a_header_named_by_a_variable_matches_nothing() -> None:
    message = b"From: a@example.org\r\nX-Frop: a@example.org\r\n\r\nx\r\n"
    text = (
        'require "variables";\nset "h" "x-frop";\n'
        'if address :is "${h}" "a@example.org" { discard; }'
    )
    assert Discard() not in run(text, message).actions
    text = (
        'require "variables";\nset "h" "from";\nif address :is "${h}" "a@example.org" { discard; }'
    )
    assert Discard() in run(text, message).actions


# -- RFC 5228 §4.2: redirect validates the address ------------------------------------


@pytest.mark.parametrize(
    "address", ["Stephan Bosch error@example.org", " more error @  example.com  "]
)
def test_redirect_refuses_words_that_are_no_addr_spec(address: str) -> None:
    # the lenient address parser ran the words together ("StephanBoscherror@example.org"),
    # so the message would have gone to an address nobody wrote
    with pytest.raises(SieveError, match="redirect needs a valid address"):
        compile_script(f'redirect "{address}";')


@pytest.mark.parametrize(
    ("address", "target"),
    [
        (" more  @  example.com  ", "more@example.com"),
        ("Ok Good <stephan@example.org>", "stephan@example.org"),
        ("a . b@example.com", "a.b@example.com"),
        ('\\"a b\\"@example.com', '"a b"@example.com'),
    ],
)
def test_redirect_addresses_with_spaces_that_are_valid(address: str, target: str) -> None:
    assert run(f'redirect "{address}";').actions == (Redirect(address=target),)
