"""BINARY fetch decoding (RFC 3516): quoted-printable by RFC 2045 §6.7, base64."""

from __future__ import annotations

import binascii

from hypothesis import given
from hypothesis import strategies as st

from pochta.access.binary_content import encode_binary_parts, needs_encoding
from pochta.access.imap_mime import decode_quoted_printable, fetch_binary, parse_structure


def test_soft_breaks_and_trailing_whitespace() -> None:
    body = (
        b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\n"
        b"foo = \t\r\nbar\r\nfoo  \r\nfoo_bar\r\n"
    )
    assert decode_quoted_printable(body) == (
        b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo\r\nfoo_bar\r\n"
    )


def test_bad_escapes_are_kept_and_lf_lines_become_crlf() -> None:
    assert decode_quoted_printable(b"a=3D=ZZ=\nb=4\nc") == b"a==ZZb=4\r\nc"


@given(st.binary(max_size=300))
def test_round_trip_of_encoded_data(data: bytes) -> None:
    # Line breaks are text structure in QP (RFC 2045 §6.7 rule 4): compare CRLF-normalised.
    data = data.replace(b"\r", b"").replace(b"\n", b"\r\n")
    encoded = binascii.b2a_qp(data, istext=False)
    assert decode_quoted_printable(encoded) == data


def test_fetch_binary_of_parts() -> None:
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nx=3Dy=\r\nz\r\n--b\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n/w==\r\n--b--\r\n"
    )
    root = parse_structure(raw)
    assert fetch_binary(raw, root, (1,)) == b"x=yz"
    assert fetch_binary(raw, root, (2,)) == b"\x00\x01\x02\xff"
    assert fetch_binary(raw, root, ()) == raw


def test_binary_parts_are_stored_as_base64_and_fetch_back_exactly() -> None:
    original = b"\x00-\xe4\n\r\n\n"
    message = (
        b"From: a@example.org\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + original
    )
    assert needs_encoding(message)
    stored = encode_binary_parts(message)
    assert b"\x00" not in stored
    assert b"Content-Transfer-Encoding: base64\r\n" in stored
    assert b"binary" not in stored.lower()
    assert fetch_binary(stored, parse_structure(stored), (1,)) == original


def test_only_binary_leaves_of_a_multipart_change() -> None:
    message = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nplain text\r\n--b\r\n"
        b"Content-Type: image/png\r\n\r\n\x89PNG\x00\x01\r\n--b--\r\n"
    )
    stored = encode_binary_parts(message)
    root = parse_structure(stored)
    assert fetch_binary(stored, root, (1,)) == b"plain text"
    assert fetch_binary(stored, root, (2,)) == b"\x89PNG\x00\x01"
    assert stored.count(b"Content-Transfer-Encoding: base64") == 1


def test_text_messages_are_left_alone() -> None:
    assert not needs_encoding(b"Subject: hi\r\n\r\nplain words\r\n")
    message = b"Subject: hi\r\n\r\nthe word binary alone changes nothing\r\n"
    assert needs_encoding(message)  # the cheap test lets it through; the parse says no
    assert encode_binary_parts(message) == message


@given(st.binary(max_size=200))
def test_any_binary_body_comes_back(body: bytes) -> None:
    message = b"Content-Transfer-Encoding: binary\r\n\r\n" + body
    stored = encode_binary_parts(message)
    assert fetch_binary(stored, parse_structure(stored), (1,)) == body
