"""DKIM signing of submitted mail: the cleanup filter's signatures verify with dkimpy.

The signer runs as the last filter of the real Cleanup, with keys made by dkim_keys and a real
SQLite directory; verification uses dkimpy with a dnsfunc that serves the TXT records
``dkim_txt_value`` prints (split into strings and joined again, as DNS would).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path

import dkim
import msgspec
import pytest
from dkim.util import parse_tag_value
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.cleanup.dkim_filter import KEY_UNAVAILABLE, DkimFilter
from pochta.cleanup.pipeline import Cleanup, CleanupInput, CleanupResult
from pochta.cli.dkim import queued_signed_with
from pochta.config.settings import Settings, TablesSettings
from pochta.directory.model import DkimSelector
from pochta.directory.sqlite import SqliteDirectory
from pochta.mailauth.dkim_keys import (
    dkim_txt_value,
    generate_domain_keys,
    generate_selector,
    load_private_key,
    split_txt,
)
from pochta.mailauth.dkim_sign import (
    MAX_SIGNED_FIELDS,
    OVERSIGNED_FIELDS,
    DkimSigner,
    signed_field_names,
)
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.queue.spool import Spool
from pochta.tables.configured import ConfiguredTables
from tests import factories

HOST = "mail.example.test"
DOMAIN = "example.test"
MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: the plan\r\n"
    b"List-Unsubscribe: <mailto:leave@example.test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"see you at noon.\r\n"
)


class Keys:
    """A directory with hosted domains and their DKIM selectors, and the DNS they publish."""

    def __init__(self, tmp_path: Path) -> None:
        self.keys_dir = tmp_path / "dkim"
        self.directory = SqliteDirectory(tmp_path / "directory.sqlite3")
        self.records: dict[str, str] = {}
        self.lookups: list[str] = []

    def host(self, domain: str) -> list[DkimSelector]:
        self.directory.add_domain(domain)
        made = generate_domain_keys(domain, self.keys_dir)
        for sel in made:
            self.directory.add_dkim_selector(domain, sel)
            self.publish(domain, sel)
        return made

    def publish(self, domain: str, sel: DkimSelector) -> None:
        self.records[f"{sel.selector}._domainkey.{domain}"] = dkim_txt_value(sel)

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        key = name.decode().rstrip(".").lower()
        self.lookups.append(key)
        value = self.records.get(key)
        return "".join(split_txt(value)).encode() if value is not None else None


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keys]:
    k = Keys(tmp_path)
    yield k
    k.directory.close()


def make_settings(keys: Keys, *, sign: bool = True) -> Settings:
    return factories.make_settings(
        {
            "server.hostname": HOST,
            "server.data_dir": str(keys.keys_dir.parent),
            "dkim.keys_dir": str(keys.keys_dir),
            "dkim.sign": sign,
        }
    )


def make_cleanup(keys: Keys, *, sign: bool = True) -> tuple[Cleanup, DkimSigner]:
    settings = make_settings(keys, sign=sign)
    signer = DkimSigner(keys.directory, settings.dkim_dir)
    tables = ConfiguredTables.open(TablesSettings())
    return Cleanup(settings, tables, filters=[DkimFilter(signer, enabled=sign)]), signer


def submission(**overrides: object) -> CleanupInput:
    values: dict[str, object] = {
        "sender": "alice@example.test",
        "recipients": ["bob@example.org"],
        "client_ip": "192.0.2.7",
        "helo": "laptop",
        "protocol": "ESMTPSA",
        "auth_user": "alice@example.test",
        "queue_id": "4QsIGn",
        "submission": True,
        "arrival": 1_736_157_600.0,
    }
    values.update(overrides)
    return CleanupInput(**values)  # type: ignore[arg-type]


def run(cleanup: Cleanup, content: bytes, info: CleanupInput | None = None) -> CleanupResult:
    return asyncio.run(cleanup.process(content, info or submission()))


def signatures(content: bytes) -> list[dict[bytes, bytes]]:
    """The tags of each DKIM-Signature field, top first."""
    found = []
    d = dkim.DKIM(content)
    for name, value in d.headers:
        if name.lower() == b"dkim-signature":
            found.append(parse_tag_value(re.sub(rb"\r?\n", b"", value)))
    return found


def verify_all(keys: Keys, content: bytes) -> list[bool]:
    """dkimpy's verdict on each signature, top first (an exception is a failure)."""
    verdicts = []
    for i in range(len(signatures(content))):
        try:
            verdicts.append(bool(dkim.DKIM(content).verify(idx=i, dnsfunc=keys.dnsfunc)))
        except dkim.DKIMException:
            verdicts.append(False)
    return verdicts


def signed_names(tags: dict[bytes, bytes]) -> list[str]:
    return [n.strip().decode() for n in tags[b"h"].split(b":")]


# -- what a signature looks like ---------------------------------------------------------------


def test_both_algorithms_sign_and_verify(keys: Keys) -> None:
    rsa_sel, ed_sel = keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, MESSAGE)
    assert result.accepted
    sigs = signatures(result.content)
    assert [s[b"a"] for s in sigs] == [b"rsa-sha256", b"ed25519-sha256"]  # RSA on top
    assert [s[b"s"].decode() for s in sigs] == [rsa_sel.selector, ed_sel.selector]
    for tags in sigs:
        assert tags[b"d"] == b"example.test"
        assert tags[b"c"] == b"relaxed/relaxed"
        assert b"l" not in tags  # RFC 6376 §8.2: no body length
    assert verify_all(keys, result.content) == [True, True]
    # Both keys were really fetched: each signature was checked against its own record.
    assert sorted(keys.lookups) == sorted(
        f"{s.selector}._domainkey.{DOMAIN}" for s in (rsa_sel, ed_sel)
    )
    assert result.content.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert [h.split(":")[0] for h in result.headers_added][-2:] == ["DKIM-Signature"] * 2


def test_signed_and_oversigned_fields(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, MESSAGE)
    names = signed_names(signatures(result.content)[0])
    # Present fields once each (cleanup added Message-ID and Date), then one more of each
    # over-signed field, present or not; List-* signed as present, never over-signed.
    for name in ("from", "to", "subject", "date", "message-id"):
        assert names.count(name) == 2, name
    for name in ("reply-to", "cc", "in-reply-to", "references", "content-type"):
        assert names.count(name) == 1, name
    assert names.count("list-unsubscribe") == 1
    assert names.count("list-unsubscribe-post") == 1  # RFC 8058 §4
    assert "list-id" not in names
    assert "received" not in names
    assert "x-mailer" not in names
    assert set(OVERSIGNED_FIELDS) <= set(names)


def test_sender_is_signed_but_not_oversigned() -> None:
    head = split_message(b"Sender: list-bounces@example.test\r\nFrom: a@example.test\r\n\r\n")
    names = signed_field_names(head.headers)
    assert names.count("sender") == 1  # lists add a Sender of their own
    assert names.count("from") == 2
    assert (
        signed_field_names(split_message(b"From: a@example.test\r\n\r\n").headers).count("sender")
        == 0
    )


@pytest.mark.parametrize(
    "added",
    [
        b"From: Mallory <mallory@example.test>\r\n",
        b"Subject: pay this invoice\r\n",
        b"Reply-To: mallory@evil.example\r\n",
        b"Content-Type: text/html\r\n",
    ],
)
def test_an_added_field_breaks_every_signature(keys: Keys, added: bytes) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    signed = run(cleanup, MESSAGE).content
    assert verify_all(keys, signed) == [True, True]
    head, _, body = signed.partition(b"\r\n\r\n")
    for tampered in (added + signed, head + b"\r\n" + added + b"\r\n" + body):
        assert verify_all(keys, tampered) == [False, False]


def test_unsigned_and_trace_fields_may_be_added(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    signed = run(cleanup, MESSAGE).content
    later = b"Received: from mail.example.test by mx.example.org\r\nX-Spam-Score: 0\r\n" + signed
    assert verify_all(keys, later) == [True, True]


def test_relaxed_canonicalisation_survives_refolding(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    signed = run(cleanup, MESSAGE).content
    # RFC 6376 §3.4.2: header whitespace and folding; §3.4.4: trailing body whitespace.
    changed = signed.replace(b"Subject: the plan\r\n", b"SUBJECT:   the\r\n\t plan \r\n")
    changed = changed.replace(b"see you at noon.\r\n", b"see you  at noon.   \r\n\r\n\r\n")
    assert changed != signed
    assert verify_all(keys, changed) == [True, True]
    # A real change to the body still fails.
    assert verify_all(keys, signed.replace(b"noon", b"nine")) == [False, False]


def test_bare_lf_message_is_signed_consistently(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, MESSAGE.replace(b"\r\n", b"\n"))
    assert b"\r" not in result.content
    assert verify_all(keys, result.content) == [True, True]
    assert verify_all(keys, result.content.replace(b"\n", b"\r\n")) == [True, True]


def test_from_domain_is_the_signing_domain_in_a_label_form(keys: Keys) -> None:
    keys.host("xn--bcher-kva.example")  # bücher.example
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    message = "From: Jürgen <jürgen@BÜCHER.example>\r\nSubject: ü\r\n\r\nHallo\r\n".encode()
    result = run(cleanup, message, submission(sender="jürgen@bücher.example"))
    sigs = signatures(result.content)
    assert [s[b"d"] for s in sigs] == [b"xn--bcher-kva.example"] * 2
    assert verify_all(keys, result.content) == [True, True]
    upper = run(cleanup, MESSAGE.replace(b"alice@example.test", b"alice@EXAMPLE.Test"))
    assert [s[b"d"] for s in signatures(upper.content)] == [b"example.test"] * 2


@given(
    subject=st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=60),
    body=st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")),
)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_subject_and_body_verifies(keys: Keys, subject: str, body: bytes) -> None:
    if not keys.records:
        keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    message = b"From: alice@example.test\r\nSubject: " + subject.encode() + b"\r\n\r\n" + body
    result = run(cleanup, message)
    assert verify_all(keys, result.content) == [True, True]


# -- what is not signed ------------------------------------------------------------------------


def test_mx_traffic_is_never_signed(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, MESSAGE, submission(submission=False, auth_user=""))
    assert result.accepted
    assert signatures(result.content) == []


@pytest.mark.parametrize(
    "from_field",
    [
        b"From: someone@elsewhere.example\r\n",  # not hosted
        b"From: x@example\r\n",  # a parent would be a top-level name alone
        b"From: a@example.test, b@elsewhere.example\r\n",  # two domains: none to align with
        b"From: undisclosed:;\r\n",  # no address
        b"",  # no From at all
    ],
)
def test_foreign_or_unclear_from_is_not_signed(keys: Keys, from_field: bytes) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    message = from_field + b"To: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    with capture_logs() as logs:
        result = run(cleanup, message)
    assert result.accepted
    assert signatures(result.content) == []
    assert any(e["event"] == "dkim_not_signed" and e["log_level"] == "debug" for e in logs)


def test_a_subdomain_is_signed_by_the_nearest_hosted_parent(keys: Keys) -> None:
    """MAILER-DAEMON@mail.example.test (the host name, not hosted): d=example.test, so a
    bounce verifies and aligns in relaxed mode (RFC 7489 §3.1.1)."""
    keys.host(DOMAIN)
    keys.host("other.mail.example.test")  # hosted, but not a parent: never chosen
    cleanup, _ = make_cleanup(keys)
    message = b"From: MAILER-DAEMON@mail.example.test\r\nTo: b@example.org\r\n\r\nbody\r\n"
    result = run(cleanup, message, submission(sender=""))
    assert result.accepted
    assert [t[b"d"] for t in signatures(result.content)] == [b"example.test"] * 2
    assert verify_all(keys, result.content) == [True, True]
    deeper = b"From: a@x.y.example.test\r\n\r\nbody\r\n"
    assert [t[b"d"] for t in signatures(run(cleanup, deeper).content)] == [b"example.test"] * 2


def test_two_from_fields_are_not_signed(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, b"From: a@example.test\r\n" + MESSAGE)
    assert signatures(result.content) == []


def test_only_active_selectors_sign(keys: Keys) -> None:
    rsa_sel, ed_sel = keys.host(DOMAIN)
    keys.directory.set_dkim_selector_active(DOMAIN, ed_sel.selector, False)
    cleanup, _ = make_cleanup(keys)
    result = run(cleanup, MESSAGE)
    assert [s[b"s"].decode() for s in signatures(result.content)] == [rsa_sel.selector]
    keys.directory.set_dkim_selector_active(DOMAIN, rsa_sel.selector, False)
    assert signatures(run(cleanup, MESSAGE).content) == []


def test_signing_switched_off(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys, sign=False)
    assert signatures(run(cleanup, MESSAGE).content) == []


# -- refusals ----------------------------------------------------------------------------------


def _break_key(sel: DkimSelector, how: str) -> None:
    path = Path(sel.key_path)
    if how == "missing":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    else:  # a directory where the file was: reading fails (also for root, unlike chmod 0)
        path.unlink()
        path.mkdir()


@pytest.mark.parametrize("how", ["missing", "garbage", "unreadable"])
def test_unusable_key_is_a_temporary_failure(keys: Keys, how: str) -> None:
    _, ed_sel = keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    assert run(cleanup, MESSAGE).accepted  # the key is cached now
    _break_key(ed_sel, how)
    with capture_logs() as logs:
        result = run(cleanup, MESSAGE)
    assert not result.accepted
    assert result.reply == KEY_UNAVAILABLE == Reply(451, "4.3.0", KEY_UNAVAILABLE.text)
    (line,) = [e for e in logs if e["event"] == "dkim_key_unusable"]
    assert line["selector"] == ed_sel.selector
    assert line["queue_id"] == "4QsIGn"
    assert ed_sel.key_path in line["reason"]
    assert line["log_level"] == "error"


def test_selector_of_unknown_algorithm_is_a_temporary_failure(keys: Keys) -> None:
    rsa_sel, _ = keys.host(DOMAIN)
    odd = msgspec.structs.replace(rsa_sel, selector="old-sha1", algorithm="rsa-sha1")
    keys.directory.add_dkim_selector(DOMAIN, odd)
    cleanup, _ = make_cleanup(keys)
    with capture_logs() as logs:
        result = run(cleanup, MESSAGE)
    assert result.reply == KEY_UNAVAILABLE
    (line,) = [e for e in logs if e["event"] == "dkim_key_unusable"]
    assert line["selector"] == "old-sha1"


def test_key_file_change_is_picked_up(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    rsa_sel, _ = keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    reads: list[str] = []

    def counting(sel: DkimSelector) -> bytes:
        reads.append(sel.selector)
        return load_private_key(sel)

    monkeypatch.setattr("pochta.mailauth.dkim_sign.load_private_key", counting)
    for _ in range(3):
        assert verify_all(keys, run(cleanup, MESSAGE).content) == [True, True]
    assert len(reads) == 2  # each key read once, then served from the cache
    # A new key written over the file (same selector): the next message uses it.
    tmp = keys.keys_dir / "new"
    fresh = generate_selector(DOMAIN, tmp, "rsa-sha256", rsa_sel.selector)
    os.replace(fresh.key_path, rsa_sel.key_path)
    keys.publish(DOMAIN, msgspec.structs.replace(rsa_sel, public_key_b64=fresh.public_key_b64))
    assert verify_all(keys, run(cleanup, MESSAGE).content) == [True, True]
    assert reads.count(rsa_sel.selector) == 2


def test_too_many_signed_fields_are_refused(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    many = b"".join(b"List-Id: <%d.example.test>\r\n" % i for i in range(MAX_SIGNED_FIELDS))
    result = run(cleanup, many + MESSAGE)
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (550, "5.6.0")


def test_header_dkimpy_cannot_parse_is_refused(keys: Keys) -> None:
    keys.host(DOMAIN)
    cleanup, _ = make_cleanup(keys)
    # RFC 5322 §4.5.1 obsolete syntax: white space between the field name and the colon.
    result = run(cleanup, MESSAGE.replace(b"Subject:", b"Subject :"))
    assert result.reply is not None
    assert (result.reply.code, result.reply.enhanced) == (550, "5.6.0")


# -- the queue scan behind `pochta dkim retire` ------------------------------------------------


async def test_queued_signed_with_finds_the_selector(keys: Keys, tmp_path: Path) -> None:
    rsa_sel, ed_sel = keys.host(DOMAIN)
    other_rsa, _ = keys.host("other.test")
    assert other_rsa.selector == rsa_sel.selector  # dated names: only d= tells them apart
    cleanup, _ = make_cleanup(keys)
    spool = Spool(tmp_path / "spool")

    async def enqueue(content: bytes) -> str:
        env = factories.make_envelope(
            "bob@example.org", sender="alice@example.test", arrival=1_736_157_600.0, content=content
        )
        return await spool.enqueue(env, content)

    try:
        ours = await enqueue((await cleanup.process(MESSAGE, submission())).content)
        other_msg = MESSAGE.replace(b"alice@example.test", b"carol@other.test")
        theirs = await enqueue((await cleanup.process(other_msg, submission())).content)
        await enqueue(MESSAGE)  # unsigned
        await spool.hold(ours)  # found in any state
    finally:
        spool.close()

    def find(domain: str, selector: str) -> list[str]:
        return queued_signed_with(tmp_path / "spool", domain, selector)

    assert find(DOMAIN, rsa_sel.selector) == [ours]
    assert find(DOMAIN.upper(), ed_sel.selector.upper()) == [ours]
    assert find("other.test", other_rsa.selector) == [theirs]
    assert find(DOMAIN, "rsa-200001") == []
    assert find("third.test", rsa_sel.selector) == []
    assert queued_signed_with(tmp_path / "no-spool", DOMAIN, rsa_sel.selector) == []
