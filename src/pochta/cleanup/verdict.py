"""The verdict on one message: what the filters found, and what to do with it.

Cleanup's filters (mail authentication, spam scoring, later Sieve) write here instead of only
into header fields, so a later filter, delivery and ``pochta queue show`` read the results
without parsing headers again. The verdict is stored with the envelope (queue/envelope.py).

- :class:`AuthResult` has the shape of one RFC 8601 §2.2 ``resinfo``: a method (``spf``,
  ``dkim``, ``dmarc``, ``arc``), its result (``pass``, ``fail``, ``softfail``, ``neutral``,
  ``none``, ``temperror``, ``permerror``, ``policy``), an optional reason (§2.2
  ``reasonspec``) and the ``ptype.property = value`` pairs (§2.3: ``smtp.mailfrom``,
  ``header.d``, ``header.s``, ``header.from``, ``header.b``). DKIM gives one per signature.
- :class:`Symbol` is an Rspamd symbol: a name, a score (positive: spammier), a description
  and options (e.g. the URLs or domains that matched).
- the **action** is Rspamd's final action (``no action`` is ``accept``; ``soft reject`` is
  ``tempfail``; ``folder`` has no Rspamd twin, it is Sieve's ``fileinto``/Rspamd's move to
  Junk done by delivery). ``reject`` and ``tempfail`` refuse the message in cleanup
  (pipeline.py), ``discard`` accepts it and drops it (Postfix DISCARD), ``folder`` delivers
  local copies into :attr:`Verdict.folder` (deliver/mailbox.py), ``add_header`` tells that a
  filter marked the message (the filter writes the field itself), ``quarantine`` accepts it
  and keeps it out of the queue, in the quarantine (cleanup/door.py, spam/quarantine.py) until
  an admin releases or deletes it (Rspamd's and Amavis's quarantine); ``hold`` accepts it
  into the hold queue (header_checks HOLD, cleanup/content_checks.py) until ``pochta queue
  release``.

Verdicts are immutable: each ``with_*`` method returns a new one, so filters can pass results
along without aliasing surprises.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["Action", "AuthResult", "Symbol", "Verdict"]

Action = Literal[
    "accept", "add_header", "folder", "reject", "tempfail", "discard", "quarantine", "hold"
]


class AuthResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One authentication result (RFC 8601 §2.2 resinfo)."""

    method: str  # RFC 8601 §2.7: "spf", "dkim", "dmarc", "arc", "auth", "iprev"
    result: str  # RFC 8601 §2.7: "pass", "fail", "none", "temperror", ...
    reason: str = ""  # RFC 8601 §2.2 reasonspec, free text
    properties: dict[str, str] = {}  # RFC 8601 §2.3 "header.d" -> "example.org"

    def render(self) -> str:
        """The resinfo as written in Authentication-Results (RFC 8601 §2.2)."""
        text = f"{self.method}={self.result}"
        if self.reason:
            text += ' reason="' + self.reason.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for key, value in self.properties.items():
            text += f" {key}={value}"
        return text


class Symbol(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One named finding with its score (Rspamd's symbol)."""

    name: str
    score: float = 0.0
    description: str = ""
    options: tuple[str, ...] = ()


class Verdict(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Authentication results, symbols and the final action of one message."""

    auth: tuple[AuthResult, ...] = ()
    symbols: tuple[Symbol, ...] = ()
    action: Action = "accept"
    reason: str = ""  # why the action: the text of a refusal, or a note for the log
    folder: str = ""  # the target folder when action is "folder", e.g. "Junk"

    @property
    def score(self) -> float:
        """The total score: the sum of the symbols' scores (Rspamd's)."""
        return sum(s.score for s in self.symbols)

    @property
    def delivery_folder(self) -> str:
        """The folder local delivery must use, "" when the verdict chose none."""
        return self.folder if self.action == "folder" else ""

    def auth_results(self, method: str) -> list[AuthResult]:
        """The results of one method, in the order they were added (DKIM: per signature)."""
        return [a for a in self.auth if a.method == method]

    def result_of(self, method: str) -> str:
        """The result of the first ``method`` result ("pass", "fail", ...), "" when none:
        the SPF and DMARC outcome the door's backscatter rule reads (cleanup/door.py)."""
        found = self.auth_results(method)
        return found[0].result if found else ""

    def symbol(self, name: str) -> Symbol | None:
        """The symbol named ``name``, or None."""
        return next((s for s in self.symbols if s.name == name), None)

    def with_auth(self, result: AuthResult) -> Verdict:
        return msgspec.structs.replace(self, auth=(*self.auth, result))

    def with_symbol(self, symbol: Symbol) -> Verdict:
        """A copy with ``symbol`` added; one of the same name is replaced (a name counts
        once, as in Rspamd)."""
        kept = tuple(s for s in self.symbols if s.name != symbol.name)
        return msgspec.structs.replace(self, symbols=(*kept, symbol))

    def with_action(self, action: Action, reason: str = "", folder: str = "") -> Verdict:
        if action == "folder" and not folder:
            raise ValueError('the action "folder" needs the folder to deliver to')
        return msgspec.structs.replace(self, action=action, reason=reason, folder=folder)
