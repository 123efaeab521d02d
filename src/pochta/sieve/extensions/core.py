"""RFC 5228 itself: control (``if``/``elsif``/``else``, ``stop``; ``require`` is the
compiler's), the tests ``address``, ``allof``, ``anyof``, ``exists``, ``false``, ``true``,
``header``, ``not``, ``size`` and the actions ``keep``, ``discard``, ``redirect`` (with
:copy, RFC 3894), and the ``envelope`` extension (RFC 5228 §5.4)."""

from __future__ import annotations

import re

from pochta.mime.addresses import parse_address_list
from pochta.sieve import comparators as _comparators  # noqa: F401 - registers comparators
from pochta.sieve import match as _match  # noqa: F401 - registers match types
from pochta.sieve.actions import Discard, Keep, Redirect
from pochta.sieve.address import header_addresses, parse_one
from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.interpreter import Run, StopScript
from pochta.sieve.registry import (
    REGISTRY,
    Capability,
    CommandSpec,
    ParsedAddress,
    TagSpec,
    TestSpec,
)

__all__ = ["extract_parts", "redirect_address"]

# RFC 5322 §3.2.3 dot-atom-text: a local part that needs no quotes
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\x80-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_COMMENT = re.compile(r"\([^()]*\)")  # RFC 5322 §3.2.2, unnested
# the local part of a bare addr-spec: one quoted string, or words joined by dots (CFWS may
# surround the dots and the whole, RFC 5322 §3.2.3/§4.4 obs-local-part)
_ADDR_SPEC_WORDS = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"|[^\s".]*(?:\s*\.\s*[^\s".]*)*)\s*\Z')


# -- control -----------------------------------------------------------------------------


def _if(run: Run, call: Call) -> None:
    taken = run.test(call.tests[0])
    if taken:
        run.run_block(call.block or ())
    run.branch_taken = taken


def _elsif(run: Run, call: Call) -> None:
    if run.branch_taken:
        return
    _if(run, call)


def _else(run: Run, call: Call) -> None:
    if not run.branch_taken:
        run.run_block(call.block or ())
    run.branch_taken = True


def _stop(run: Run, call: Call) -> None:
    raise StopScript


def _require(run: Run, call: Call) -> None:  # pragma: no cover - the compiler handles it
    return None


# -- tests -------------------------------------------------------------------------------


def _true(run: Run, call: Call) -> bool:
    return True


def _false(run: Run, call: Call) -> bool:
    return False


def _not(run: Run, call: Call) -> bool:
    return not run.test(call.tests[0])


def _allof(run: Run, call: Call) -> bool:
    return all(run.test(t) for t in call.tests)  # short-circuits, RFC 5228 §5.2


def _anyof(run: Run, call: Call) -> bool:
    return any(run.test(t) for t in call.tests)


def header_names(run: Run, call: Call, index: int = 0) -> list[str]:
    """The header names of argument ``index``; an invalid name (RFC 5322 §3.6.8) matches
    no header, as in Pigeonhole."""
    return run.expand_all(call.strings(index))


def _exists(run: Run, call: Call) -> bool:
    return all(run.raw_header_values(n) for n in header_names(run, call))


def _header(run: Run, call: Call) -> bool:
    values: list[str] = []
    for name in header_names(run, call):
        values.extend(run.header_values(name))
    return run.match(call, values, call.strings(1))


def extract_parts(run: Run, call: Call, addresses: list[ParsedAddress]) -> list[str]:
    """The address part the call names (:all by default) of each address that has it."""
    part = call.address_part or run.registry.address_parts["all"]
    out: list[str] = []
    for a in addresses:
        value = part.extract(run, a)
        if value is not None:
            out.append(value)
    return out


# RFC 5228 §5.1: "Implementations MUST restrict the address test to headers that contain
# addresses, but MUST include at least From, To, Cc, Bcc, Sender, Resent-From, Resent-To, and
# SHOULD include any other header that utilizes an 'address-list' structured header body":
# RFC 5322 §3.6.2, §3.6.3, §3.6.6, and the address headers of RFC 2369/3798/4021 and of
# mailing-list and mail-transport software in common use.
ADDRESS_HEADERS = frozenset(
    {
        "from", "sender", "reply-to", "to", "cc", "bcc",
        "resent-from", "resent-sender", "resent-reply-to", "resent-to", "resent-cc",
        "resent-bcc", "return-path", "delivered-to", "envelope-to", "x-envelope-to",
        "x-original-to", "x-original-from", "original-from", "original-sender",
        "original-recipient", "apparently-to", "errors-to", "x-sender",
        "disposition-notification-to", "return-receipt-to", "read-receipt-to",
        "x-confirm-reading-to", "return-receipt-requested",
        "registered-mail-reply-requested-by", "mail-followup-to", "mail-reply-to",
        "x-complaints-to", "x-report-abuse-to", "x-beenthere", "x-admin",
        "for-approval", "for-handling", "for-comment", "abuse-reports-to", "approved",
    }
)  # fmt: skip
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 §3.6.8


def _address(run: Run, call: Call) -> bool:
    addresses: list[ParsedAddress] = []
    for name in header_names(run, call):
        if name.lower() not in ADDRESS_HEADERS:
            continue  # RFC 5228 §5.1: a header without addresses (a name from a variable)
        for raw in run.raw_header_values(name):
            addresses.extend(header_addresses(raw))
    return run.match(call, extract_parts(run, call, addresses), call.strings(1))


def _size(run: Run, call: Call) -> bool:
    limit = call.number(0)
    size = run.size()
    return size > limit if "over" in call.tags else size < limit  # RFC 5228 §5.9


_ENVELOPE_PARTS = {"from", "to", "auth"}


def _envelope(run: Run, call: Call) -> bool:
    env = run.context.envelope
    addresses: list[ParsedAddress] = []
    for part in run.expand_all(call.strings(0)):
        part = part.lower()
        if part == "from" and env.sender.strip() in ("", "<>"):
            # RFC 5228 §5.4: the null reverse-path is the empty string
            addresses.append(ParsedAddress("", "", ""))
            continue
        raw = {"from": env.sender, "to": env.recipient, "auth": env.auth_user}.get(part, "")
        parsed = parse_one(raw) if raw else None
        if parsed is not None:  # a path that does not parse has no parts to match
            addresses.append(parsed)
    return run.match(call, extract_parts(run, call, addresses), call.strings(1))


def _check_envelope(call: Call, state: CompileState) -> Call | None:
    for part in call.strings(0):
        if "${" not in part and part.lower() not in _ENVELOPE_PARTS:
            raise call.error(f'unknown envelope part \'{part}\': use "from", "to" or "auth"')
    return None


# -- actions -----------------------------------------------------------------------------


def _keep(run: Run, call: Call) -> None:
    run.add_action(Keep(flags=run.flags_for(call), content=run.content()))


def _discard(run: Run, call: Call) -> None:
    run.add_action(Discard())


def _check_address(call: Call, state: CompileState) -> Call | None:
    for name in call.strings(0):
        if "${" in name and "variables" in state.required:
            continue  # known when the script runs
        if _FIELD_NAME.match(name) and name.lower() not in ADDRESS_HEADERS:
            # RFC 5228 §5.1: the address test is restricted to headers with addresses (a
            # name that is no header name at all matches nothing, as in the header test)
            raise call.error(
                f"test 'address': header '{name}' holds no addresses (RFC 5228 §5.1); "
                "use header :contains for it, or an address header (From, To, Cc, Bcc, "
                "Sender, Reply-To, Resent-*, ...)"
            )
    return None


def redirect_address(text: str) -> str | None:
    """RFC 5228 §4.2: the one RFC 5322 address ``text`` names (an addr-spec, or a
    name-addr like ``"Name" <a@b.example>``), as local@domain; None when it names none."""
    if any(ord(c) < 32 for c in text):
        return None
    if "<" not in text and not _ADDR_SPEC_WORDS.match(_COMMENT.sub(" ", text.rpartition("@")[0])):
        # RFC 5322 §3.4.1: a bare addr-spec's local part is a dot-atom or a quoted string;
        # words side by side ("Stephan Bosch error@example.org") are a phrase without its
        # <addr-spec>, not an address (the lenient parser would run them together)
        return None
    try:
        found = [a for a in parse_address_list(text) if not (a.is_group_start or a.is_group_end)]
    except ValueError:
        return None
    if len(found) != 1:
        return None
    (a,) = found
    if a.invalid or not a.mailbox or not a.domain or a.route:
        return None
    local = a.mailbox
    if not _DOT_ATOM.match(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{local}@{a.domain}"


def _redirect(run: Run, call: Call) -> None:
    text = run.expand(call.string(0))
    address = redirect_address(text)
    if address is None:
        raise SieveRuntimeError(f"redirect to an invalid address: {text!r}")
    run.add_action(
        Redirect(address=address, content=run.content()), cancels_keep="copy" not in call.tags
    )


def _check_redirect(call: Call, state: CompileState) -> Call | None:
    address = call.string(0)
    if "${" in address and "variables" in state.required:
        return None
    if redirect_address(address) is None:
        # RFC 5228 §4.2: an invalid address is an error
        raise call.error(f"redirect needs a valid address (local@domain), not '{address}'")
    return None


REGISTRY.add_capability(Capability("envelope"))
REGISTRY.add_capability(Capability("copy"))
for _command in (
    CommandSpec(name="require", positional=("string-list",), handler=_require),
    CommandSpec(name="if", tests="test", block="required", handler=_if),
    CommandSpec(name="elsif", tests="test", block="required", handler=_elsif),
    CommandSpec(name="else", block="required", handler=_else),
    CommandSpec(name="stop", handler=_stop),
    CommandSpec(name="keep", handler=_keep),
    CommandSpec(name="discard", handler=_discard),
    CommandSpec(
        name="redirect", positional=("string",), handler=_redirect, validate=_check_redirect
    ),
):
    REGISTRY.add_command(_command)
for _test in (
    TestSpec(name="true", handler=_true),
    TestSpec(name="false", handler=_false),
    TestSpec(name="not", tests="test", handler=_not),
    TestSpec(name="allof", tests="test-list", handler=_allof),
    TestSpec(name="anyof", tests="test-list", handler=_anyof),
    TestSpec(
        name="exists",
        positional=("string-list",),
        handler=_exists,
    ),
    TestSpec(
        name="header",
        positional=("string-list", "string-list"),
        comparator=True,
        match_type=True,
        handler=_header,
    ),
    TestSpec(
        name="address",
        positional=("string-list", "string-list"),
        comparator=True,
        match_type=True,
        address_part=True,
        handler=_address,
        validate=_check_address,
    ),
    TestSpec(
        name="envelope",
        capability="envelope",
        positional=("string-list", "string-list"),
        comparator=True,
        match_type=True,
        address_part=True,
        handler=_envelope,
        validate=_check_envelope,
    ),
    TestSpec(
        name="size",
        positional=("number",),
        tags=(TagSpec("over", group="size"), TagSpec("under", group="size")),
        required_groups=("size",),
        handler=_size,
    ),
):
    REGISTRY.add_test(_test)
REGISTRY.add_tag("command", "redirect", TagSpec("copy", capability="copy"))  # RFC 3894
