"""Modified UTF-7 (RFC 3501 §5.1.3), the one implementation that the IMAP server's mailbox
names and the Maildir folder directories share."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.mime.utf7 import decode_modified_utf7, encode_modified_utf7
from pochta.protocols.imap.render import decode_mailbox, encode_mailbox
from pochta.store.maildir import decode_folder_name, encode_folder_name, folder_from_dir_name

# Non-canonical or broken forms: each decodes to something under a lax reader, so a lax
# Maildir reader would let two directory names stand for one folder.
NON_CANONICAL = [
    "&AOl-",  # "é" is &AOk-; the last base64 digit has padding bits set
    "&AOkA6R-",  # "éé" is &AOkA6Q-
    "&AGE-",  # "a" encoded: printable ASCII must stand for itself
    "&ACY-",  # "&" encoded instead of "&-"
    "&AOk",  # unterminated
    "&U,B!-",  # not base64
    "&AO-",  # an odd number of UTF-16 bytes
    "&2D3-",  # a lone surrogate
    "caf\xe9",  # 8-bit
    "a\tb",  # control character
]


def test_rfc3501_example() -> None:
    assert encode_modified_utf7("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
    assert decode_modified_utf7("~peter/mail/&U,BTFw-/&ZeVnLIqe-") == "~peter/mail/台北/日本語"
    assert encode_modified_utf7("Tom & Jerry") == "Tom &- Jerry"
    assert decode_modified_utf7("&-") == "&"


@pytest.mark.parametrize("text", NON_CANONICAL)
def test_non_canonical_forms_are_refused_by_imap_and_by_the_maildir(text: str) -> None:
    with pytest.raises(ValueError, match=r"modified (UTF-7|base64)"):
        decode_modified_utf7(text)
    with pytest.raises(ValueError, match=r"modified (UTF-7|base64)"):
        decode_mailbox(text)
    with pytest.raises(ValueError, match=r"modified (UTF-7|base64)"):
        decode_folder_name(text)
    # A directory with such a name is no folder (before, ".&AOl-" was a second "é").
    assert folder_from_dir_name("." + text) is None


def test_imap_and_maildir_use_the_one_implementation() -> None:
    assert encode_mailbox is encode_modified_utf7 is encode_folder_name
    assert decode_mailbox is decode_modified_utf7 is decode_folder_name


@given(st.text(max_size=60))
@example("&")
@example("é&é")
@example("\U0001f600 x \U0001f600\U0001f600")
@example("\x7f\x00 ~")
def test_round_trip(name: str) -> None:
    encoded = encode_modified_utf7(name)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert decode_modified_utf7(encoded) == name


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
@example("&AOl-")
def test_any_printable_text_decodes_only_if_it_is_the_encoding_of_its_name(text: str) -> None:
    """Canonical: what decodes encodes back to the very same text, so one name has one
    spelling on the wire and on disk."""
    try:
        name = decode_modified_utf7(text)
    except ValueError:
        return
    assert encode_modified_utf7(name) == text
