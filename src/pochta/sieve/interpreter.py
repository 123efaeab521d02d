"""The Sieve interpreter: runs compiled ``Call`` trees against one message.

``Run`` is the state of one run that every handler gets: the message (``message``, edited
by ``set_message``), its headers (``header_values``), the actions so far (``add_action``
applies RFC 5228 §2.10.3 duplicates, RFC 5429 §2.1.3 conflicts and the limits), the
variables (``expand``, RFC 5229), the IMAP flags (``flags``, RFC 5232) and the
extensions' own state (``state``). ``StopScript`` ends the run (``stop``).
"""

from __future__ import annotations

import email.header
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pochta.sieve.actions import (
    Action,
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from pochta.sieve.compiler import Call
from pochta.sieve.context import MessageContext
from pochta.sieve.errors import SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.registry import REGISTRY, Registry

__all__ = [
    "MAX_VARIABLE_BYTES",
    "Header",
    "Run",
    "StopScript",
    "split_flags",
    "split_message",
]

MAX_VARIABLE_BYTES = 4000  # RFC 5229 §6 lets us limit a value; as Pigeonhole, 4000 octets
_VAR_REF = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 §3.6.8 printable US-ASCII but ':'
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class StopScript(Exception):
    """``stop`` (RFC 5228 §3.3): end the run here."""


@dataclass(frozen=True, slots=True)
class Header:
    name: str  # as written
    raw: str  # the value, unfolded (CRLF removed), leading and trailing white space cut


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """The header block and the body (without the blank line between them)."""
    if message.startswith(b"\r\n"):
        return b"", message[2:]
    if message.startswith(b"\n"):
        return b"", message[1:]
    crlf = message.find(b"\r\n\r\n")
    lf = message.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return message[: lf + 1], message[lf + 2 :]
    if crlf >= 0:
        return message[: crlf + 2], message[crlf + 4 :]
    return message, b""


def parse_headers(message: bytes) -> list[Header]:
    head, _ = split_message(message)
    text = head.decode("utf-8", "replace")
    fields: list[list[str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and fields:
            fields[-1].append(line)  # RFC 5322 §2.2.3 unfolding: the CRLF goes
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            continue
        fields.append([name.rstrip(" \t"), value])
    return [Header(f[0], "".join(f[1:]).strip(" \t")) for f in fields]


def decode_words(value: str) -> str:
    """RFC 2047 encoded words decoded (RFC 5228 §2.7.2: tests see decoded header values)."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


class Run:
    def __init__(
        self,
        context: MessageContext,
        limits: SieveLimits,
        *,
        registry: Registry = REGISTRY,
    ) -> None:
        self.context = context
        self.limits = limits
        self.registry = registry
        self.message = context.message
        self.edited = False  # set_message was called (editheader)
        self.actions: list[Action] = []
        self.implicit_keep = True
        self.flags: list[str] = sorted(context.flags)  # RFC 5232 §3 the internal variable
        self.variables: dict[str, str] = {}  # RFC 5229, names lower-case
        self.match_values: list[str] = []  # ${0}, ${1}, ... of the last :matches/:regex
        self.use_variables = False  # the running script requires "variables"
        self.warnings: list[str] = []
        self.duplicate_ids: list[tuple[str, int]] = []
        self.state: dict[str, Any] = {}  # extensions' per-run state
        self.branch_taken = False  # the last if/elsif ran its block
        self.redirects = 0
        self.match_steps = 0  # charged by ``match`` against limits.max_match_steps
        self.started = context.clock()
        self._headers: list[Header] | None = None

    # -- running -----------------------------------------------------------------------

    def run_block(self, calls: Sequence[Call]) -> None:
        for call in calls:
            self.check_time()
            call.spec.handler(self, call)

    def test(self, call: Call) -> bool:
        return bool(call.spec.handler(self, call))

    def check_time(self) -> None:
        if self.context.clock() - self.started > self.limits.max_run_seconds:
            raise SieveRuntimeError(
                f"the script ran longer than {self.limits.max_run_seconds} seconds "
                "([sieve] max_run_seconds)"
            )

    def result(self) -> SieveResult:
        return SieveResult(
            actions=tuple(self.actions),
            implicit_keep=self.implicit_keep,
            keep_flags=frozenset(self.flags),
            final_content=self.message if self.edited else None,
            duplicate_ids=tuple(self.duplicate_ids),
            warnings=tuple(self.warnings),
        )

    # -- the message -------------------------------------------------------------------

    def set_message(self, message: bytes) -> None:
        """Replace the message (editheader); later tests and actions see the new one."""
        self.message = message
        self.edited = True
        self._headers = None

    def size(self) -> int:
        """RFC 5228 §5.9: the message's size in octets, counted with CRLF line ends (as
        it is sent, whatever the store keeps)."""
        return len(self.message) + self.message.count(b"\n") - self.message.count(b"\r\n")

    def content(self) -> bytes | None:
        """What an action carries: the edited message, or None for the one received."""
        return self.message if self.edited else None

    def headers(self) -> list[Header]:
        if self._headers is None:
            self._headers = parse_headers(self.message)
        return self._headers

    def raw_header_values(self, name: str) -> list[str]:
        if not _FIELD_NAME.match(name):
            return []  # RFC 5322 §3.6.8: not a field name, so no header has it
        name = name.lower()
        return [h.raw for h in self.headers() if h.name.lower() == name]

    def header_values(self, name: str) -> list[str]:
        return [decode_words(v) for v in self.raw_header_values(name)]

    # -- actions -----------------------------------------------------------------------

    def add_action(self, action: Action, *, cancels_keep: bool = True) -> None:
        """Take an action: RFC 5228 §2.10.3 drops a repeated one (fileinto the same mailbox,
        redirect to the same address, keep twice); RFC 5429 §2.1.3 forbids reject with an
        action that delivers or answers; ``[sieve] max_actions``/``max_redirects``."""
        delivering = (Keep, FileInto, Redirect, Vacation)
        if isinstance(action, Reject):
            if any(isinstance(a, Reject) for a in self.actions):
                raise SieveRuntimeError("the script rejects the message twice")
            if any(isinstance(a, delivering) for a in self.actions):
                raise SieveRuntimeError(
                    "reject cannot be combined with keep, fileinto, redirect or vacation "
                    "(RFC 5429 §2.1.3)"
                )
        elif isinstance(action, delivering) and any(isinstance(a, Reject) for a in self.actions):
            raise SieveRuntimeError(
                "reject cannot be combined with keep, fileinto, redirect or vacation "
                "(RFC 5429 §2.1.3)"
            )
        for n, earlier in enumerate(self.actions):
            merged = _same(earlier, action, self.context.default_mailbox)
            if merged is not None:
                self.actions[n] = merged
                if cancels_keep:
                    self.implicit_keep = False
                return
        if len(self.actions) >= self.limits.max_actions:
            raise SieveRuntimeError(
                f"the script takes more than {self.limits.max_actions} actions "
                "([sieve] max_actions)"
            )
        if isinstance(action, Redirect):
            if self.redirects >= self.limits.max_redirects:
                raise SieveRuntimeError(
                    f"the script redirects more than {self.limits.max_redirects} times "
                    "([sieve] max_redirects)"
                )
            self.redirects += 1
        self.actions.append(action)
        if cancels_keep:
            self.implicit_keep = False

    def flags_for(self, call: Call) -> frozenset[str]:
        """RFC 5232 §5: the ``:flags`` argument, else the internal variable's flags."""
        given = call.tags.get("flags")
        if isinstance(given, tuple):
            return frozenset(split_flags(self.expand_all(given)))
        return frozenset(self.flags)

    # -- strings and matching -----------------------------------------------------------

    def expand(self, text: str) -> str:
        """RFC 5229 §3: ``${name}`` replaced when the script uses variables."""
        if not self.use_variables or "${" not in text:
            return text
        return _VAR_REF.sub(self._reference, text)

    def expand_all(self, texts: Iterable[str]) -> list[str]:
        return [self.expand(t) for t in texts]

    def _reference(self, m: re.Match[str]) -> str:
        ref = m.group(1)
        value = self.variable(ref)
        return m.group(0) if value is None else value

    def variable(self, ref: str) -> str | None:
        """A variable's value; "" for one never set; None when ``ref`` is not a variable
        reference (then the text stays as written, RFC 5229 §3)."""
        if ref.isdigit():
            n = int(ref)
            return self.match_values[n] if n < len(self.match_values) else ""
        parts = ref.split(".")
        if not all(_IDENT.match(p) for p in parts):
            return None
        if len(parts) == 1:
            return self.variables.get(ref.lower(), "")
        namespace = self.registry.namespaces.get(parts[0].lower())
        if namespace is None:
            return None
        return namespace.get(self, ".".join(parts[1:]))

    def set_variable(self, name: str, value: str) -> None:
        if len(value) * 4 > MAX_VARIABLE_BYTES:
            data = value.encode("utf-8", "surrogateescape")
            if len(data) > MAX_VARIABLE_BYTES:
                # cut at a character boundary (RFC 5229 §6: the value is truncated)
                value = data[:MAX_VARIABLE_BYTES].decode("utf-8", "ignore")
        parts = name.split(".")
        if len(parts) > 1:
            namespace = self.registry.namespaces.get(parts[0].lower())
            if namespace is None or namespace.set is None:
                raise SieveRuntimeError(f"variable '{name}' cannot be set")
            namespace.set(self, ".".join(parts[1:]), value)
            return
        self.variables[name.lower()] = value

    def match(
        self,
        call: Call,
        values: Sequence[str],
        keys: Iterable[str],
        *,
        match_values: bool = True,
    ) -> bool:
        """The values against the keys with the call's comparator and match type; sets the
        match variables on success (RFC 5229 §3.2) unless ``match_values`` is False."""
        comparator = call.comparator or self.registry.comparators["i;ascii-casemap"]
        match_type = call.match_type or self.registry.match_types["is"]
        keys = list(keys)
        expanded = self.expand_all(keys)
        if match_type.validate_key is not None:
            # a key checked at compile time unless variables made it: check it now, and say
            # why a bad one (a regex from a variable) matches nothing
            good: list[str] = []
            for raw, key in zip(keys, expanded, strict=True):
                problem = match_type.validate_key(key, comparator) if "${" in raw else None
                if problem:
                    self.warnings.append(
                        f"line {call.line}: key {key!r} matches nothing: {problem}"
                    )
                    continue
                good.append(key)
            expanded = good
        if match_type.counts:
            count = str(len(values))  # RFC 5231 §4.1
            return any(match_type.match(comparator, call.relation, count, k)[0] for k in expanded)
        cost = match_type.cost or _linear_cost
        pairs = 0
        for value in values:
            for key in expanded:
                # The values (headers, body parts, variables) times the keys: each match's
                # work is charged before it runs, and the clock is read every few matches,
                # so no single test runs past [sieve] max_run_seconds or max_match_steps.
                self.match_steps += cost(value, key)
                if self.match_steps > self.limits.max_match_steps:
                    raise SieveRuntimeError(
                        f"the script's tests compare more than {self.limits.max_match_steps} "
                        f"characters (at ':{match_type.name}' on line {call.line}): match "
                        "fewer headers or keys, or a smaller part of the message"
                    )
                pairs += 1
                if pairs % _CLOCK_EVERY == 0:
                    self.check_time()
                ok, captures = match_type.match(comparator, call.relation, value, key)
                if ok:
                    if captures is not None and self.use_variables and match_values:
                        self.match_values = captures
                    return True
        return False


_CLOCK_EVERY = 64  # matches between two readings of the clock in one test


def _linear_cost(value: str, key: str) -> int:
    return len(value) + len(key) + 1


def split_flags(values: Iterable[str]) -> list[str]:
    """RFC 5232 §3: flags are separated by spaces; each kept once, in order."""
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for flag in value.split():
            key = flag.lower()  # RFC 3501 flags are case-insensitive
            if key not in seen:
                seen.add(key)
                out.append(flag)
    return out


def _same(earlier: Action, action: Action, default_mailbox: str) -> Action | None:
    """``earlier`` merged with ``action`` when RFC 5228 §2.10.3 makes them one action;
    ``keep`` and ``fileinto`` the default mailbox are one too (RFC 5228 §4.3)."""

    def is_keep(a: Action) -> bool:
        return isinstance(a, Keep) or (
            isinstance(a, FileInto)
            and not a.create
            and a.mailbox.upper() == default_mailbox.upper()
        )

    if is_keep(earlier) and is_keep(action):
        assert isinstance(earlier, Keep | FileInto)
        assert isinstance(action, Keep | FileInto)
        if isinstance(earlier, FileInto):
            return FileInto(
                mailbox=earlier.mailbox,
                flags=earlier.flags | action.flags,
                content=action.content,
            )
        return Keep(flags=earlier.flags | action.flags, content=action.content)
    if isinstance(earlier, FileInto) and isinstance(action, FileInto):
        if earlier.mailbox == action.mailbox:
            return FileInto(
                mailbox=action.mailbox,
                flags=earlier.flags | action.flags,
                create=earlier.create or action.create,
                content=action.content,
            )
        return None
    if isinstance(earlier, Redirect) and isinstance(action, Redirect):
        if _address_key(earlier.address) == _address_key(action.address):
            return earlier
        return None
    if isinstance(earlier, Discard) and isinstance(action, Discard):
        return earlier
    return None


def _address_key(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain.lower()}"
