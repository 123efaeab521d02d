"""SRS (mailauth/srs.py): libsrs2's SRS0/SRS1 addresses made and reversed, with an injected
clock, case-folded hashes, expiry and secret rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pochta.mailauth.srs import DAY_SECONDS, SrsCodec, SrsError, SrsRewriter, is_srs

NOW = 1_800_000_000.0  # a fixed instant; every clock below is relative to it


def codec(domain: str = "fwd.example", secrets: tuple[bytes, ...] = (b"s3cret",), **kw) -> SrsCodec:
    kw.setdefault("clock", lambda: NOW)
    return SrsCodec(domain, secrets, **kw)


# RFC 5322 atext (without "=" at the start, which libsrs2 addresses also allow) and dots.
_ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-."
local_parts = st.text(alphabet=_ATEXT, min_size=1, max_size=40).filter(lambda s: not is_srs(s))
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20).filter(
    lambda s: not s.startswith("-") and not s.endswith("-")
)
domains = st.lists(labels, min_size=2, max_size=4).map(".".join)


@given(local=local_parts, domain=domains)
def test_round_trip(local: str, domain: str) -> None:
    c = codec()
    address = c.forward(f"{local}@{domain}")
    srs_local, _, srs_domain = address.rpartition("@")
    assert srs_domain == "fwd.example"
    assert srs_local.startswith("SRS0=")
    assert c.reverse(srs_local) == f"{local}@{domain}"
    assert c.reverse(srs_local.lower()).lower() == f"{local}@{domain}".lower()


def test_format_is_libsrs2s() -> None:
    address = codec().forward("alice@orig.example")
    tag, digest, stamp, domain, local = address.partition("@")[0].split("=")
    assert (tag, len(digest), len(stamp), domain, local) == ("SRS0", 4, 2, "orig.example", "alice")
    days = int(NOW // DAY_SECONDS) % 1024
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    assert stamp == alphabet[days >> 5] + alphabet[days & 31]


def test_srs1_from_srs0_and_back() -> None:
    first = codec("first.example", (b"one",))
    second = codec("second.example", (b"two",))
    srs0 = first.forward("alice@orig.example")
    srs1 = second.forward(srs0)
    local = srs1.partition("@")[0]
    assert srs1.endswith("@second.example")
    assert local.startswith("SRS1=")
    assert "=first.example==" in local
    # A bounce to SRS1 goes back to the first forwarder's SRS0, which it reverses.
    assert second.reverse(local) == srs0
    assert first.reverse(srs0.partition("@")[0]) == "alice@orig.example"
    # A third forwarder keeps the first forwarder and the SRS0 tail (libsrs2).
    third = codec("third.example", (b"three",))
    again = third.forward(srs1)
    assert "=first.example==" in again
    assert third.reverse(again.partition("@")[0]) == srs0


def test_case_folded_hash_is_accepted() -> None:
    c = codec()
    local = c.forward("Alice@Orig.Example").partition("@")[0]
    assert c.reverse(local.lower()).lower() == "alice@orig.example"
    assert c.reverse(local.upper()).lower() == "alice@orig.example"


def test_bad_hash_is_refused() -> None:
    c = codec()
    local = c.forward("alice@orig.example").partition("@")[0]
    parts = local.split("=")
    parts[1] = "AAAA" if parts[1].upper() != "AAAA" else "BBBB"
    with pytest.raises(SrsError) as caught:
        c.reverse("=".join(parts))
    assert caught.value.kind == "hash"
    assert "hash" in caught.value.reason
    # Another secret, another hash.
    with pytest.raises(SrsError):
        codec(secrets=(b"other",)).reverse(local)


def test_expired_with_an_injected_clock() -> None:
    made = codec().forward("alice@orig.example").partition("@")[0]
    ok = codec(clock=lambda: NOW + 21 * DAY_SECONDS)
    assert ok.reverse(made) == "alice@orig.example"
    late = codec(clock=lambda: NOW + 22 * DAY_SECONDS)
    with pytest.raises(SrsError) as caught:
        late.reverse(made)
    assert caught.value.kind == "expired"
    assert "expired" in caught.value.reason
    shorter = codec(clock=lambda: NOW + 3 * DAY_SECONDS, max_age_days=2)
    with pytest.raises(SrsError):
        shorter.reverse(made)


def test_rotation_first_signs_all_verify() -> None:
    old = codec(secrets=(b"old",))
    made_old = old.forward("alice@orig.example").partition("@")[0]
    rotated = codec(secrets=(b"new", b"old"))
    made_new = rotated.forward("alice@orig.example").partition("@")[0]
    assert made_new != made_old  # the first secret signs
    assert rotated.reverse(made_old) == "alice@orig.example"  # every secret verifies
    assert rotated.reverse(made_new) == "alice@orig.example"
    with pytest.raises(SrsError):
        old.reverse(made_new)


def test_malformed() -> None:
    c = codec()
    for local in ("SRS0=abcd", "SRS1=abcd=x", "alice", "SRS0=abcd=!!=d=l"):
        with pytest.raises(SrsError):
            c.reverse(local)


def test_rewriter_keeps_hosted_and_null_senders() -> None:
    r = SrsRewriter(codec(), hosted=lambda d: d == "ours.example")
    assert r.envelope_sender("") == ""
    assert r.envelope_sender("bob@ours.example") == "bob@ours.example"
    assert r.envelope_sender("x@fwd.example") == "x@fwd.example"
    assert r.envelope_sender("alice@orig.example", "Q1").startswith("SRS0=")
