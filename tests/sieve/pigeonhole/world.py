"""The testsuite's global state (Pigeonhole README, "How a harness runs one .svtest file" §3):
the current message and its envelope, the fake mail store, the captured SMTP messages and
the Dovecot settings, all of which persist across the ``test`` blocks of one file.

Nothing here knows the interpreter; ``testsuite`` binds it to the commands.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32

from pochta.mime.addresses import parse_address_list
from pochta.sieve.context import Envelope
from pochta.sieve.limits import SieveLimits

__all__ = [
    "DEFAULT_MESSAGE",
    "TESTSUITE_USER",
    "CapturedMessage",
    "Config",
    "MailStore",
    "StoredMessage",
    "UnmappedSetting",
    "envelope_for",
]

# README §3: the default current message.
DEFAULT_MESSAGE = (
    b"From: sender@example.com\r\nTo: recipient@example.org\r\nSubject: Frop!\r\n\r\nFriep!\r\n"
)
TESTSUITE_USER = "testsuite-mail-user@example.org"
_DEFAULT_RCPT = "recipient@example.com"
_DEFAULT_SENDER = "sender@example.com"


def crlf(text: str | bytes) -> bytes:
    """Message text as the store keeps it: CRLF line ends (Sieve text: strings have LF)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return re.sub(rb"\r?\n", b"\r\n", data)


def _first_address(message: bytes, names: tuple[str, ...]) -> str | None:
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    for name in names:
        for value in headers.get_all(name) or []:
            for addr in parse_address_list(str(value)):
                if addr.domain is None:  # a group's start or end
                    continue
                if addr.mailbox is None:
                    continue
                return f"{addr.mailbox}@{addr.domain}" if addr.domain else addr.mailbox
    return None


def envelope_for(message: bytes) -> Envelope:
    """README §3 "Envelope": ``test_set "message"`` also resets the envelope. RCPT TO is the
    first address in Envelope-To, then To, else recipient@example.com; MAIL FROM is from
    Return-path, then Sender, then From, else sender@example.com; the original recipient is
    RCPT TO."""
    rcpt = _first_address(message, ("Envelope-To", "To")) or _DEFAULT_RCPT
    sender = _first_address(message, ("Return-path", "Sender", "From"))
    if sender is None:
        sender = _DEFAULT_SENDER
    return Envelope(sender=sender, recipient=rcpt, original_recipient=rcpt)


def set_envelope_part(envelope: Envelope, part: str, value: str) -> Envelope:
    """``test_set "envelope.<part>"`` (from, to, orig_to, auth)."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    fields = {
        "from": "sender",
        "to": "recipient",
        "orig_to": "original_recipient",
        "auth": "auth_user",
    }
    if part not in fields:
        raise KeyError(f"test_set: unknown envelope part {part!r} (from, to, orig_to, auth)")
    return dataclasses.replace(envelope, **{fields[part]: value})


@dataclass(frozen=True, slots=True)
class StoredMessage:
    content: bytes
    flags: frozenset[str] = frozenset()


@dataclass(slots=True)
class MailStore:
    """README §3 "Mail store": one namespace, separator ``.``, INBOX always there; other
    mailboxes exist after ``test_mailbox_create`` or ``fileinto :create``."""

    separator: str = "."
    mailboxes: dict[str, list[StoredMessage]] = field(default_factory=lambda: {"INBOX": []})

    @staticmethod
    def _key(name: str) -> str:
        # RFC 3501 §5.1: INBOX is case-insensitive, every other name is case-sensitive.
        head, sep, rest = name.partition(".")
        return "INBOX" + sep + rest if head.upper() == "INBOX" else name

    def exists(self, name: str) -> bool:
        return self._key(name) in self.mailboxes

    def create(self, name: str) -> None:
        self.mailboxes.setdefault(self._key(name), [])

    def append(self, name: str, content: bytes, flags: frozenset[str] = frozenset()) -> None:
        key = self._key(name)
        if key not in self.mailboxes:
            raise LookupError(f"mailbox {name!r} does not exist")
        self.mailboxes[key].append(StoredMessage(content, flags))

    def get(self, name: str, index: int) -> StoredMessage | None:
        messages = self.mailboxes.get(self._key(name), [])
        return messages[index] if 0 <= index < len(messages) else None


@dataclass(frozen=True, slots=True)
class CapturedMessage:
    """One message the result sent (redirect, vacation, reject notice), as SMTP would."""

    sender: str  # MAIL FROM, "" for <>
    recipient: str
    content: bytes


class UnmappedSetting(Exception):
    """A Dovecot setting this harness cannot map onto pochta: the blocks that depend on it
    are skipped with this reason."""


def _seconds(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)?\s*", value)
    if not m:
        raise ValueError(f"not a Dovecot time: {value!r}")
    unit = {"ms": 0.001, None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(m.group(1)) * unit


def _whole_seconds(value: str) -> int:
    return int(_seconds(value))


def _int(value: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", value)
    if not m:
        raise ValueError(f"not a Dovecot number/size: {value!r}")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


# Dovecot setting -> the SieveLimits field it maps to, and how to read its value.
LIMIT_SETTINGS: dict[str, tuple[str, object]] = {
    "sieve_max_redirects": ("max_redirects", _int),
    "sieve_max_actions": ("max_actions", _int),
    "sieve_max_script_size": ("max_script_bytes", _int),
    "sieve_include_max_includes": ("max_includes", _int),
    "sieve_include_max_nesting_depth": ("max_include_depth", _int),
    "sieve_max_cpu_time": ("max_run_seconds", _seconds),
    "sieve_vacation_min_period": ("vacation_min_period_seconds", _whole_seconds),
    "sieve_vacation_max_period": ("vacation_max_period_seconds", _whole_seconds),
    "sieve_vacation_default_period": ("vacation_default_period_seconds", _whole_seconds),
    "sieve_duplicate_default_period": ("duplicate_default_period_seconds", _whole_seconds),
}


# Dovecot settings the harness reads itself (not SieveLimits fields): the spamtest and
# virustest header configuration (``verdicts.py`` turns it into SpamInfo/VirusInfo) and the
# recipient delimiter (MessageContext.recipient_delimiter). ``.../text_value/N`` keys are
# Dovecot's string-list entries, one per N.
_READ_SETTINGS = ("recipient_delimiter",)
_READ_PREFIXES = (
    "sieve_spamtest_status_header",
    "sieve_spamtest_status_type",
    "sieve_spamtest_score_max_header",
    "sieve_spamtest_score_max_value",
    "sieve_spamtest_text_value/",
    "sieve_virustest_status_header",
    "sieve_virustest_status_type",
    "sieve_virustest_score_max_header",
    "sieve_virustest_score_max_value",
    "sieve_virustest_text_value/",
)


def _mapped(name: str) -> bool:
    if name in LIMIT_SETTINGS or name in _READ_SETTINGS:
        return True
    return any(name == p or (p.endswith("/") and name.startswith(p)) for p in _READ_PREFIXES)


@dataclass(slots=True)
class Config:
    """``test_config_set`` stages a setting, ``test_config_reload`` puts the staged ones in
    force. The settings of ``LIMIT_SETTINGS`` become ``limits``; the spamtest/virustest
    ones and ``recipient_delimiter`` stay in ``active`` for whoever reads them; any other
    raises UnmappedSetting when it is set."""

    base: SieveLimits = field(default_factory=SieveLimits)
    staged: dict[str, str | None] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    limits: SieveLimits = field(default_factory=SieveLimits)

    def set(self, name: str, value: str | None) -> None:
        if not _mapped(name):
            raise UnmappedSetting(f"Dovecot setting {name} has no pochta equivalent here")
        self.staged[name] = value

    def reload(self) -> None:
        for name, value in self.staged.items():
            if value is None:
                self.active.pop(name, None)
            else:
                self.active[name] = value
        self.staged.clear()
        changes: dict[str, object] = {}
        for name, value in self.active.items():
            if name not in LIMIT_SETTINGS:
                continue
            attr, parse = LIMIT_SETTINGS[name]
            changes[attr] = parse(value)  # type: ignore[operator]
        self.limits = dataclasses.replace(self.base, **changes)  # type: ignore[arg-type]

    @property
    def recipient_delimiter(self) -> str:
        """Dovecot's ``recipient_delimiter`` (default "+"), pochta's
        ``directory.recipient_delimiter``: each character is a separator."""
        return self.active.get("recipient_delimiter", "+")
