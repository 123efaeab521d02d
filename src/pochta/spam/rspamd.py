"""An Rspamd client: one message posted to the normal worker's ``/checkv2``, its reply read.

Rspamd's HTTP protocol (rspamd.com/doc/developers/protocol.html): the message is the POST
body; what the MTA knows of the transaction goes in request headers: ``IP`` (the client's
address), ``Helo``, ``Hostname`` (its verified reverse name), ``From`` (the envelope
sender), one ``Rcpt`` per recipient, ``Queue-Id``, ``User`` (the SASL login),
``Deliver-To`` (the one recipient, when there is one) and ``MTA-Name`` (our host name).
``Pass: all`` is never sent: Rspamd's pre-results (GTUBE, settings) must be able to cut a
scan short. The reply is JSON: ``action`` ("reject", "soft reject", "rewrite subject",
"add header", "greylist", "no action"), ``score``, ``required_score``, ``symbols`` (by name:
``score``, ``description``, ``options``) and ``messages`` (``smtp_message`` is the text
Rspamd wants in a refusal).

:func:`parse_reply` is pure (bytes in, :class:`RspamdReply` out, :class:`RspamdError` on
anything else, bounded); :class:`RspamdClient` is the httpx glue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from pochta.cleanup.verdict import Symbol

__all__ = [
    "ACTIONS",
    "MAX_REPLY_BYTES",
    "RspamdClient",
    "RspamdError",
    "RspamdReply",
    "parse_reply",
    "request_headers",
]

ACTIONS = frozenset(
    {"reject", "soft reject", "rewrite subject", "add header", "greylist", "no action"}
)
"""Rspamd's actions (rspamd.com/doc/configuration/metrics.html); anything else is an error."""

MAX_REPLY_BYTES = 4 << 20
"""Largest /checkv2 reply read: a scan with thousands of symbols stays far below."""
_MAX_SYMBOLS = 2000
_MAX_OPTIONS = 50
_MAX_TEXT = 1000


class RspamdError(Exception):
    """Rspamd could not be asked or its answer was not a scan result; the message says
    which (connection refused, HTTP status, bad JSON) and where."""


@dataclass(frozen=True, slots=True)
class RspamdReply:
    """One scan result."""

    action: str
    score: float
    required_score: float
    symbols: tuple[Symbol, ...] = ()
    messages: Mapping[str, str] = field(default_factory=dict)

    @property
    def smtp_message(self) -> str:
        """The text Rspamd wants in an SMTP refusal ("" when it gave none)."""
        return self.messages.get("smtp_message", "")


def request_headers(
    *,
    client_ip: str = "",
    helo: str = "",
    client_hostname: str = "",
    sender: str = "",
    recipients: Sequence[str] = (),
    queue_id: str = "",
    auth_user: str = "",
    mta_name: str = "",
) -> list[tuple[str, str]]:
    """The request headers of Rspamd's protocol for one message (module docstring).
    Values are made single-line printable ASCII (an address in UTF-8 is sent as it is)."""
    found: list[tuple[str, str]] = []

    def add(name: str, value: str) -> None:
        if value:
            found.append((name, _header_value(value)))

    add("IP", client_ip)
    add("Helo", helo)
    add("Hostname", client_hostname)
    # Rspamd reads "From" as the SMTP envelope sender; the null sender is "<>".
    found.append(("From", _header_value(sender) if sender else "<>"))
    for rcpt in recipients:
        add("Rcpt", rcpt)
    add("Queue-Id", queue_id)
    add("User", auth_user)
    if len(recipients) == 1:
        add("Deliver-To", recipients[0])
    add("MTA-Name", mta_name)
    return found


def _header_value(value: str) -> str:
    return "".join(c if c >= " " and c != "\x7f" else " " for c in value)[:_MAX_TEXT]


def parse_reply(raw: bytes) -> RspamdReply:
    """The scan result in a /checkv2 reply body; :class:`RspamdError` for anything that
    is not one (not JSON, no action, an unknown action, scores that are not numbers)."""
    if len(raw) > MAX_REPLY_BYTES:
        raise RspamdError(f"Rspamd reply of {len(raw)} octets, over {MAX_REPLY_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RspamdError(f"Rspamd reply is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RspamdError("Rspamd reply is not a JSON object")
    if "error" in data and "action" not in data:
        raise RspamdError(f"Rspamd says: {_text(data['error'])}")
    action = data.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise RspamdError(f"Rspamd reply has no known action: {_text(action)!r}")
    score = _number(data.get("score", 0.0), "score")
    required = _number(data.get("required_score", 0.0), "required_score")
    symbols = _symbols(data.get("symbols", {}))
    messages_in = data.get("messages", {})
    messages: dict[str, str] = {}
    if isinstance(messages_in, dict):
        for key, value in list(messages_in.items())[:20]:
            if isinstance(value, str):
                messages[str(key)[:100]] = value[:_MAX_TEXT]
    return RspamdReply(action, score, required, symbols, messages)


def _symbols(found: object) -> tuple[Symbol, ...]:
    """checkv2 gives an object keyed by symbol name; older replies a list."""
    if isinstance(found, dict):
        items = list(found.values())
    elif isinstance(found, list):
        items = found
    else:
        raise RspamdError("Rspamd reply: 'symbols' is neither an object nor a list")
    out: list[Symbol] = []
    for item in items[:_MAX_SYMBOLS]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RspamdError("Rspamd reply: a symbol without a name")
        options = item.get("options", [])
        out.append(
            Symbol(
                name=item["name"][:200],
                score=_number(item.get("score", 0.0), f"symbol {item['name'][:60]} score"),
                description=_text(item.get("description", ""))[:_MAX_TEXT],
                options=tuple(
                    _text(o)[:_MAX_TEXT]
                    for o in (options if isinstance(options, list) else [])[:_MAX_OPTIONS]
                ),
            )
        )
    return tuple(out)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RspamdError(f"Rspamd reply: {what} is not a number: {_text(value)!r}")
    number = float(value)
    if not math.isfinite(number):
        raise RspamdError(f"Rspamd reply: {what} is not finite")
    return number


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)[:200]


class RspamdClient:
    """Asks the Rspamd at ``url`` (its normal worker) about messages over /checkv2."""

    def __init__(
        self,
        url: str,
        *,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/checkv2"
        self._timeout = timeout_seconds
        self._transport = transport  # tests: httpx.MockTransport

    async def check(self, content: bytes, headers: Sequence[tuple[str, str]]) -> RspamdReply:
        """The scan result of ``content``; :class:`RspamdError` when Rspamd cannot be
        reached in time or does not answer with a scan result."""
        try:
            async with (
                httpx.AsyncClient(
                    timeout=httpx.Timeout(self._timeout),
                    transport=self._transport,
                    trust_env=False,  # never an HTTP proxy from the environment
                ) as client,
                client.stream(
                    "POST", self.endpoint, content=content, headers=list(headers)
                ) as response,
            ):
                body = bytearray()
                async for piece in response.aiter_bytes():
                    body += piece
                    if len(body) > MAX_REPLY_BYTES:
                        raise RspamdError(f"Rspamd reply over {MAX_REPLY_BYTES} octets")
                if response.status_code != 200:
                    raise RspamdError(
                        f"Rspamd at {self.endpoint} answered HTTP {response.status_code}: "
                        f"{bytes(body[:200]).decode('utf-8', 'replace')}"
                    )
        except httpx.TimeoutException:
            raise RspamdError(
                f"Rspamd at {self.endpoint} did not answer within {self._timeout:g} s "
                "([rspamd] timeout_seconds)"
            ) from None
        except httpx.HTTPError as exc:
            raise RspamdError(
                f"Rspamd at {self.endpoint} cannot be reached: {exc} (is it running? "
                "check [rspamd] url)"
            ) from None
        return parse_reply(bytes(body))
