"""RFC 7352 ``duplicate``: has this user had a message with this id before?

The id is the Message-ID (RFC 7352 §3.1), or the value of the ``:header`` field, or the
``:uniqueid`` string, kept apart per ``:handle`` (§3.2). The test reads
``context.duplicates.seen(id)`` and records ``(id, period)`` in
``SieveResult.duplicate_ids`` for the delivery side, which stores them once the message is
delivered (§3: only a delivered message counts) with the expiry ``now + period``:

- not seen before: recorded, the test is false;
- seen, without ``:last``: the test is true and nothing is recorded, so the period keeps
  running from the first message (§3.4);
- seen, with ``:last``: the test is true and the id is recorded again, so the period runs
  from this message (§3.4 ``:last``).

A message without the field the id comes from is never a duplicate and records nothing.
The id handed to the tracker is a SHA-256 digest of the handle and the value (§3.1 lets the
implementation store a digest), so a stored id leaks no header text and has one size.
"""

from __future__ import annotations

import hashlib

from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.extensions.headeredit import valid_field_name
from pochta.sieve.interpreter import Run
from pochta.sieve.registry import REGISTRY, Capability, TagSpec, TestSpec

__all__ = ["duplicate_id"]


def duplicate_id(handle: str, value: str) -> str:
    """The tracker's key for ``value`` under ``handle`` (RFC 7352 §3.2: handles are apart)."""
    digest = hashlib.sha256()
    digest.update(handle.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(value.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _value(run: Run, call: Call) -> str | None:
    unique = call.tags.get("uniqueid")
    if isinstance(unique, str):
        return run.expand(unique)
    header = call.tags.get("header")
    name = run.expand(header) if isinstance(header, str) else "message-id"
    values = run.raw_header_values(name)
    if not values:
        return None
    # RFC 7352 §3.1: the first field's value; its surrounding white space does not count.
    value = " ".join(values[0].split())
    return value or None


def _duplicate(run: Run, call: Call) -> bool:
    value = _value(run, call)
    if value is None:
        return False
    handle = call.tags.get("handle")
    key = duplicate_id(run.expand(handle) if isinstance(handle, str) else "", value)
    seconds = call.tags.get("seconds")
    period = seconds if isinstance(seconds, int) else run.limits.duplicate_default_period_seconds
    tracker = run.context.duplicates
    seen = tracker.seen(key) if tracker is not None else False
    if not seen or "last" in call.tags:
        if all(key != k for k, _ in run.duplicate_ids):
            run.duplicate_ids.append((key, period))
        else:  # the same id twice in one run: the later period wins
            run.duplicate_ids[:] = [(k, period if k == key else p) for k, p in run.duplicate_ids]
    return seen


def _check(call: Call, state: CompileState) -> Call | None:
    header = call.tags.get("header")
    if isinstance(header, str) and "${" not in header and not valid_field_name(header):
        raise call.error(f"':header' needs a header field name, not '{header}'")
    return None


REGISTRY.add_capability(Capability("duplicate"))
REGISTRY.add_test(
    TestSpec(
        name="duplicate",
        capability="duplicate",
        tags=(
            TagSpec("handle", arg="string"),
            # RFC 7352 §3.1: :header and :uniqueid exclude each other
            TagSpec("header", arg="string", group="id"),
            TagSpec("uniqueid", arg="string", group="id"),
            TagSpec("seconds", arg="number"),
            TagSpec("last"),
        ),
        handler=_duplicate,
        validate=_check,
    )
)
