"""The ARC sealer (mailauth/arc_seal.py): a set made here verifies with dkimpy's
``arc_verify`` (RFC 8617), and a second hop makes i=2 with cv=pass."""

from __future__ import annotations

import dkim
import pytest

from pochta.mailauth.arc_seal import SealError, seal_fields
from tests.factories import make_rsa_dkim_key

KEY1, TXT1 = make_rsa_dkim_key()
KEY2, TXT2 = make_rsa_dkim_key()
ZONE = {"arc._domainkey.fwd.example": TXT1, "arc._domainkey.second.example": TXT2}


def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    return ZONE.get(name.decode().rstrip(".").lower())


MESSAGE = (
    b"Authentication-Results: mx.fwd.example;\r\n\tspf=pass smtp.mailfrom=orig.example;\r\n"
    b"\tdkim=none;\r\n\tdmarc=pass header.from=orig.example\r\n"
    b"Received: from a.orig.example by mx.fwd.example\r\n"
    b"From: Alice <alice@orig.example>\r\n"
    b"To: list@fwd.example\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@orig.example>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def seal_at_fwd(message: bytes = MESSAGE) -> bytes:
    """The ARC set mx.fwd.example adds (first hop, KEY1)."""
    return seal_fields(
        message,
        authserv_id="mx.fwd.example",
        domain="fwd.example",
        selector="arc",
        private_key=KEY1,
    )


def seal_at_second(message: bytes) -> bytes:
    """The ARC set mx.second.example adds (next hop, KEY2)."""
    return seal_fields(
        message,
        authserv_id="mx.second.example",
        domain="second.example",
        selector="arc",
        private_key=KEY2,
    )


def test_seal_then_arc_verify_passes() -> None:
    fields = seal_at_fwd()
    assert fields.startswith(b"ARC-Seal: i=1;")
    assert b"ARC-Message-Signature: i=1;" in fields
    assert b"ARC-Authentication-Results: i=1; mx.fwd.example;" in fields
    sealed = fields + MESSAGE
    cv, results, reason = dkim.arc_verify(sealed, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert results[0]["instance"] == 1
    # The seal says cv=none for the first set (RFC 8617 §5.1.1).
    assert b"cv=none" in fields.split(b"ARC-Message-Signature")[0]


def test_second_seal_is_i2_cv_pass() -> None:
    first = seal_at_fwd()
    # The next hop verified the chain and wrote arc=pass in its Authentication-Results.
    hop2 = (
        b"Authentication-Results: mx.second.example; arc=pass;\r\n\tspf=fail smtp.mailfrom=x\r\n"
        + first
        + MESSAGE
    )
    second = seal_at_second(hop2)
    seal = second.split(b"ARC-Message-Signature")[0]
    assert b"i=2" in seal
    assert b"cv=pass" in seal
    cv, results, reason = dkim.arc_verify(second + hop2, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert sorted(r["instance"] for r in results) == [1, 2]


def test_no_results_of_ours_no_seal() -> None:
    with pytest.raises(SealError) as caught:
        seal_fields(
            MESSAGE,
            authserv_id="other.example",
            domain="fwd.example",
            selector="arc",
            private_key=KEY1,
        )
    assert caught.value.kind == "results"


def test_earlier_chain_without_arc_result_no_seal() -> None:
    first = seal_at_fwd()
    hop2 = (
        b"Authentication-Results: mx.second.example; spf=pass smtp.mailfrom=x\r\n" + first + MESSAGE
    )
    with pytest.raises(SealError) as caught:
        seal_at_second(hop2)
    assert caught.value.kind == "chain"
