"""What every spam check takes and gives (Rspamd's symbols, as small named callables).

A check is an async callable with a ``name``: it reads one :class:`ScanInput` and returns
the symbols it found (:class:`~pochta.cleanup.verdict.Symbol`: a name such as ``BAYES_SPAM``
or ``RBL_ZEN_SBL``, a score, positive for spammier, a description and options such as the
listed domain). A check that finds nothing returns an empty sequence. The scanner
(``spam/scanner.py``) runs the checks of the mail system concurrently, each under a time
limit, applies the configured score overrides and adds the symbols to the verdict; a check
that raises or runs out of time is logged and gives no symbols (the message is scanned
without it, never refused because a check broke).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pochta.cleanup.verdict import Symbol, Verdict
from pochta.spam.message import ScanMessage

__all__ = ["Check", "ScanInput", "Symbol"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanInput:
    """One message and what the receiving side knows of it."""

    message: ScanMessage
    sender: str  # envelope MAIL FROM (after canonical mapping), "" for the null sender
    recipients: Sequence[str]  # envelope recipients, as cleanup leaves them
    client_ip: str = ""  # "" for mail made on this host
    client_hostname: str = ""  # forward-confirmed reverse DNS name, "" when unknown
    helo: str = ""
    auth_user: str = ""  # the SASL login, "" when not authenticated
    from_mx: bool = False  # from the smtp (MX) listener
    queue_id: str = ""
    verdict: Verdict = field(default_factory=Verdict)  # the filters before: auth results


class Check(Protocol):
    """One check: ``name`` identifies it in logs and settings.

    A check whose ``__call__`` never waits (no DNS, no thread: the heuristics, GTUBE, the
    lists) says so with a class attribute ``waits = False``; the scanner then calls it in
    place, without a task or a time limit (a time limit stops only code that awaits).
    Without the attribute a check is taken to wait."""

    name: str

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]: ...
