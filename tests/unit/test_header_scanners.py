"""The header scanners of receive, deliver and the CLI read the header block as
``mime.headers.split_message`` cuts it (RFC 5322 §2.2): for any message, well-formed or not
(no empty line, bare LF, folded fields, lines that are no field, a header block over the
scan limit), each answers what the splitter says."""

from __future__ import annotations

import email.utils
from types import SimpleNamespace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.cli.queue import header_section
from pochta.deliver.mailbox import MAX_DELIVERED_TO_SCAN_BYTES, delivered_to_loop
from pochta.deliver.smtp_client import OutgoingMessage, RecipientSpec, _needs_smtputf8
from pochta.mime.headers import split_message
from pochta.receive.smtp_service import MAX_FROM_HEADER_SCAN, _Session

OWN = "me@ex.test"
OTHER = "evil@x.test"

_names = st.sampled_from(["From", "from", "FROM ", "Delivered-To", "delivered-to", "Subject", "X"])
_values = st.sampled_from(
    [OWN, OTHER, f"Me <{OWN}>", f"{OWN}, {OTHER}", f" {OTHER.upper()}", "", "Zürich", "a:b"]
)
_line = st.one_of(
    st.builds(lambda n, v: f"{n}:{v}", _names, _values),  # a field
    st.builds(lambda v: f"\t{v}", _values),  # a continuation (RFC 5322 §2.2.3)
    st.builds(lambda v: f" {v}", _values),
    st.just(""),  # the empty line
    st.sampled_from(["not a field", "From evil@x.test", "é body"]),  # a line that is no field
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_line, max_size=12))
    ends = draw(st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=len(lines)))
    out = b"".join(line.encode() + end for line, end in zip(lines, ends, strict=False))
    if draw(st.booleans()):
        out = out.rstrip(b"\r\n")  # no line ending at the very end
    return out


def _from_addresses_by_splitter(content: bytes) -> list[str]:
    values = [
        b"".join(f.value.splitlines()).decode("utf-8", "replace")
        for f in split_message(content).get_all("from")
    ]
    return [a for _, a in email.utils.getaddresses(values) if a]


def _from_check(content: bytes) -> str | None:
    """The submission From check as the session runs it, for the account OWN."""
    session = SimpleNamespace(
        server=SimpleNamespace(
            settings=SimpleNamespace(smtp=SimpleNamespace(sender_login_mismatch="reject"))
        ),
        mail=SimpleNamespace(
            resolver=SimpleNamespace(sender_allowed=lambda user, addr: addr.lower() == OWN)
        ),
        auth_user=OWN,
        ip="127.0.0.1",
    )
    reply = _Session._from_header_problem(session, content)  # type: ignore[arg-type]
    return None if reply is None else str(reply)


# -- receive/smtp_service.py: the From check of submission --


@settings(max_examples=300, deadline=None)
@given(messages())
# Bare LF: the From field is there and names someone else (it was read as part of Subject).
@example(b"Subject: a\nFrom: evil@x.test\n\nbody")
# The block ends at the line that is no field: what follows is body, not a From field.
@example(b"Subject: x\r\nnot a field\r\nFrom: evil@x.test\r\n\r\nbody")
# A folded From names two addresses.
@example(b"From: me@ex.test,\r\n\tevil@x.test\r\n\r\n")
def test_from_check_reads_the_fields_the_splitter_finds(content: bytes) -> None:
    addresses = _from_addresses_by_splitter(content)
    foreign = [a for a in addresses if a.lower() != OWN]
    reply = _from_check(content)
    if foreign:
        assert reply == f"553 5.7.1 From: <{foreign[0]}> is not owned by user {OWN}"
    else:
        assert reply is None


def test_from_check_reads_up_to_its_limit_in_a_huge_header() -> None:
    filler = b"X-Filler: " + b"a" * 990 + b"\r\n"
    count = MAX_FROM_HEADER_SCAN // len(filler)
    before = b"From: evil@x.test\r\n" + filler * count + b"\r\n"
    assert _from_check(before) is not None
    # A From past the limit: the check does not read so far; cleanup refuses such a header
    # block (HeaderLimitError at 1 MiB), so it is never accepted either.
    after = filler * (count + 1) + b"From: evil@x.test\r\n\r\n"
    assert _from_check(after) is None
    # A field that crosses the limit is not read half: "evil@x.test.example" cut at the
    # limit must not be taken for "evil@x.test".
    pad = MAX_FROM_HEADER_SCAN - len(b"From: evil@x.test")
    crossing = b"X: " + b"a" * (pad - 5) + b"\r\n" + b"From: evil@x.test.example\r\n"
    assert len(crossing) > MAX_FROM_HEADER_SCAN
    assert _from_check(crossing) is None


# -- deliver/mailbox.py: Delivered-To loop detection --


@settings(max_examples=300, deadline=None)
@given(messages(), st.sampled_from([OWN, OTHER]))
@example(b"Delivered-To: me@ex.test\nX: y\n\nbody", OWN)  # bare LF
@example(b"X: y\r\nbody line\r\nDelivered-To: me@ex.test\r\n\r\n", OWN)  # in the body
@example(b"Delivered-To:  me@ex.test\r\n\r\n", OWN)  # two spaces, still the field
def test_delivered_to_loop_reads_the_fields_the_splitter_finds(
    content: bytes, account: str
) -> None:
    expected = any(
        f.text.lower() == account.lower() for f in split_message(content).get_all("delivered-to")
    )
    assert delivered_to_loop(content, account) is expected


def test_delivered_to_loop_in_a_huge_header() -> None:
    filler = b"X-Filler: " + b"a" * 990 + b"\r\n"
    count = MAX_DELIVERED_TO_SCAN_BYTES // len(filler)
    assert delivered_to_loop(b"Delivered-To: me@ex.test\r\n" + filler * count + b"\r\n", OWN)
    assert not delivered_to_loop(filler * (count + 1) + b"Delivered-To: me@ex.test\r\n\r\n", OWN)


# -- deliver/smtp_client.py: does the header section need SMTPUTF8 --


def _outgoing(content: bytes) -> OutgoingMessage:
    return OutgoingMessage(
        queue_id="Q1",
        sender=OWN,
        recipients=(RecipientSpec(OTHER),),
        content=content,
        smtputf8=True,
    )


@settings(max_examples=300, deadline=None)
@given(messages())
@example(b"Subject: a\r\n\xc3\xa9 body without an empty line\r\n")  # 8-bit body only
@example(b"Subject: a\n\nZ\xc3\xbcrich in a body after bare LF\n")
@example(b"Subject: Z\xc3\xbcrich\n\nbody\r\n\r\n")
def test_smtputf8_needed_for_the_header_section_the_splitter_finds(content: bytes) -> None:
    header = b"".join(f.raw for f in split_message(content).headers)
    assert _needs_smtputf8(_outgoing(content)) is not header.isascii()


# -- cli/queue.py: `pochta queue show` prints the header section --


@settings(max_examples=300, deadline=None)
@given(messages())
@example(b"Subject: a\r\nnot a field\r\nbody\r\n")  # no empty line
@example(b"Subject: a\n\nbody\n")  # bare LF
@example(b"Subject: a\r\n folded\r\n\r\nbody\r\n\r\nmore")
def test_queue_show_prints_the_header_section_the_splitter_finds(content: bytes) -> None:
    split = split_message(content)
    shown = header_section(content)
    assert shown == b"".join(f.raw for f in split.headers)
    assert shown + split.separator + split.body == content


@settings(max_examples=300, deadline=None)
@given(messages(), st.integers(min_value=1, max_value=400))
@example(b"Subject: a\r\nnot a field\r\nFrom: x@y.test\r\n\r\nbody", 1000)  # body starts early
@example(b"Subject: a\nX: folded\n continued\n\nbody", 1000)  # bare LF becomes CRLF
def test_bounce_header_copy_is_the_fields_the_splitter_finds(content: bytes, limit: int) -> None:
    """deliver/dsn.py's text/rfc822-headers part: the splitter's fields, CRLF, whole fields
    only, never more than the limit (RFC 6522 §4, RFC 5322 §2.2.3)."""
    from pochta.deliver.dsn import _header_block

    copied = _header_block(content, limit)
    assert len(copied) <= limit
    whole = b"".join(
        f.raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n") + b"\r\n"
        for f in split_message(content).headers
    )
    assert whole.startswith(copied)  # a prefix of the fields, cut between two fields
    assert not copied or copied.endswith(b"\r\n")
    if len(whole) <= limit:
        assert copied == whole
