"""transport(5) values: parse_transport, rendering and the next-hop rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.resolve import Transport, TransportError, parse_transport


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp:example.org", Transport("smtp", "example.org", None, True)),
        ("smtp:Example.ORG.", Transport("smtp", "example.org", None, True)),
        ("smtp:example.org:2525", Transport("smtp", "example.org", 2525, True)),
        ("smtp:[mail.example.org]", Transport("smtp", "mail.example.org", None, False)),
        ("relay:[10.0.0.5]:2525", Transport("relay", "10.0.0.5", 2525, False)),
        ("smtp:[2001:db8::1]", Transport("smtp", "2001:db8::1", None, False)),
        ("smtp:[IPv6:2001:DB8::1]:25", Transport("smtp", "2001:db8::1", 25, False)),
        ("lmtp:[127.0.0.1]:24", Transport("lmtp", "127.0.0.1", 24, False)),
        ("lmtp:127.0.0.1:24", Transport("lmtp", "127.0.0.1", 24, False)),
        ("lmtp:inet:localhost:24", Transport("lmtp", "localhost", 24, False)),
        ("lmtp:unix:/run/dovecot/lmtp", Transport("lmtp", "/run/dovecot/lmtp", None, False, True)),
        ("smtp:", Transport("smtp", "", None, True)),
        ("smtp", Transport("smtp", "", None, True)),
        (":[gw.example.org]", Transport("smtp", "gw.example.org", None, False)),
        ("SMTP:[gw.example.org]:submission", Transport("smtp", "gw.example.org", 587, False)),
        (
            "error:5.1.1 no such user, sorry",
            Transport("error", "5.1.1 no such user, sorry", None, False),
        ),
        ("retry:", Transport("retry", "", None, False)),
        ("discard:spam trap", Transport("discard", "spam trap", None, False)),
        ("custom-pipe:whatever", Transport("custom-pipe", "whatever", None, True)),
    ],
)
def test_parse(value: str, expected: Transport) -> None:
    assert parse_transport(value) == expected


def test_default_kind_fills_an_empty_transport_name() -> None:
    assert parse_transport(":[gw.example.org]", default_kind="relay").kind == "relay"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty transport"),
        ("smtp:[oops", "without ']'"),
        ("smtp:[host]x", "after ']'"),
        ("smtp:2001:db8::1", "needs brackets"),
        ("smtp:host:99999", "out of range"),
        ("smtp:host:0", "out of range"),
        ("smtp:host:no-such-service-x", "neither a number nor a service"),
        ("smtp:a.example, b.example", "one next hop"),
        ("smtp:bad_host!", "not a host name"),
        ("lmtp:unix:relative/path", "absolute path"),
        ("sm tp:host", "not a transport name"),
    ],
)
def test_refused(value: str, message: str) -> None:
    with pytest.raises(TransportError, match=message):
        parse_transport(value)


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("smtp:example.org", "smtp:example.org"),
        ("smtp:example.org:2525", "smtp:example.org:2525"),
        ("relay:[10.0.0.5]:2525", "relay:[10.0.0.5]:2525"),
        ("smtp:[ipv6:2001:db8::1]", "smtp:[2001:db8::1]"),
        ("lmtp:inet:localhost:24", "lmtp:[localhost]:24"),
        ("lmtp:unix:/run/lmtp", "lmtp:unix:/run/lmtp"),
        ("error:5.7.1 go away", "error:5.7.1 go away"),
        ("discard:", "discard:"),
        ("smtp:", "smtp:"),
    ],
)
def test_render(value: str, rendered: str) -> None:
    assert str(parse_transport(value)) == rendered
    assert parse_transport(rendered) == parse_transport(value)


def test_with_nexthop_fills_the_recipient_domain_only_when_empty() -> None:
    assert str(parse_transport("smtp:").with_nexthop("example.org")) == "smtp:example.org"
    assert str(parse_transport("relay:[gw]").with_nexthop("example.org")) == "relay:[gw]"
    assert str(parse_transport("smtp:").with_nexthop("[192.0.2.1]")) == "smtp:[192.0.2.1]"
    literal = parse_transport("smtp:").with_nexthop("[IPv6:2001:db8::2]")
    assert (literal.nexthop, literal.mx_lookup) == ("2001:db8::2", False)
    assert parse_transport("error:").with_nexthop("example.org").nexthop == ""
    assert parse_transport("lmtp:").with_nexthop("example.org").mx_lookup is False


def test_effective_port() -> None:
    assert parse_transport("smtp:x.example").effective_port == 25
    assert parse_transport("lmtp:[127.0.0.1]").effective_port == 24
    assert parse_transport("relay:[x.example]:2525").effective_port == 2525
    assert parse_transport("custom:x").effective_port is None


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    kind=st.sampled_from(["smtp", "relay", "lmtp"]),
    labels=st.lists(_label, min_size=1, max_size=4),
    bracketed=st.booleans(),
    port=st.none() | st.integers(1, 65535),
)
def test_render_parse_round_trip(
    kind: str, labels: list[str], bracketed: bool, port: int | None
) -> None:
    host = ".".join(labels)
    text = f"[{host}]" if bracketed else host
    value = f"{kind}:{text}" + (f":{port}" if port is not None else "")
    parsed = parse_transport(value)
    assert parsed.nexthop == host
    assert parsed.port == port
    assert parsed.mx_lookup == (not bracketed and kind != "lmtp")
    assert parse_transport(str(parsed)) == parsed


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_transport_error(value: str) -> None:
    try:
        parsed = parse_transport(value)
    except TransportError:
        return
    assert parsed.kind


@pytest.mark.parametrize("port", ["٣", "smtp\x00", "ä"])
def test_odd_ports_are_refused(port: str) -> None:
    with pytest.raises(TransportError):
        parse_transport(f"smtp:[host]:{port}")
