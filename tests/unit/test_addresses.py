"""Address lists (RFC 5322 §3.4) as IMAP reports them, and (at the end) the directory's
check of the addresses that name mailbox directories.

Examples of each rule (alone, three times in a list and as members of a group, with and
without the MISSING_* fill) and the messages of imaptest's fetch-envelope and
search-addresses tests (whose expected answers are Dovecot's), run through ENVELOPE
(access/imap_mime.py) and SEARCH (access/imap_search.py); the sort-* ones are in
test_sort_thread.py. Properties
(STYLE.md §8): any text parses without raising, and well-formed lists survive
``parse(format(parse(x)))``.
"""

from __future__ import annotations

import os
import string
import unicodedata
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.access.imap_headers import header_fields
from pochta.access.imap_mime import envelope, parse_structure
from pochta.access.imap_search import SearchContext, evaluate
from pochta.access.mailbox_view import MailboxView
from pochta.directory.addresses import AddressError, check_mailbox_address
from pochta.mime.addresses import Address, format_address_list, parse_address_list
from pochta.protocols.imap.values import IMAPValue
from pochta.store import FolderChanges, MessageInfo
from pochta.store.maildir import MaildirStore

GROUP_START = Address(mailbox="group")
GROUP_END = Address()


def A(
    name: str | None, route: str | None, mailbox: str, domain: str, invalid: bool = False
) -> Address:
    return Address(name, route, mailbox, domain, invalid)


# (field value, entries without fill, entries with fill, canonical form)
CASES: list[tuple[str, list[Address], list[Address], str]] = [
    ("a@example.org", [A(None, None, "a", "example.org")], [A(None, None, "a", "example.org")],
     "<a@example.org>"),
    ("Ann Lee <ann@example.org>", [A("Ann Lee", None, "ann", "example.org")],
     [A("Ann Lee", None, "ann", "example.org")], "Ann Lee <ann@example.org>"),
    ('"Lee, Ann" <ann@example.org>', [A("Lee, Ann", None, "ann", "example.org")],
     [A("Lee, Ann", None, "ann", "example.org")], '"Lee, Ann" <ann@example.org>'),
    ('"a \\"b\\"" <x@y>', [A('a "b"', None, "x", "y")], [A('a "b"', None, "x", "y")],
     '"a \\"b\\"" <x@y>'),
    ("Mr. Smith <s@x>", [A("Mr. Smith", None, "s", "x")], [A("Mr. Smith", None, "s", "x")],
     '"Mr. Smith" <s@x>'),
    ("s@x (Sam (the) Smith)", [A("Sam (the) Smith", None, "s", "x")],
     [A("Sam (the) Smith", None, "s", "x")], '"Sam (the) Smith" <s@x>'),
    ('"first last"@example.org', [A(None, None, "first last", "example.org")],
     [A(None, None, "first last", "example.org")], '<"first last"@example.org>'),
    ("a..b.@x", [A(None, None, "a..b.", "x")], [A(None, None, "a..b.", "x")], "<a..b.@x>"),
    ("u@[192.0.2.1]", [A(None, None, "u", "[192.0.2.1]")], [A(None, None, "u", "[192.0.2.1]")],
     "<u@[192.0.2.1]>"),
    ("<@a.example,@b.example:u@c.example>", [A(None, "@a.example,@b.example", "u", "c.example")],
     [A(None, "@a.example,@b.example", "u", "c.example")], "<@a.example,@b.example:u@c.example>"),
    ("localonly", [A(None, None, "localonly", "", True)],
     [A(None, None, "localonly", "MISSING_DOMAIN", True)], "<localonly>"),
    ("@example.org", [A(None, None, "", "example.org", True)],
     [A(None, None, "MISSING_MAILBOX", "example.org", True)], '<""@example.org>'),
    ("Name <>", [A("Name", None, "", "", True)],
     [A("Name", None, "MISSING_MAILBOX", "MISSING_DOMAIN", True)], 'Name <"">'),
    ("Name <u@x", [A("Name", None, "u", "x", True)], [A("Name", None, "u", "x", True)],
     "Name <u@x>"),
    ("<@a.example u@x>", [A(None, "@a.example", "u", "x", True)],
     [A(None, "INVALID_ROUTE", "u", "x", True)], "<@a.example:u@x>"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "plain", "filled", "canonical"), CASES)
def test_cases(text: str, plain: list[Address], filled: list[Address], canonical: str) -> None:
    assert parse_address_list(text) == plain
    assert parse_address_list(text, fill_missing=True) == filled
    assert format_address_list(plain) == canonical
    # The same mailbox three times in a list, and as the members of a group.
    listed = parse_address_list(f"{text}, {text},\r\n {text}")
    assert listed == plain * 3
    grouped = parse_address_list(f"team: {text}, {text};")
    assert grouped == [Address(mailbox="team"), *plain, *plain, Address()]


def test_empty_group() -> None:
    parsed = parse_address_list("group:;")
    assert parsed == [GROUP_START, GROUP_END]
    assert format_address_list(parsed) == "group:;"


def test_nothing_to_parse() -> None:
    for text in ["", "   ", "(comment only)", "\r\n\t"]:
        assert parse_address_list(text) == []
    assert format_address_list([]) == ""


def test_nul_is_replaced() -> None:
    # RFC 9051 §4.3: no NUL in an IMAP string.
    (addr,) = parse_address_list('"user\0nuls"@[domain\0nuls] (comment\0nuls)')
    assert addr == A("comment\ufffdnuls", None, "user\ufffdnuls", "[domain\ufffdnuls]", False)


# -- the imaptest messages (fetch-envelope, search-addresses, sort-*) ----------------------


def test_groups_are_start_members_end() -> None:
    # RFC 9051 §7.5.2: group start (NIL NIL "group" NIL), members, end (NIL NIL NIL NIL).
    parsed = parse_address_list("group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;")
    assert [(a.name, a.route, a.mailbox, a.domain) for a in parsed] == [
        (None, None, "group", None),
        (None, None, "g1", "d1.org"),
        (None, None, "g2", "d2.org"),
        (None, None, None, None),
        (None, None, "group2", None),
        (None, None, "g3", "d3.org"),
        (None, None, None, None),
    ]
    assert [a.is_group_start for a in parsed] == [1, 0, 0, 0, 1, 0, 0]
    assert [a.is_group_end for a in parsed] == [0, 0, 0, 1, 0, 0, 1]
    empty = parse_address_list("group:;, group2: (foo) ;")
    assert empty == [GROUP_START, GROUP_END, Address(mailbox="group2"), GROUP_END]


def test_comments_inside_addr_spec_are_dropped() -> None:
    parsed = parse_address_list("<user-from (comment)@ (comment) domain.org>")
    assert parsed == [A(None, None, "user-from", "domain.org", False)]
    assert format_address_list(parsed) == "<user-from@domain.org>"


def test_encoded_words_stay_encoded_and_unquoted() -> None:
    # ENVELOPE sends the display name as written; SEARCH decodes the written list, so the
    # encoded word must not be quoted (RFC 2047 §5).
    parsed = parse_address_list("=?iso-8859-1?q?foo_aar?= <e@f.g>")
    assert parsed == [A("=?iso-8859-1?q?foo_aar?=", None, "e", "f.g", False)]
    assert format_address_list(parsed) == "=?iso-8859-1?q?foo_aar?= <e@f.g>"


def test_limit_counts_a_group_as_one() -> None:
    text = "a: xx@xx.org, yy@yy.org;, b@c.d"
    assert parse_address_list(text, limit=1) == [
        Address(mailbox="a"),
        A(None, None, "xx", "xx.org", False),
        A(None, None, "yy", "yy.org", False),
        GROUP_END,
    ]
    assert len(parse_address_list(text)) == 5


def test_broken_entries_do_not_stop_the_list() -> None:
    assert parse_address_list("a@b,,c@d") == [
        A(None, None, "a", "b", False),
        A(None, None, "", "", True),
        A(None, None, "c", "d", False),
    ]
    # An unquoted comma splits a display name (RFC 5322 §3.4: it is a list separator).
    assert parse_address_list("Smith, John <j@x>") == [
        A(None, None, "Smith", "", True),
        A("John", None, "j", "x", False),
    ]


# -- properties --------------------------------------------------------------------------


@given(st.text())
@example("a(")
@example('"')
@example("<@")
@example("g: <")
@example("\\")
@example("a@[")
@example("a@b (c\\")
@example("x, ")
@example("x, (")
@example(".a")
@example("a.")
@example("a..b@c")
@example("\ud800")
def test_any_text_parses(text: str) -> None:
    for fill in (False, True):
        parsed = parse_address_list(text, fill_missing=fill)
        format_address_list(parsed)
        first = parse_address_list(text, limit=1, fill_missing=fill)
        assert first == parsed[: len(first)]
        for addr in parsed:
            # A mailbox never looks like a group marker to an IMAP client.
            assert addr.mailbox is not None or addr.domain is None


_ATOM = st.text(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~", min_size=1)
_NAME_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éü"), min_size=1
).filter(lambda s: s == " ".join(s.split()) and "=?" not in s)
_DOMAIN = st.lists(_ATOM, min_size=1, max_size=3).map(".".join)
_LOCAL = st.lists(_ATOM, min_size=1, max_size=3).map(".".join) | _NAME_TEXT


@st.composite
def _mailbox(draw: st.DrawFn) -> Address:
    return Address(draw(st.none() | _NAME_TEXT), None, draw(_LOCAL), draw(_DOMAIN))


@st.composite
def _address_list(draw: st.DrawFn) -> list[Address]:
    out: list[Address] = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            out.append(draw(_mailbox()))
        else:
            out.append(Address(mailbox=draw(_NAME_TEXT)))
            out.extend(draw(st.lists(_mailbox(), max_size=3)))
            out.append(Address())
    return out


@given(_address_list())
def test_format_then_parse_round_trips(addresses: list[Address]) -> None:
    assert parse_address_list(format_address_list(addresses)) == addresses


# -- ENVELOPE and SEARCH on the imaptest messages ----------------------------------------


def _message(*fields: str) -> bytes:
    return ("\r\n".join(fields) + "\r\n\r\nbody\r\n").encode()


def _envelope(raw: bytes) -> list[IMAPValue]:
    env = envelope(parse_structure(raw))
    assert isinstance(env, list)
    return env


def test_envelope_groups_routes_and_empty_fields() -> None:
    # imaptest fetch-envelope, messages 4 to 6.
    env = _envelope(
        _message(
            "From: user@domain (Real Name)",
            "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;",
            "Cc: group:;, group2: (foo) ;",
            "Sender: ",
            "Reply-To: ",
        )
    )
    real = [["Real Name", None, "user", "domain"]]
    assert env[2:8] == [
        real,
        real,  # RFC 9051 §7.5.2: an empty Sender or Reply-To is the From
        real,
        [
            [None, None, "group", None],
            [None, None, "g1", "d1.org"],
            [None, None, "g2", "d2.org"],
            [None, None, None, None],
            [None, None, "group2", None],
            [None, None, "g3", "d3.org"],
            [None, None, None, None],
        ],
        [[None, None, "group", None], [None] * 4, [None, None, "group2", None], [None] * 4],
        None,
    ]
    routed = _envelope(_message("From: <@route:user@domain>"))
    assert routed[2] == [[None, "@route", "user", "domain"]]


def test_envelope_fills_missing_parts_and_merges_fields() -> None:
    env = _envelope(_message("From: user", "From: =?utf-8?q?J=C3=B6rg?= <j@x>"))
    assert env[2] == [
        [None, None, "user", "MISSING_DOMAIN"],  # a NIL host would be a group start
        ["=?utf-8?q?J=C3=B6rg?=", None, "j", "x"],  # sent as written
    ]
    latin1 = _envelope(b"From: J\xf6rg <j@x>\r\n\r\n")
    assert latin1[2] == [[b"J\xf6rg", None, "j", "x"]]


SEARCH_MBOX = [
    _message("From: user-from@domain.org", "To: user-to@domain.org"),
    _message("From: RealFrom <user-from@domain.org>", "To: RealTo <user-to@domain.org>"),
    _message("From: <user-from (comment)@ (comment) domain.org>", "To: <user-to@domain.org>"),
    _message("From: user-from@domain.org (RealFrom)", "To: user-to@domain.org (RealTo)"),
    _message("From: user-from1@domain.org, user-from2@domain.org", "Cc: user-cc@domain.org"),
    _message(
        "From: RealFrom <user-from@domain.org>",
        "To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n"
        "  groupname2: groupuser3@domain.org;",
    ),
    _message("From: RealFrom <user-from@domain.org>", "To: groupname:;"),
]


@pytest.mark.parametrize(
    ("name", "needle", "wanted"),
    [
        ("from", "user-from@domain.org", [1, 2, 3, 4, 6, 7]),
        ("from", "ealfro", [2, 4, 6, 7]),
        ("from", "ser-fro", [1, 2, 3, 4, 5, 6, 7]),
        ("to", "realto", [2, 4]),
        ("to", "", [1, 2, 3, 4, 6, 7]),  # HEADER TO "": the field exists
        ("to", "groupname", [6, 7]),
        ("to", "groupname2", [6]),
        ("to", "groupuser3", [6]),
        ("to", "groupuser4", []),
    ],
)
def test_search_addresses_imaptest(name: str, needle: str, wanted: list[int]) -> None:
    # imaptest search-addresses (its messages cut to the fields used here).
    uids = list(range(1, len(SEARCH_MBOX) + 1))
    view = MailboxView(
        "INBOX",
        FolderChanges(
            7,
            len(uids) + 1,
            1,
            tuple(MessageInfo(u, frozenset(), frozenset(), 0.0, 10, 1) for u in uids),
            (),
            True,
        ),
    )

    def headers(wanted_uids: list[int]) -> dict[int, dict[str, list[str]]]:
        return {u: header_fields(SEARCH_MBOX[u - 1]) for u in wanted_uids}

    ctx = SearchContext(view, lambda *_: set(), headers)
    assert evaluate(("header", name, needle), ctx) == wanted


# -- directory addresses: a mailbox's local part names MAIL_DIR/DOMAIN/LOCALPART --------------

_MAILDIR_ROOT = Path("/srv/pochta/mail")


@pytest.mark.parametrize(
    "address",
    [
        "a/b@example.test",
        "/abs@example.test",
        "../x@example.test",
        "a\x00b@example.test",
        "a\x01b@example.test",
        "a\x7fb@example.test",
        "a\x85b@example.test",  # C1 control
        "a\u2028b@example.test",  # line separator
        "a\u00a0b@example.test",  # no-break space
        "a\ud800b@example.test",  # lone surrogate: not UTF-8
        ".a@example.test",
        "a.@example.test",
        "a..b@example.test",
        ".@example.test",
        "..@example.test",
        "a b@example.test",
    ],
)
def test_mailbox_address_refused_names_the_allowed_characters(address: str) -> None:
    with pytest.raises(AddressError) as info:
        check_mailbox_address(address)
    message = str(info.value)
    assert "letters, digits" in message
    assert "with single dots between them" in message
    if "/" in address:
        assert "cannot be a mailbox" in message
        assert "'/'" in message


@pytest.mark.parametrize("domain", ["a/b.test", "../x.test", "x.test/..", "..", "a.test\x00"])
def test_mailbox_domain_with_slash_refused(domain: str) -> None:
    with pytest.raises(AddressError):
        check_mailbox_address(f"alice@{domain}")


@pytest.mark.parametrize(
    ("address", "canonical"),
    [
        ("Alice@Example.TEST", "alice@example.test"),
        ("o'brien+tag@example.test", "o'brien+tag@example.test"),
        ("first.last@example.test", "first.last@example.test"),
        ("jörg@bücher.example", "jörg@xn--bcher-kva.example"),
        ("x~y=z@example.test", "x~y=z@example.test"),
    ],
)
def test_mailbox_address_accepted(address: str, canonical: str) -> None:
    assert check_mailbox_address(address) == canonical


@given(st.text(min_size=1, max_size=64))
@example("a/b")
@example("..")
@example(".")
@example("a\x00")
@example("\udcff")
def test_any_accepted_local_part_stays_inside_the_domain_directory(local: str) -> None:
    try:
        address = check_mailbox_address(f"{local}@example.test")
    except AddressError:
        return
    store = MaildirStore(_MAILDIR_ROOT, hostname="mail.example.test", durable=False)
    root = store.account_root(address)  # the store's own path builder
    domain_dir = _MAILDIR_ROOT / "example.test"
    assert root.parent == domain_dir
    assert os.path.normpath(root) == str(root)  # no "." or ".." component
    assert root.name == address.rpartition("@")[0]
    assert "/" not in root.name
    name = os.fsencode(root.name)  # a file name the OS can take: UTF-8, no NUL
    assert b"\x00" not in name
    assert name.decode("utf-8") == root.name
    # no control characters, surrogates or spaces/separators in a file name
    assert not {unicodedata.category(ch) for ch in root.name} & {"Cc", "Cs", "Zs", "Zl", "Zp"}
