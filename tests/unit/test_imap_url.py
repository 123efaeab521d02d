"""IMAP URLs (RFC 5092), the CATENATE arguments (RFC 4469), URLAUTH (RFC 4467) and what a
URL names in a message (RFC 5524 BINARY, BODYPARTSTRUCTURE): pure parts, and the keys over a
real Maildir store."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.access import imap_urlauth as A
from pochta.protocols.imap import commands as C
from pochta.protocols.imap import url as U
from pochta.protocols.imap.commands import BadArgs
from pochta.protocols.imap.core import parse_command
from pochta.store.maildir import MaildirStore

ALICE = "alice@example.test"
BOB = "bob@example.test"

# -- parsing (RFC 5092 §11) -----------------------------------------------------------------


def test_urlauth_url_has_owner_rump_and_token() -> None:
    text = (
        "imap://alice@example.test/INBOX;UIDVALIDITY=7/;UID=20/;SECTION=1.2/;PARTIAL=0.100"
        ";EXPIRE=2030-01-01T00:00:00Z;URLAUTH=user+bob%40example.test:INTERNAL:" + "0a" * 33
    )
    url = U.parse_url(text)
    assert url.owner == ALICE
    assert (url.mailbox, url.uidvalidity, url.uid) == ("INBOX", 7, 20)
    assert url.section == "1.2"
    assert url.partial == (0, 100)
    assert url.expire == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert url.access == "user+bob@example.test"
    assert url.access_user == BOB
    assert url.mechanism == "INTERNAL"
    assert url.token == "0a" * 33
    assert url.rump == text[: text.index(":INTERNAL")]


def test_mailbox_with_slashes_and_percent_encoded_utf8() -> None:
    url = U.parse_url("imap://bob@example.test/Archiv/K%C3%A4se/;uid=3")
    assert url.mailbox == "Archiv/Käse"
    assert url.owner == BOB
    assert url.access is None


def test_relative_urls_only_where_allowed() -> None:
    # RFC 4469 §5: a CATENATE URL may be relative to the server.
    url = U.parse_url("/inbox/;uid=1/;section=header", relative=True)
    assert (url.mailbox, url.uid, url.section, url.owner) == ("INBOX", 1, "header", None)
    with pytest.raises(U.UrlError, match="imap://"):
        U.parse_url("/INBOX/;UID=1")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("imap://alice@example.test/INBOX", "one message"),
        ("imap://alice@example.test/INBOX/;UID=0", "one message"),
        ("imap://alice@example.test/INBOX/;UID=1/;SECTION=1.FOO", "section"),
        ("imap://alice@example.test/INBOX/;UID=1;URLAUTH=everyone", "access"),
        ("imap://alice@example.test/INBOX/;UID=1;EXPIRE=2030-01-01;URLAUTH=authuser", "zone"),
        ("imap://alice@example.test/Käse/;UID=1", "percent-encoded"),
        ("imap://alice@example.test/%FF/;UID=1", "UTF-8"),
        ("http://example.test/", "Not an IMAP URL"),
    ],
)
def test_bad_urls_say_why(text: str, why: str) -> None:
    with pytest.raises(U.UrlError, match=why):
        U.parse_url(text)


_MAILBOX = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(
    lambda s: s.upper() != "INBOX" and not s.upper().startswith("INBOX.")
)
_USER = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
_ACCESS = st.one_of(
    st.sampled_from(["authuser", "anonymous"]),
    st.builds(lambda w, u: w + u, st.sampled_from(["user+", "submit+"]), _USER),
)
_SECTION = st.sampled_from(
    [None, "HEADER", "TEXT", "1", "1.2", "2.MIME", "1.HEADER.FIELDS (FROM TO)", "3.TEXT"]
)
_EXPIRE = st.datetimes(
    min_value=dt.datetime(2000, 1, 1),
    max_value=dt.datetime(2100, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))]),
)


@st.composite
def _urls(draw: st.DrawFn) -> U.ImapUrl:
    relative = draw(st.booleans())
    access = draw(st.none() | _ACCESS)
    signed = access is not None and draw(st.booleans())
    return U.ImapUrl(
        mailbox=draw(_MAILBOX),
        uid=draw(st.integers(1, 2**32 - 1)),
        user=None if relative else draw(_USER),
        host=None
        if relative
        else draw(st.from_regex(r"[a-z][a-z0-9-]{0,9}\.test", fullmatch=True)),
        port=None if relative else draw(st.none() | st.integers(1, 65535)),
        uidvalidity=draw(st.none() | st.integers(1, 2**32 - 1)),
        section=draw(_SECTION),
        partial=draw(
            st.none() | st.tuples(st.integers(0, 10**6), st.none() | st.integers(1, 10**6))
        ),
        expire=draw(_EXPIRE) if access is not None and draw(st.booleans()) else None,
        access=access,
        mechanism="INTERNAL" if signed else None,
        token=draw(st.from_regex(r"[0-9a-f]{32,66}", fullmatch=True)) if signed else None,
    )


@given(_urls())
@example(U.ImapUrl(mailbox="a;b?c/;UID=1", uid=5, user="x@y", host="h.test"))
def test_format_then_parse_gives_the_url_back(url: U.ImapUrl) -> None:
    parsed = U.parse_url(U.format_url(url), relative=True)
    assert dataclasses.replace(parsed, rump=None) == url
    if url.access is not None:
        assert parsed.rump is not None
        assert U.format_url(dataclasses.replace(url, mechanism=None, token=None)) == parsed.rump


@given(st.text(max_size=200))
@example("imap://a@b/;UID=1")
@example("imap://@/x/;UID=1;URLAUTH=user+:INTERNAL:" + "0" * 32)
@example("/" + "/" * 5000 + ";UID=1")
def test_any_text_parses_or_says_why(text: str) -> None:
    # Only UrlError may come out (no IndexError, no regex blow-up); a parse names a message.
    try:
        url = U.parse_url(text, relative=True)
    except U.UrlError:
        return
    assert url.uid >= 1
    assert url.mailbox


# -- command arguments (RFC 4469 §5, RFC 4467 §9, RFC 5524 §4) -------------------------------


def _cmd(line: bytes) -> C.Command:
    return parse_command(line + b"\r\n")


def test_append_with_catenate_text_and_url_parts() -> None:
    cmd = _cmd(
        b'a APPEND Drafts (\\Seen) CATENATE (TEXT {7}\r\nFrom: x URL "/INBOX/;UID=1/;SECTION=TEXT")'
        b" CATENATE (URL /INBOX/;UID=2) {3}\r\nabc"
    )
    args = C.append_args(cmd)
    name, messages = args.mailbox, args.messages
    assert name == "Drafts"
    assert messages == [
        (["\\Seen"], None, (C.CatText(b"From: x"), C.CatUrl("/INBOX/;UID=1/;SECTION=TEXT"))),
        ([], None, (C.CatUrl("/INBOX/;UID=2"),)),
        ([], None, b"abc"),
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"a APPEND INBOX CATENATE ()",
        b"a APPEND INBOX CATENATE (TEXT)",
        b'a APPEND INBOX CATENATE (TEXT "quoted")',
        b'a APPEND INBOX CATENATE (BODY "/INBOX/;UID=1")',
    ],
)
def test_bad_catenate_is_bad(line: bytes) -> None:
    with pytest.raises(BadArgs, match="CATENATE"):
        C.append_args(_cmd(line))


def test_urlauth_command_arguments() -> None:
    assert U.genurlauth_args(
        _cmd(b'a GENURLAUTH "imap://u@h/I/;UID=1;URLAUTH=authuser" internal').args
    ) == [("imap://u@h/I/;UID=1;URLAUTH=authuser", "INTERNAL")]
    with pytest.raises(BadArgs, match="pairs"):
        U.genurlauth_args(_cmd(b"a GENURLAUTH x").args)
    assert U.resetkey_args([]) == (None, [])
    assert U.resetkey_args(_cmd(b"a RESETKEY inbox INTERNAL").args) == ("INBOX", ["INTERNAL"])
    fetch = _cmd(b"a URLFETCH imap://u@h/I/;UID=1 (imap://u@h/I/;UID=2 binary BODYPARTSTRUCTURE)")
    assert U.urlfetch_args(fetch.args) == [
        ("imap://u@h/I/;UID=1", None),
        ("imap://u@h/I/;UID=2", ("BINARY", "BODYPARTSTRUCTURE")),
    ]
    with pytest.raises(BadArgs, match="parameters"):
        U.urlfetch_args(_cmd(b"a URLFETCH (imap://u@h/I/;UID=2 FLAGS)").args)


# -- URLAUTH (RFC 4467 §3, §7) ---------------------------------------------------------------


def test_internal_token_is_versioned_hmac_sha256() -> None:
    token = A.internal_token(b"k" * 64, "imap://a@b/INBOX/;UID=1;URLAUTH=authuser")
    assert token.startswith("01")
    assert len(token) == 2 + 64
    assert token != A.internal_token(b"j" * 64, "imap://a@b/INBOX/;UID=1;URLAUTH=authuser")
    assert token != A.internal_token(b"k" * 64, "imap://a@b/INBOX/;UID=2;URLAUTH=authuser")


def test_access_identifiers_and_expiry() -> None:
    base = "imap://alice@example.test/INBOX/;UID=1"
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()
    assert A.authorised(U.parse_url(base + ";URLAUTH=authuser"), BOB, now)
    assert A.authorised(U.parse_url(base + ";URLAUTH=anonymous"), BOB, now)
    assert A.authorised(U.parse_url(base + ";URLAUTH=user+BOB@example.test"), BOB, now)
    assert not A.authorised(U.parse_url(base + ";URLAUTH=user+alice@example.test"), BOB, now)
    assert not A.authorised(U.parse_url(base + ";URLAUTH=submit+bob@example.test"), BOB, now)
    later = U.parse_url(base + ";EXPIRE=2030-01-01T00:00:01Z;URLAUTH=authuser")
    assert A.authorised(later, BOB, now)
    assert not A.authorised(later, BOB, now + 1)


def _store(tmp_path: Path) -> MaildirStore:
    store = MaildirStore(tmp_path / "mail", hostname="mail.example.test")
    store.append(ALICE, "INBOX", MESSAGE)
    return store


def test_keys_are_made_once_kept_and_reset(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert A.mailbox_key(store, ALICE, "INBOX", 5, create=False) is None
    key = A.mailbox_key(store, ALICE, "INBOX", 5, create=True)
    assert key is not None
    assert len(key) == A.KEY_OCTETS
    # Another store object (another process) reads the same key from the file.
    other = MaildirStore(tmp_path / "mail", hostname="mail.example.test")
    assert A.mailbox_key(other, ALICE, "INBOX", 5, create=True) == key
    assert (other.account_root(ALICE) / A.KEYS_FILE).exists()
    # A mailbox made again (new UIDVALIDITY) does not keep the old key.
    assert A.mailbox_key(store, ALICE, "INBOX", 6, create=False) is None
    A.reset_keys(store, ALICE, "INBOX")
    assert A.mailbox_key(store, ALICE, "INBOX", 5, create=False) is None
    A.mailbox_key(store, ALICE, "INBOX", 5, create=True)
    A.reset_keys(store, ALICE, None)
    assert A.mailbox_key(store, ALICE, "INBOX", 5, create=False) is None


def test_read_url_checks_token_owner_and_uidvalidity(tmp_path: Path) -> None:
    store = _store(tmp_path)
    folder = store.list_folders(ALICE)[0]
    key = A.mailbox_key(store, ALICE, "INBOX", folder.uidvalidity, create=True)
    assert key is not None
    rump = "imap://alice@example.test/INBOX/;UID=1;URLAUTH=authuser"
    good = U.parse_url(f"{rump}:INTERNAL:{A.internal_token(key, rump)}")
    forged = U.parse_url(f"{rump}:INTERNAL:{'01' + '0' * 64}")
    assert A.read_url(store, good, ALICE, user=BOB, now=0) == MESSAGE
    assert A.read_url(store, forged, ALICE, user=BOB, now=0) is None
    # Without URLAUTH a URL names the user's own mail only.
    plain = U.parse_url("/INBOX/;UID=1", relative=True)
    assert A.read_url(store, plain, ALICE, user=ALICE, now=0) == MESSAGE
    assert A.read_url(store, plain, ALICE, user=BOB, now=0) is None
    stale = U.parse_url(f"/INBOX;UIDVALIDITY={folder.uidvalidity + 1}/;UID=1", relative=True)
    assert A.read_url(store, stale, ALICE, user=ALICE, now=0) is None


def test_catenate_joins_parts_and_names_the_bad_url(tmp_path: Path) -> None:
    store = _store(tmp_path)
    parts = (
        C.CatText(b"Subject: new\r\n"),
        C.CatUrl("/INBOX/;UID=1/;SECTION=1.MIME"),
        C.CatText(b"\r\n"),
        C.CatUrl("/INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=0.10"),
    )
    out = A.catenate(store, parts, user=ALICE, now=0)
    assert (
        out
        == b"Subject: new\r\nContent-Type: message/rfc822\r\n\r\n\r\n"
        + MESSAGE[MESSAGE.index(b"\r\n\r\n") + 4 :][:10]
    )
    with pytest.raises(A.BadUrl) as info:
        A.catenate(store, (C.CatUrl("/INBOX/;UID=9"),), user=ALICE, now=0)
    assert info.value.url == "/INBOX/;UID=9"
    with pytest.raises(A.BadUrl):
        A.catenate(store, (C.CatUrl("/INBOX/;UID=1/;SECTION=7"),), user=ALICE, now=0)
    assert A.badurl_code("/a]b") == "BADURL /ab"


# -- what a URL names (RFC 5524) -------------------------------------------------------------

MESSAGE = (
    b"From: a@example.test\r\n"
    b"Content-Type: multipart/mixed; boundary=b\r\n"
    b"\r\n"
    b"--b\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=c\r\n"
    b"\r\n"
    b"--c\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"aGVs\r\nbG8=\r\n"
    b"--c\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"a=3Db\r\n"
    b"--c--\r\n"
    b"--b--\r\n"
)


def _url(section: str) -> U.ImapUrl:
    return U.parse_url(f"/INBOX/;UID=1/;SECTION={section}", relative=True)


def test_binary_of_a_leaf_is_decoded() -> None:
    assert A.url_binary(MESSAGE, _url("1.1")) == b"hello"
    assert A.url_binary(MESSAGE, _url("1.2")) == b"a=b"
    assert A.url_body(MESSAGE, _url("1.1")) == b"aGVs\r\nbG8="


def test_binary_of_a_message_decodes_every_leaf_below() -> None:
    data = A.url_binary(MESSAGE, _url("1"))
    assert data is not None
    assert data.count(b"Content-Transfer-Encoding: binary\r\n") == 2
    assert b"\r\n\r\nhello\r\n--c" in data
    assert b"\r\n\r\na=b\r\n--c--" in data


def test_bodypartstructure_with_binary_counts_decoded_octets() -> None:
    plain = A.url_structure(MESSAGE, _url("1.1"))
    assert isinstance(plain, list)
    assert plain[5:8] == ["base64", 10, 2]
    decoded = A.url_structure(MESSAGE, _url("1.1"), binary=True)
    assert isinstance(decoded, list)
    assert decoded[5:8] == ["base64", 5, 0]
    assert A.url_structure(MESSAGE, _url("1.HEADER")) is None
    assert A.url_binary(MESSAGE, _url("9")) is None
