"""cleanup: header splitting (byte-exact), canonical maps, Received, limits and filters."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.cleanup import (
    HEADER_TOO_LARGE,
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELD_BYTES,
    TOO_MANY_HOPS,
    CanonicalMaps,
    Cleanup,
    CleanupInput,
    CleanupResult,
    Filter,
    HeaderLimitError,
    address_spans,
    detect_newline,
    make_field,
    rewrite_address_list,
    split_message,
)
from pochta.cleanup.received import message_id_value, received_value
from pochta.cleanup.verdict import Action, Symbol, Verdict
from pochta.config.settings import TablesSettings
from pochta.protocols.smtp.replies import TEMPORARY_FAILURE, Reply
from pochta.tables.configured import ConfiguredTables
from tests.factories import make_settings

HOST = "mail.example.test"
ARRIVAL = 1_700_000_000.0

# -- the header splitter -------------------------------------------------------------------

_header_line = st.one_of(
    st.from_regex(rb"[A-Za-z-]{1,12}[ \t]?:[^\n]{0,30}", fullmatch=True),
    st.from_regex(rb"[ \t][^\n]{0,30}", fullmatch=True),
    st.binary(max_size=30),
)


@st.composite
def message_like(draw: st.DrawFn) -> bytes:
    newline = draw(st.sampled_from([b"\r\n", b"\n"]))
    lines = draw(st.lists(_header_line, max_size=8))
    parts = [line.replace(b"\n", b"") + newline for line in lines]
    if draw(st.booleans()):
        parts.append(newline)
    parts.append(draw(st.binary(max_size=60)))
    return b"".join(parts)


@given(st.binary())
@example(b"")
@example(b"\r\n")
@example(b"Subject: x")
@example(b" leading continuation\r\nSubject: x\r\n\r\nbody")
@example(b"A: b\r\n \r\n\r\n")
@example(b"A: b\r\rC: d\r\n")
def test_split_join_is_identity_for_any_bytes(content: bytes) -> None:
    assert split_message(content).join() == content


@given(message_like())
def test_split_join_is_identity_for_message_like_input(content: bytes) -> None:
    message = split_message(content)
    assert message.join() == content
    for header in message.headers:
        assert header.raw.startswith(header.name.encode())
        assert b":" in header.raw


def test_split_fields_folding_separator_and_body() -> None:
    content = (
        b"Subject: one\r\n"
        b"To: a@example.org,\r\n"
        b"\tb@example.org\r\n"
        b"X-Odd :spaced\r\n"
        b"X-Utf8: \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\r\n"
        b"\r\n"
        b"Body: not a header\r\n\xff\x00binary"
    )
    message = split_message(content)
    assert [h.name for h in message.headers] == ["Subject", "To", "X-Odd", "X-Utf8"]
    assert message.headers[1].raw == b"To: a@example.org,\r\n\tb@example.org\r\n"
    assert message.headers[1].text == "a@example.org,\r\n\tb@example.org"
    assert message.headers[3].text == "привет"
    assert message.separator == b"\r\n"
    assert message.body == b"Body: not a header\r\n\xff\x00binary"
    assert message.has("SUBJECT")
    assert message.count("x-odd") == 1
    assert detect_newline(message) == b"\r\n"


def test_a_non_header_line_starts_the_body() -> None:
    message = split_message(b"Subject: x\nthis is text\nA: b\n")
    assert [h.name for h in message.headers] == ["Subject"]
    assert (message.separator, message.body) == (b"", b"this is text\nA: b\n")
    assert detect_newline(message) == b"\n"
    assert split_message(b"From someone Mon Jan 1\r\nA: b\r\n").headers == ()
    assert split_message(b"").headers == ()
    assert detect_newline(split_message(b"")) == b"\r\n"


def test_split_limits() -> None:
    field = b"X-Big: " + b"a" * (MAX_HEADER_FIELD_BYTES - 9) + b"\r\n"
    assert len(field) == MAX_HEADER_FIELD_BYTES
    split_message(field + b"\r\n", max_field_bytes=MAX_HEADER_FIELD_BYTES)
    with pytest.raises(HeaderLimitError, match="X-Big"):
        split_message(b"X-Big: a" + field[7:], max_field_bytes=MAX_HEADER_FIELD_BYTES)
    folded = b"X-Folded: a\r\n" + b" b\r\n" * (MAX_HEADER_FIELD_BYTES // 4)
    with pytest.raises(HeaderLimitError, match="X-Folded"):
        split_message(folded, max_field_bytes=MAX_HEADER_FIELD_BYTES)
    many = b"X-A: 0123456789\r\n" * (MAX_HEADER_BLOCK_BYTES // 17 + 1)
    with pytest.raises(HeaderLimitError, match="header block"):
        split_message(many + b"\r\nbody", max_block_bytes=MAX_HEADER_BLOCK_BYTES)
    # The limits count the header block only, never the body.
    big_body = b"A: b\r\n\r\n" + b"x" * (2 * MAX_HEADER_BLOCK_BYTES)
    assert split_message(big_body, max_block_bytes=MAX_HEADER_BLOCK_BYTES).body[:1] == b"x"


def test_make_field() -> None:
    assert make_field("X-A", "b\r\n\tc", b"\n").raw == b"X-A: b\n\tc\n"
    assert make_field("X-U", "тест").raw == "X-U: тест\r\n".encode()
    with pytest.raises(ValueError, match="field name"):
        make_field("Bad Name", "x")
    with pytest.raises(ValueError, match="SP or HTAB"):
        make_field("X-A", "b\r\nInjected: yes")
    with pytest.raises(ValueError, match="SP or HTAB"):
        make_field("X-A", "b\rc")


# -- header address lists ------------------------------------------------------------------


def spans(text: str) -> list[str]:
    return [text[a:b] for a, b in address_spans(text)]


def test_address_spans() -> None:
    assert spans("alice@example.org") == ["alice@example.org"]
    assert spans('"Doe, John" <john@example.org>, bob@example.org (Bob)') == [
        "john@example.org",
        "bob@example.org",
    ]
    assert spans("team: a@example.org, B <b@example.org>;, c@example.org") == [
        "a@example.org",
        "b@example.org",
        "c@example.org",
    ]
    assert spans("=?utf-8?q?J=C3=B6rg?= <joerg@example.org>") == ["joerg@example.org"]
    assert spans("<@relay.example,@b.example:joe@example.org>") == ["joe@example.org"]
    assert spans('"john doe"@example.org') == ['"john doe"@example.org']
    assert spans('<"a>b"@example.org>') == ['"a>b"@example.org']
    assert spans("undisclosed-recipients:;") == []
    assert spans("Bob Smith bob@example.org") == []  # no brackets: not plainly an address
    assert spans("bob(comment)@example.org") == []
    assert spans("localonly") == []
    assert spans('"unterminated <a@example.org>') == []
    assert spans("(unclosed a@example.org") == []
    assert spans("a@example.org>") == []


def test_rewrite_address_list_keeps_everything_else() -> None:
    table = {"bob@example.org": "robert@example.org"}

    def mapping(address: str) -> str:
        return table.get(address, address)

    text = ' "Bob (the) Builder" <bob@example.org>,\r\n\tbob@example.org (old),  x@y.test'
    assert rewrite_address_list(text, mapping) == (
        ' "Bob (the) Builder" <robert@example.org>,\r\n\trobert@example.org (old),  x@y.test'
    )
    assert rewrite_address_list(" x@y.test", mapping) is None


@given(st.text(max_size=80))
def test_address_spans_never_fail(text: str) -> None:
    for start, end in address_spans(text):
        assert 0 <= start < end <= len(text)
        assert "@" in text[start:end]


# -- canonical(5) maps ---------------------------------------------------------------------

MakeTables = Callable[..., ConfiguredTables]


@pytest.fixture
def make_tables(tmp_path: Path) -> MakeTables:
    def build(
        canonical: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
    ) -> ConfiguredTables:
        def spec(name: str, text: str | None) -> list[str]:
            if text is None:
                return []
            (tmp_path / name).write_text(text)
            return [f"texthash:{tmp_path / name}"]

        return ConfiguredTables.open(
            TablesSettings(
                canonical_maps=spec("canonical", canonical),
                sender_canonical_maps=spec("sender_canonical", sender),
                recipient_canonical_maps=spec("recipient_canonical", recipient),
            )
        )

    return build


def canonical_of(tables: ConfiguredTables) -> CanonicalMaps:
    return CanonicalMaps(
        common=tables.canonical_maps,
        sender_maps=tables.sender_canonical_maps,
        recipient_maps=tables.recipient_canonical_maps,
        local_domains=frozenset({HOST, "localhost"}),
    )


def test_canonical_search_order_and_results(make_tables: MakeTables) -> None:
    maps = canonical_of(
        make_tables(
            canonical=(
                "joe@example.org Joe.Smith@example.org\n"
                "@old.example @example.org\n"
                "root admin@example.org\n"
                "@catch.example one@example.org\n"
            )
        )
    )
    assert maps.sender("joe@example.org") == "Joe.Smith@example.org"
    assert maps.sender("JOE@Example.ORG") == "Joe.Smith@example.org"
    # An extension cut off to find the key is added back (propagate_unmatched_extensions).
    assert maps.recipient("joe+x@example.org") == "Joe.Smith+x@example.org"
    assert maps.recipient("ann+y@old.example") == "ann+y@example.org"
    assert maps.recipient("anyone+z@catch.example") == "one@example.org"
    # Bare local-part keys only for this host's names.
    assert maps.recipient(f"root@{HOST}") == "admin@example.org"
    assert maps.recipient("root@example.org") == "root@example.org"
    assert maps.sender("") == ""
    assert maps.recipient("stranger@far.test") == "stranger@far.test"


def test_specific_maps_run_before_canonical_maps(make_tables: MakeTables) -> None:
    maps = canonical_of(
        make_tables(
            canonical="a@example.org c@example.org\nb@example.org b-common@example.org\n",
            sender="a@example.org b@example.org\n",
            recipient="a@example.org r@example.org\n",
        )
    )
    # sender map: a -> b; then canonical: b -> b-common.
    assert maps.sender("a@example.org") == "b-common@example.org"
    assert maps.recipient("a@example.org") == "r@example.org"
    assert maps.for_field("from") == maps.sender
    assert maps.for_field("cc") == maps.recipient
    assert maps.for_field("subject") is None


def test_canonical_recursion_stops_at_self_and_after_ten_rounds(
    make_tables: MakeTables,
) -> None:
    chain = "".join(f"u{i}@example.org u{i + 1}@example.org\n" for i in range(20))
    maps = canonical_of(make_tables(canonical=chain + "self@example.org Self@example.org\n"))
    assert maps.sender("self@example.org") == "Self@example.org"
    assert maps.sender("u15@example.org") == "u20@example.org"
    with capture_logs() as logs:
        assert maps.sender("u0@example.org") == "u10@example.org"
    assert logs[0]["event"] == "canonical_nesting"


def test_canonical_multi_valued_entry_uses_the_first(make_tables: MakeTables) -> None:
    maps = canonical_of(make_tables(canonical="m@example.org x@example.org, y@example.org\n"))
    with capture_logs() as logs:
        assert maps.sender("m@example.org") == "x@example.org"
    assert logs[0]["event"] == "canonical_multi_valued"


# -- Received ------------------------------------------------------------------------------


def test_received_value_forms() -> None:
    value = received_value(
        hostname=HOST,
        arrival=ARRIVAL,
        protocol="ESMTPS",
        queue_id="4AbC9",
        helo="client.example",
        client_ip="192.0.2.1",
        client_hostname="rdns.example.",
        tls_version="TLSv1.3",
        tls_cipher="TLS_AES_256_GCM_SHA384",
        recipients=["bob@example.org"],
    )
    date = email.utils.formatdate(ARRIVAL, localtime=True)
    assert value == (
        "from client.example (rdns.example [192.0.2.1])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n"
        f"\tby {HOST} (pochta) with ESMTPS id 4AbC9\r\n"
        f"\tfor <bob@example.org>; {date}"
    )
    many = received_value(
        hostname=HOST,
        arrival=ARRIVAL,
        protocol="ESMTP",
        helo="evil) (by fake; x",
        client_ip="2001:db8::1",
        recipients=["a@example.org", "b@example.org"],
    )
    assert many == (
        "from evil???by?fake??x (unknown [IPv6:2001:db8::1])\r\n"
        f"\tby {HOST} (pochta) with ESMTP;\r\n\t{date}"
    )
    local = received_value(hostname=HOST, arrival=ARRIVAL, protocol="LOCAL", queue_id="Q1")
    assert local == f"by {HOST} (pochta) with LOCAL id Q1;\r\n\t{date}"
    # pickup (pochta sendmail), as Postfix: the user's uid, no "with" (RFC 5321 §4.4 optional)
    picked = received_value(
        hostname=HOST, arrival=ARRIVAL, protocol="local", queue_id="Q2", local_uid=1000
    )
    assert picked == f"by {HOST} (pochta, from userid 1000) id Q2;\r\n\t{date}"
    mapped = received_value(
        hostname=HOST, arrival=ARRIVAL, protocol="SMTP", client_ip="::ffff:192.0.2.7"
    )
    assert "(unknown [192.0.2.7])" in mapped


def test_message_id_is_unique_and_well_formed() -> None:
    first = message_id_value(HOST, ARRIVAL, "Q-1")
    assert re.fullmatch(rf"<\d{{14}}\.Q1\.[0-9a-f]{{12}}@{re.escape(HOST)}>", first)
    assert message_id_value(HOST, ARRIVAL, "Q-1") != first


# -- the pipeline --------------------------------------------------------------------------


def make_cleanup(tables: ConfiguredTables, **kwargs: object) -> Cleanup:
    settings = make_settings({"server.hostname": HOST})
    return Cleanup(settings, tables, **kwargs)  # type: ignore[arg-type]


def mx_input(**overrides: object) -> CleanupInput:
    values: dict[str, object] = {
        "sender": "alice@far.test",
        "recipients": ["bob@example.org"],
        "client_ip": "192.0.2.1",
        "client_hostname": "mx.far.test",
        "helo": "mx.far.test",
        "protocol": "ESMTPS",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_128_GCM_SHA256",
        "queue_id": "4XyZ",
        "arrival": ARRIVAL,
    }
    values.update(overrides)
    return CleanupInput(**values)  # type: ignore[arg-type]


ORIGINAL_HEADERS = (
    b'From: "J\xc3\xb6rg" <joe@example.org>\r\n'
    b"To: Bob <bob@example.org>,\r\n  carol@example.org\r\n"
    b"Subject: =?utf-8?q?hi?=\r\n"
)
BINARY_BODY = b"\r\n\x00\xff\xfe binary \r\n.\r\n\r\n8bit \xe2\x82\xac\r\n"


async def test_mx_message_gets_received_and_nothing_else(make_tables: MakeTables) -> None:
    tables = make_tables(canonical="joe@example.org joseph@example.org\n")
    cleanup = make_cleanup(tables)
    content = ORIGINAL_HEADERS + BINARY_BODY
    result = await cleanup.process(content, mx_input(sender="joe@example.org"))
    assert result.accepted
    assert result.reply is None
    assert result.content.startswith(b"Received: from mx.far.test (mx.far.test [192.0.2.1])\r\n")
    # Everything after our Received field is byte-identical: no header rewriting for MX
    # traffic, no Message-ID or Date added, the body untouched.
    received_end = result.content.index(b"From: ")
    assert result.content[received_end:] == content
    # The envelope is mapped for every client.
    assert result.sender == "joseph@example.org"
    assert result.recipients == ["bob@example.org"]
    assert len(result.headers_added) == 1
    assert result.headers_added[0].startswith("Received: from mx.far.test")
    assert "for <bob@example.org>" in result.headers_added[0]


async def test_received_never_names_the_login(make_tables: MakeTables) -> None:
    result = await make_cleanup(make_tables()).process(
        b"Subject: x\r\n\r\nbody\r\n",
        mx_input(protocol="ESMTPSA", auth_user="alice@example.org", submission=True),
    )
    assert b"alice@example.org" not in result.content
    assert b"with ESMTPSA id 4XyZ" in result.content


async def test_submission_adds_message_id_and_date_at_the_end(make_tables: MakeTables) -> None:
    content = b"Subject: x\r\nFrom: a@example.org\r\n\r\nbody\r\n"
    result = await make_cleanup(make_tables()).process(content, mx_input(submission=True))
    message = split_message(result.content)
    assert [h.name for h in message.headers] == [
        "Received",
        "Subject",
        "From",
        "Message-ID",
        "Date",
    ]
    assert re.fullmatch(rf"<[^@\s]+@{re.escape(HOST)}>", message.get_all("message-id")[0].text)
    assert message.get_all("date")[0].text == email.utils.formatdate(ARRIVAL, localtime=True)
    assert message.body == b"body\r\n"
    assert [h.split(":")[0] for h in result.headers_added] == ["Received", "Message-ID", "Date"]


async def test_submission_keeps_existing_message_id_and_date(make_tables: MakeTables) -> None:
    content = b"message-id: <x@y>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nb\r\n"
    result = await make_cleanup(make_tables()).process(content, mx_input(submission=True))
    assert result.content.endswith(content)
    assert len(result.headers_added) == 1


async def test_mx_message_without_message_id_gets_none(make_tables: MakeTables) -> None:
    result = await make_cleanup(make_tables()).process(b"Subject: x\r\n\r\nb\r\n", mx_input())
    assert not split_message(result.content).has("message-id")
    assert not split_message(result.content).has("date")


async def test_submission_rewrites_header_addresses_keeping_names(
    make_tables: MakeTables,
) -> None:
    tables = make_tables(
        sender="joe@example.org Joe.Smith@example.org\n",
        recipient="bob@example.org robert@example.org\n",
        canonical="carol@example.org caroline@example.org\n",
    )
    info = mx_input(
        sender="joe@example.org",
        recipients=["bob@example.org", "carol@example.org"],
        submission=True,
    )
    content = ORIGINAL_HEADERS + b"Cc: joe@example.org\r\nMessage-ID: <m@x>\r\nDate: d\r\n"
    content += BINARY_BODY
    result = await make_cleanup(tables).process(content, info)
    assert result.sender == "Joe.Smith@example.org"
    assert result.recipients == ["robert@example.org", "caroline@example.org"]
    message = split_message(result.content)
    raw = {h.key: h.raw for h in message.headers}
    assert raw["from"] == b'From: "J\xc3\xb6rg" <Joe.Smith@example.org>\r\n'
    assert raw["to"] == b"To: Bob <robert@example.org>,\r\n  caroline@example.org\r\n"
    # Cc is a recipient field: sender_canonical_maps do not apply to it.
    assert raw["cc"] == b"Cc: joe@example.org\r\n"
    assert raw["subject"] == b"Subject: =?utf-8?q?hi?=\r\n"
    assert message.body == BINARY_BODY[2:]
    assert "for <" not in result.headers_added[0]  # two recipients: no "for"


async def test_hidden_submission_client(make_tables: MakeTables) -> None:
    cleanup = make_cleanup(make_tables(), hide_submission_client=True)
    sub = await cleanup.process(b"A: b\r\n\r\n", mx_input(submission=True, protocol="ESMTPSA"))
    assert sub.headers_added[0].startswith(f"Received: by {HOST} (pochta) with ESMTPSA id 4XyZ")
    assert b"192.0.2.1" not in sub.content
    mx = await cleanup.process(b"A: b\r\n\r\n", mx_input())
    assert b"192.0.2.1" in mx.content


async def test_lf_messages_get_lf_headers(make_tables: MakeTables) -> None:
    result = await make_cleanup(make_tables()).process(
        b"Subject: x\n\nbody\n", mx_input(submission=True)
    )
    assert b"\r" not in result.content
    assert b"\nSubject: x\nMessage-ID: <" in result.content
    assert result.content.endswith(b"\n\nbody\n")


async def test_headers_ending_without_empty_line_get_one(make_tables: MakeTables) -> None:
    cleanup = make_cleanup(make_tables())
    result = await cleanup.process(b"Subject: x\r\nnot a header\r\n", mx_input())
    assert result.content.endswith(b"\r\nSubject: x\r\n\r\nnot a header\r\n")
    at_eof = await cleanup.process(b"Subject: x", mx_input(submission=True))
    message = split_message(at_eof.content)
    assert [h.name for h in message.headers] == ["Received", "Subject", "Message-ID", "Date"]
    assert message.headers[1].raw == b"Subject: x\r\n"


async def test_header_limits_refuse(make_tables: MakeTables) -> None:
    cleanup = make_cleanup(make_tables())
    huge_field = b"X-Big: " + b"a" * MAX_HEADER_FIELD_BYTES + b"\r\n\r\nbody"
    result = await cleanup.process(huge_field, mx_input())
    assert result.problems == [HEADER_TOO_LARGE]
    assert not result.accepted
    assert result.reply == Reply(550, "5.6.0", "Message header too large")
    block = b"X-A: 0123456789abcdef\r\n" * (MAX_HEADER_BLOCK_BYTES // 23 + 1) + b"\r\nb"
    assert (await cleanup.process(block, mx_input())).reply == HEADER_TOO_LARGE


async def test_hop_count(make_tables: MakeTables) -> None:
    cleanup = make_cleanup(make_tables())
    hop = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    ok = await cleanup.process(hop * 99 + b"\r\nbody", mx_input())
    assert ok.accepted
    assert split_message(ok.content).count("received") == 100
    loop = await cleanup.process(hop * 100 + b"\r\nbody", mx_input())
    assert loop.reply == TOO_MANY_HOPS
    assert loop.reply is not None
    assert (loop.reply.code, loop.reply.enhanced) == (554, "5.4.6")


async def test_filters_run_in_order_and_can_refuse(make_tables: MakeTables) -> None:
    seen: list[str] = []

    async def authres(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        seen.append("authres")
        return result.prepend_header("Authentication-Results", f"{HOST};\r\n\tspf=pass")

    async def spam(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        seen.append("spam")
        assert result.content.startswith(b"Authentication-Results: ")
        return Reply(554, "5.7.1", "Spam")

    async def never(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        seen.append("never")
        return result

    cleanup = make_cleanup(make_tables(), filters=[authres])
    good = await cleanup.process(b"A: b\r\n\r\nbody", mx_input())
    assert good.content.startswith(
        f"Authentication-Results: {HOST};\r\n\tspf=pass\r\nReceived: ".encode()
    )
    assert good.headers_added[-1] == f"Authentication-Results: {HOST};\r\n\tspf=pass"
    cleanup.filters.extend([spam, never])
    bad = await cleanup.process(b"A: b\r\n\r\nbody", mx_input())
    assert bad.reply == Reply(554, "5.7.1", "Spam")
    assert seen == ["authres", "authres", "spam"]


async def test_a_failing_filter_defers(make_tables: MakeTables) -> None:
    async def broken(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        raise RuntimeError("rspamd down")

    cleanup = make_cleanup(make_tables(), filters=[broken])
    with capture_logs() as logs:
        result = await cleanup.process(b"A: b\r\n\r\nbody", mx_input())
    assert result.reply == TEMPORARY_FAILURE
    assert [e["event"] for e in logs] == ["cleanup_filter_failed", "cleanup_refused"]


async def test_filters_do_not_run_on_a_refused_message(make_tables: MakeTables) -> None:
    called = False

    async def hook(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        nonlocal called
        called = True
        return result

    cleanup = make_cleanup(make_tables(), filters=[hook])
    hop = b"Received: x; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    result = await cleanup.process(hop * 150 + b"\r\n", mx_input())
    assert result.reply == TOO_MANY_HOPS
    assert not called


async def test_one_log_line_per_message(make_tables: MakeTables) -> None:
    with capture_logs() as logs:
        await make_cleanup(make_tables()).process(
            b"Message-ID: <abc@far.test>\r\n\r\nb", mx_input(recipients=["a@x.test", "b@x.test"])
        )
    assert logs == [
        {
            "event": "cleanup",
            "logger": "cleanup",
            "log_level": "info",
            "queue_id": "4XyZ",
            "message_id": "<abc@far.test>",
            "sender": "alice@far.test",
            "nrcpt": 2,
            "size": logs[0]["size"],
        }
    ]


def test_prepend_header_follows_the_message_line_ending() -> None:
    lf = CleanupResult(b"A: b\n\nbody\n", "", []).prepend_header("X-Spam", "no\r\n\tscore=1")
    assert lf.content == b"X-Spam: no\n\tscore=1\nA: b\n\nbody\n"
    assert lf.headers_added == ["X-Spam: no\n\tscore=1"]
    with pytest.raises(ValueError, match="SP or HTAB"):
        lf.prepend_header("X-Spam", "no\r\nBcc: victim@example.org")


# -- the verdict ---------------------------------------------------------------------------


async def test_a_filter_reads_the_verdict_of_the_one_before(make_tables: MakeTables) -> None:
    seen: list[tuple[str, ...]] = []

    async def authentication(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        result = result.add_auth_result("spf", "pass", smtp_mailfrom=info.sender)
        result = result.add_auth_result("dkim", "pass", header_d="far.test", header_s="s1")
        return result.add_auth_result("dkim", "fail", "bad signature", header_d="x.test")

    async def scoring(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
        dkim = result.verdict.auth_results("dkim")  # the first filter's findings, no headers
        seen.append(tuple(a.render() for a in dkim))
        if any(a.result == "fail" for a in dkim):
            result = result.add_symbol("R_DKIM_REJECT", 1.5, "DKIM failed", ["x.test"])
        result = result.add_symbol("BAYES_SPAM", 4.0)
        return result.decide("folder", "score over 5", folder="Junk")

    cleanup = make_cleanup(make_tables(), filters=[authentication, scoring])
    with capture_logs() as logs:
        result = await cleanup.process(b"A: b\r\n\r\nbody", mx_input())
    assert seen == [
        (
            "dkim=pass header.d=far.test header.s=s1",
            'dkim=fail reason="bad signature" header.d=x.test',
        )
    ]
    assert result.accepted
    verdict = result.verdict
    assert [a.method for a in verdict.auth] == ["spf", "dkim", "dkim"]
    assert verdict.auth[0].properties == {"smtp.mailfrom": "alice@far.test"}
    assert verdict.symbol("R_DKIM_REJECT") == Symbol(
        name="R_DKIM_REJECT", score=1.5, description="DKIM failed", options=("x.test",)
    )
    assert verdict.score == 5.5
    assert (verdict.action, verdict.folder, verdict.delivery_folder) == ("folder", "Junk", "Junk")
    [line] = [e for e in logs if e["event"] == "cleanup"]
    assert (line["action"], line["score"], line["folder"]) == ("folder", 5.5, "Junk")


async def test_a_verdict_to_reject_or_tempfail_refuses_the_message(make_tables: MakeTables) -> None:
    def deciding(action: Action, reason: str) -> Filter:
        async def hook(result: CleanupResult, info: CleanupInput) -> CleanupResult | Reply:
            return result.add_symbol("GTUBE", 100.0).decide(action, reason)

        return hook

    rejected = await make_cleanup(
        make_tables(), filters=[deciding("reject", "Gtube pattern\r\nX")]
    ).process(b"A: b\r\n\r\nbody", mx_input())
    assert rejected.reply == Reply(550, "5.7.1", "Gtube pattern??X")
    assert not rejected.accepted
    deferred = await make_cleanup(make_tables(), filters=[deciding("tempfail", "")]).process(
        b"A: b\r\n\r\nbody", mx_input()
    )
    assert deferred.reply == Reply(451, "4.7.1", "Try again later")
    kept = await make_cleanup(make_tables(), filters=[deciding("add_header", "")]).process(
        b"A: b\r\n\r\nbody", mx_input()
    )
    assert kept.accepted
    assert kept.verdict.score == 100.0
    with pytest.raises(ValueError, match="needs the folder"):
        Verdict().with_action("folder")


def test_a_symbol_counts_once() -> None:
    verdict = (
        Verdict().with_symbol(Symbol(name="A", score=2)).with_symbol(Symbol(name="A", score=3))
    )
    assert verdict.symbols == (Symbol(name="A", score=3),)
    assert verdict.score == 3
