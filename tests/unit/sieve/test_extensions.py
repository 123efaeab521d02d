"""The extensions of issue 16 that the interpreter itself implements, mostly with the RFCs'
own examples: comparators (RFC 4790, 5051), match types, relational (RFC 5231), subaddress
(RFC 5233), variables (RFC 5229), encoded-character (RFC 5228 §2.4.2.4), imap4flags (RFC
5232), body (RFC 5173), mailbox (RFC 5490), environment (RFC 5183), ihave (RFC 5463) and
regex (draft-ietf-sieve-regex-01)."""

from __future__ import annotations

import pytest

from pochta.sieve.actions import Discard, FileInto, Keep
from pochta.sieve.comparators import ASCII_NUMERIC, UNICODE_CASEMAP
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.match import wildcard_match
from pochta.sieve.script import compile_script

from .helpers import DEFAULT_MESSAGE, run


def discards(text: str, message: bytes | None = None, **kwargs: object) -> bool:
    result = run(text, message or DEFAULT_MESSAGE, **kwargs)  # type: ignore[arg-type]
    return Discard() in result.actions


# -- comparators ----------------------------------------------------------------------


def test_ascii_numeric_order_and_infinity() -> None:
    # RFC 4790 §9.1.1: leading digits; no digits (and "") is +infinity, equal to itself
    cmp = ASCII_NUMERIC.compare
    assert cmp("10", "9") > 0
    assert cmp("007", "7") == 0
    assert cmp("12abc", "12") == 0
    assert cmp("", "99999999") > 0
    assert cmp("abc", "") == 0


def test_unicode_casemap() -> None:
    assert UNICODE_CASEMAP.compare("STRASSE", "straße") == 0
    text = (
        'require "comparator-i;unicode-casemap";\n'
        'if header :is :comparator "i;unicode-casemap" "subject" "ÉTÉ" { discard; }'
    )
    assert discards(text, b"Subject: =?utf-8?q?=C3=A9t=C3=A9?=\r\n\r\n")


# -- match types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key", "expected"),
    [
        ("frop@example.com", "*@*", ["frop@example.com", "frop", "example.com"]),
        ("a-b-c", "*-*", ["a-b-c", "a", "b-c"]),  # the leftmost '*' takes the least
        ("abc", "?b?", ["abc", "a", "c"]),
        ("abc", "a*", ["abc", "bc"]),
        ("a*c", "a\\*c", ["a*c"]),  # an escaped '*' is a literal
        ("abc", "a\\*c", None),
        ("", "*", ["", ""]),
        ("abc", "?", None),
        ("x" * 200, "*a*a*a*a*a*a*a*a*a*a", None),  # fails fast, no exponential search
    ],
)
def test_wildcard_match(value: str, key: str, expected: list[str] | None) -> None:
    assert wildcard_match(value, key) == expected


def test_matches_is_case_insensitive_by_default() -> None:
    assert discards('if header :matches "subject" "FROP?" { discard; }')
    assert not discards('if header :matches :comparator "i;octet" "subject" "FROP?" {discard;}')


# -- relational, RFC 5231 §7 ----------------------------------------------------------

RELATIONAL_MESSAGE = (
    b"Received: ...\r\n"
    b"Received: ...\r\n"
    b"Subject: example\r\n"
    b"To: foo@example.com.invalid, baz@example.com.invalid\r\n"
    b"Cc: qux@example.com.invalid\r\n"
    b"From: Bar <bar@example.com.invalid>\r\n"
    b"X-Priority: 1\r\n"
    b"\r\n"
    b"body\r\n"
)
NUM = ':comparator "i;ascii-numeric"'


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        (f'address :count "ge" {NUM} ["to", "cc"] ["3"]', True),
        (
            f'anyof (address :count "ge" {NUM} ["to"] ["3"], '
            f'address :count "ge" {NUM} ["cc"] ["3"])',
            False,
        ),
        (f'header :count "ge" {NUM} ["received"] ["3"]', False),
        (f'header :count "ge" {NUM} ["received", "subject"] ["3"]', True),
        (f'header :count "ge" {NUM} ["to", "cc"] ["3"]', False),
        (f'header :value "lt" {NUM} ["x-priority"] ["3"]', True),
        ('address :value "gt" :all :comparator "i;ascii-casemap" ["from"] ["M"]', False),
    ],
)
def test_rfc5231_examples(test: str, expected: bool) -> None:
    text = f'require ["relational", "comparator-i;ascii-numeric"];\nif {test} {{ discard; }}'
    assert discards(text, RELATIONAL_MESSAGE) is expected


def test_unknown_relation_is_a_compile_error() -> None:
    with pytest.raises(SieveError, match="unknown relation 'bigger'"):
        compile_script('require "relational"; if header :value "bigger" "a" "b" {}')


# -- subaddress, RFC 5233 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "test", "expected"),
    [
        ("ken+mta-filters@example.org", 'envelope :detail "to" "mta-filters"', True),
        ("ken+mta-filters@example.org", 'envelope :user "to" "ken"', True),
        ("ken+@example.org", 'envelope :detail "to" ""', True),
        ("ken@example.org", 'envelope :detail "to" ""', False),  # no separator, no detail
        ("ken@example.org", 'envelope :user "to" "ken"', True),
        ("ken@example.org", 'envelope :detail :matches "to" "*"', False),
    ],
)
def test_subaddress(recipient: str, test: str, expected: bool) -> None:
    text = f'require ["envelope", "subaddress"];\nif {test} {{ discard; }}'
    assert discards(text, recipient=recipient) is expected


@pytest.mark.parametrize(
    ("delimiter", "recipient", "test", "expected"),
    [
        # several delimiters, Postfix-style: split at the first of any of them
        ("+-", "friep-frop+x@example.org", 'envelope :user "to" "friep"', True),
        ("+-", "friep-frop+x@example.org", 'envelope :detail "to" "frop+x"', True),
        ("-+", "friep+-frop@example.org", 'envelope :detail "to" "-frop"', True),
        ("-", "ken+box@example.org", 'envelope :user "to" "ken+box"', True),
        ("-", "ken+box@example.org", 'envelope :detail :matches "to" "*"', False),
        # "" = no subaddressing: :detail never matches, :user is the whole local part
        ("", "ken+box@example.org", 'envelope :detail :matches "to" "*"', False),
        ("", "ken+box@example.org", 'envelope :user "to" "ken+box"', True),
        # the MTA's exceptions: no split leaving an empty user, postmaster is never split
        ("+", "+box@example.org", 'envelope :detail :matches "to" "*"', False),
        ("-", "owner-list@example.org", 'envelope :user "to" "owner-list"', True),
    ],
)
def test_subaddress_recipient_delimiter(
    delimiter: str, recipient: str, test: str, expected: bool
) -> None:
    text = f'require ["envelope", "subaddress"];\nif {test} {{ discard; }}'
    assert discards(text, recipient=recipient, recipient_delimiter=delimiter) is expected


def test_subaddress_delimiter_applies_to_header_addresses() -> None:
    message = b"From: list_request@example.org\r\nTo: a@example.org\r\n\r\nx\r\n"
    text = 'require "subaddress";\nif address :detail "from" "request" { discard; }'
    assert discards(text, message, recipient_delimiter="+_") is True
    assert discards(text, message) is False


# -- variables, RFC 5229 ----------------------------------------------------------------


def test_set_modifiers_rfc5229_examples() -> None:
    # RFC 5229 §4.1
    text = """require "variables";
set "a" "juMBlEd lETteRS";
set :length "b1" "${a}";
set :lower "b2" "${a}";
set :upperfirst "b3" "${a}";
set :upperfirst :lower "b4" "${a}";
set :quotewildcard "b5" "Rock*";
if allof (string :is "${b1}" "15", string :is :comparator "i;octet" "${b2}" "jumbled letters",
          string :is :comparator "i;octet" "${b3}" "JuMBlEd lETteRS",
          string :is :comparator "i;octet" "${b4}" "Jumbled letters",
          string :is :comparator "i;octet" "${b5}" "Rock\\\\*") { discard; }
"""
    assert discards(text)


def test_match_variables_rfc5229_example() -> None:
    # RFC 5229 §3.2
    text = """require ["variables", "fileinto"];
if header :matches "List-ID" "*<*@*" {
    fileinto "INBOX.lists.${2}"; stop;
}
"""
    result = run(text, b"List-ID: Sieve <sieve.ietf.org>\r\n\r\n")
    assert result.actions == ()
    result = run(text, b"List-ID: Sieve <sieve@ietf.org>\r\n\r\n")
    assert result.actions == (FileInto(mailbox="INBOX.lists.sieve"),)


def test_variables_expand_and_unknown_are_empty() -> None:
    text = (
        'require ["variables", "fileinto"];\n'
        'set "Box" "frop"; fileinto "x.${box}.${nosuch}.${1}.${bad-name}";'
    )
    assert run(text).actions == (FileInto(mailbox="x.frop...${bad-name}"),)


def test_variable_values_are_cut_at_4000_octets() -> None:
    # RFC 5229 §6: a value may be truncated; as Pigeonhole, at 4000 UTF-8 octets, whole chars
    long = "é" * 2500  # 5000 octets
    text = (
        'require ["variables", "relational", "comparator-i;ascii-numeric"];\n'
        f'set "a" "{long}"; set :length "n" "${{a}}";\n'
        'if string :value "eq" :comparator "i;ascii-numeric" "${n}" "2000" { discard; }'
    )
    assert discards(text)


def test_string_count_skips_empty() -> None:
    text = (
        'require ["variables", "relational", "comparator-i;ascii-numeric"];\n'
        'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { discard; }'
    )
    assert discards(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('require "variables"; set "1a" "x";', "not a valid variable name"),
        ('require "variables"; set "frop.x" "x";', "namespace"),
        ('require "variables"; set :lower :upper "a" "x";', "':lower' or ':upper', not both"),
        ('require "variables"; keep :flags "x";', 'needs require "imap4flags"'),
        ('require "variables"; if string "${nosuch.x}" "" {}', "unknown variable namespace"),
    ],
)
def test_variables_compile_errors(text: str, message: str) -> None:
    with pytest.raises(SieveError, match=message):
        compile_script(text)


# -- encoded-character ----------------------------------------------------------------


def test_encoded_character() -> None:
    text = (
        'require ["encoded-character", "fileinto"];\n'
        'fileinto "${hex:42 61 64}${unicode: 263a}${hex:zz}${unicode:}";'
    )
    assert run(text).actions == (FileInto(mailbox="Bad\u263a${hex:zz}${unicode:}"),)
    # without the require the text stays as written
    assert run('require "fileinto"; fileinto "${hex:42}";').actions == (
        FileInto(mailbox="${hex:42}"),
    )
    with pytest.raises(SieveError, match="no Unicode character"):
        compile_script('require "encoded-character"; if header "a" "${unicode:D800}" {}')


# -- imap4flags, RFC 5232 -------------------------------------------------------------


def test_imap4flags() -> None:
    text = """require ["imap4flags", "fileinto"];
setflag "\\\\Seen";
addflag ["\\\\Flagged", "\\\\seen $Work"];
removeflag "\\\\Flagged";
if hasflag :contains "work" { fileinto "Work"; }
fileinto :flags "\\\\Answered" "Done";
keep;
"""
    result = run(text)
    assert result.actions == (
        FileInto(mailbox="Work", flags=frozenset({"\\Seen", "$Work"})),
        FileInto(mailbox="Done", flags=frozenset({"\\Answered"})),
        Keep(flags=frozenset({"\\Seen", "$Work"})),
    )


def test_imap4flags_implicit_keep_and_variable() -> None:
    text = """require ["imap4flags", "variables"];
addflag "flags" "A B";
addflag "\\\\Seen";
if hasflag "flags" "b" { addflag "Got"; }
"""
    result = run(text)
    assert result.implicit_keep
    assert result.keep_flags == frozenset({"\\Seen", "Got"})


# -- body, RFC 5173 --------------------------------------------------------------------

MIME = (
    b"From: a@example.com\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"aMOpbGxvIHdvcmxkCg==\r\n"
    b"--b\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<p>caf=E9</p>\r\n"
    b"--b--\r\n"
)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ('body :contains "héllo"', True),  # base64 and UTF-8 decoded
        ('body :text :contains "café"', True),  # every text part
        ('body :raw :contains "aMOpbGxv"', True),
        ('body :raw :contains "héllo"', False),
        ('body :content "text/html" :contains "café"', True),
        ('body :content "text/html" :contains "héllo"', False),
        ('body :content "multipart" :contains "preamble"', True),
        ('body :content "image" :contains ""', False),
    ],
)
def test_body(test: str, expected: bool) -> None:
    assert discards(f'require "body"; if {test} {{ discard; }}', MIME) is expected


# -- mailbox, environment, ihave, regex ---------------------------------------------


def test_mailbox() -> None:
    text = (
        'require ["mailbox", "fileinto"];\n'
        'if mailboxexists "Lists" { fileinto "Lists"; } else { fileinto :create "Lists"; }'
    )
    assert run(text).actions == (FileInto(mailbox="Lists", create=True),)
    result = run(text, mailbox_exists=lambda name: name == "Lists")
    assert result.actions == (FileInto(mailbox="Lists"),)


def test_environment() -> None:
    text = """require "environment";
if allof (environment "name" "pochta", environment "location" "MDA",
          environment "phase" "during", environment "domain" "mx.example",
          not environment :contains "nosuch" "") { discard; }
"""
    assert discards(text, environment={"domain": "mx.example"})


def test_ihave() -> None:
    # RFC 5463 §4: unknown capabilities make the block never compiled nor run
    text = """require ["ihave", "fileinto"];
if ihave "frobnicate" { frobnicate :wildly "now"; }
elsif ihave "imap4flags" { addflag "X"; fileinto "known"; }
"""
    result = run(text)
    assert result.actions == (FileInto(mailbox="known", flags=frozenset({"X"})),)
    text = 'require "ihave"; if allof (true, ihave "x-frob") { frob; } else { discard; }'
    assert run(text).actions == (Discard(),)
    with pytest.raises(SieveRuntimeError, match="error: broken"):
        run('require "ihave"; error "broken";')
    with pytest.raises(SieveError, match="needs require"):
        compile_script('require "ihave"; addflag "X";')


def test_regex() -> None:
    text = """require ["regex", "variables", "fileinto"];
if header :regex "subject" "^\\\\[([[:alpha:]]+)-([0-9]+)\\\\]" { fileinto "${1}.${2}"; }
"""
    result = run(text, b"Subject: [Bug-42] crash\r\n\r\n")
    assert result.actions == (FileInto(mailbox="Bug.42"),)
    octet = 'require "regex"; if header :regex :comparator "i;octet" "subject" "^frop" {discard;}'
    assert not discards(octet)
    assert discards('require "regex"; if header :regex "subject" "^frop" { discard; }')
    with pytest.raises(SieveError, match="bad regex"):
        compile_script('require "regex"; if header :regex "s" "(ab" {}')
    with pytest.raises(SieveError, match="longer than"):
        compile_script('require "regex"; if header :regex "s" "' + "a" * 2000 + '" {}')


def test_regex_nested_repetition_is_taken_and_answers() -> None:
    # RE2 matches in linear time, so nested repetition need not be refused (it once was)
    for pattern in ("((a+))+x", "((a|b)*)*x", "(a+)+b"):
        text = f'require "regex"; if header :regex "subject" "{pattern}" {{ discard; }}'
        assert not discards(text, b"Subject: " + b"a" * 5000 + b"c\r\n\r\n")
        assert discards(text, b"Subject: aax ab\r\n\r\n")


def test_regex_from_a_variable_is_checked_when_it_runs() -> None:
    text = (
        'require ["regex", "variables"];\n'
        'set "re" "(a+)+b"; if string :regex "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaac" "${re}" '
        "{ discard; }"
    )
    assert run(text).actions == ()
    bad = (
        'require ["regex", "variables"];\nset "re" "(ab"; if string :regex "ab" "${re}" {discard;}'
    )
    assert run(bad).actions == ()


def test_body_of_a_header_only_message_is_absent() -> None:
    # RFC 5173 §5: no empty line after the header: every body test is false
    assert not discards('require "body"; if body :raw :contains "" { discard; }', b"To: a@b\r\n")
    assert discards('require "body"; if body :raw :is "" { discard; }', b"To: a@b\r\n\r\n")


def test_body_does_not_set_match_variables() -> None:
    # RFC 5173 §6
    text = """require ["body", "variables", "fileinto"];
if header :matches "subject" "*" {}
if body :matches "*" { fileinto "${1}"; }
"""
    assert run(text).actions == (FileInto(mailbox="Frop!"),)


def test_body_skips_unknown_encodings_and_strips_html() -> None:
    message = (
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-weird\r\n\r\nHello\r\n"
        b"--o\r\nContent-Type: text/html\r\n\r\n<p class=big>Hi &amp; bye</p>\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
        b"--o--\r\n"
    )
    assert not discards('require "body"; if body :text :contains "Hello" { discard; }', message)
    assert discards('require "body"; if body :text :contains "Hi & bye" { discard; }', message)
    assert not discards('require "body"; if body :text :contains "class" { discard; }', message)
    assert discards('require "body"; if body :text :contains "inner body" { discard; }', message)
    text = 'require "body"; if body :content "message/rfc822" :is "Subject: inner\r\n" {discard;}'
    assert discards(text, message)


def test_ihave_never_reports_variables_or_encoded_character() -> None:
    # RFC 5463 §4
    text = 'require "ihave"; if anyof (ihave "variables", ihave "encoded-character") {discard;}'
    assert not discards(text)
    assert discards('require "ihave"; if ihave "fileinto" { discard; }')


# -- fileinto names that are no mailbox names (RFC 5228 §4.1, RFC 5490) --------------------


def test_fileinto_bad_utf8_fails_the_run_with_invalid_folder_name() -> None:
    text = (
        'require ["fileinto", "variables", "encoded-character"];\n'
        'set "mailbox" "${hex:ff}rop";\nfileinto "${mailbox}";'
    )
    with pytest.raises(SieveRuntimeError) as caught:
        run(text)
    # the octets the user wrote, not Python's surrogate escape
    assert "invalid folder name b'\\xffrop'" in str(caught.value)
    assert "\\udcff" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "a\x01b"])
def test_fileinto_literal_invalid_name_is_a_compile_error(name: str) -> None:
    with pytest.raises(SieveError, match="invalid folder name"):
        compile_script(f'require "fileinto"; fileinto "{name}";')


def test_fileinto_empty_name_from_a_variable_fails_the_run() -> None:
    text = 'require ["fileinto", "variables"];\nset "box" "";\nfileinto "${box}";'
    with pytest.raises(SieveRuntimeError, match="invalid folder name"):
        run(text)


def test_a_bad_regex_from_a_variable_matches_nothing_and_says_why() -> None:
    text = (
        'require ["regex", "variables", "fileinto"];\nset "regex" "[";\n'
        'if header :regex "to" ["${regex}", "example"] { fileinto "frop"; }'
    )
    result = run(text)
    assert [a.mailbox for a in result.actions if isinstance(a, FileInto)] == ["frop"]
    assert len(result.warnings) == 1
    assert "line 3: key '[' matches nothing" in result.warnings[0]
