"""``body`` (RFC 5173): match the body, as it is (``:raw``), its text parts decoded
(``:text``, the default), or the parts of given MIME types decoded (``:content``).
Decoding undoes the transfer encoding (base64, quoted-printable) and the charset."""

from __future__ import annotations

import email
import email.message
import email.policy

from pochta.sieve.compiler import Call
from pochta.sieve.interpreter import Run, split_message
from pochta.sieve.registry import REGISTRY, Capability, TagSpec, TestSpec

MAX_PARTS = 256  # MIME parts looked at, so a message of many tiny parts cannot make work


def _part_text(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _type_matches(content_type: str, wanted: str) -> bool:
    # RFC 5173 §5: "type" matches all its subtypes, "type/subtype" only itself, "" all
    wanted = wanted.strip().lower()
    if not wanted:
        return True
    if "/" in wanted:
        return content_type == wanted
    return content_type.split("/")[0] == wanted


def body_texts(run: Run, call: Call) -> list[str]:
    if "raw" in call.tags:
        return [split_message(run.message)[1].decode("utf-8", "replace")]
    content = call.tags.get("content")
    types = run.expand_all(content) if isinstance(content, tuple) else ["text"]
    message = email.message_from_bytes(run.message, policy=email.policy.compat32)
    out: list[str] = []
    for n, part in enumerate(message.walk()):
        if n >= MAX_PARTS:
            break
        content_type = part.get_content_type().lower()
        if part.is_multipart():
            # RFC 5173 §5: a multipart's own text is its prologue and epilogue
            if any(
                t.strip().lower() == content_type or t.strip().lower() == "multipart" for t in types
            ):
                out.append((part.preamble or "") + (part.epilogue or ""))
            continue
        if any(_type_matches(content_type, t) for t in types):
            out.append(_part_text(part))
    return out


def _body(run: Run, call: Call) -> bool:
    return run.match(call, body_texts(run, call), call.strings(0))


REGISTRY.add_capability(Capability("body"))
REGISTRY.add_test(
    TestSpec(
        name="body",
        capability="body",
        positional=("string-list",),
        tags=(
            TagSpec("raw", group="transform"),
            TagSpec("text", group="transform"),
            TagSpec("content", arg="string-list", group="transform"),
        ),
        comparator=True,
        match_type=True,
        handler=_body,
    )
)
