"""One xtext encoder (RFC 3461 §4): the SMTP parser's, used by the delivery client too."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pochta.deliver import smtp_client
from pochta.protocols.smtp.parse import xtext_decode, xtext_encode


def test_delivery_client_uses_the_parser_encoder() -> None:
    assert smtp_client.xtext is xtext_encode


def test_xtext_encode_vectors() -> None:
    # RFC 3461 §4: "+", "=" and octets outside "!".."~" become "+HH" (upper-case hex).
    assert xtext_encode("a+b=c") == "a+2Bb+3Dc"
    assert xtext_encode("x y") == "x+20y"
    assert xtext_encode("é") == "+C3+A9"
    assert xtext_encode("!~") == "!~"


@given(st.text())
def test_xtext_round_trip(text: str) -> None:
    assert xtext_decode(xtext_encode(text)) == text
