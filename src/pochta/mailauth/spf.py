"""SPF (RFC 7208) for the MAIL FROM and HELO identities: an address and names in, a result out.

Pure evaluation: nothing here knows about SMTP sessions, cleanup or Authentication-Results;
the policy hook and the cleanup filter that will call it come with the next step (issue 14).

The record evaluation is pyspf's (``spf.query``, strict RFC 7208 mode), kept behind our own
interface, :func:`check_spf` and :func:`check_helo`, returning :class:`SpfResult`:

- pyspf is synchronous, so a check that needs DNS runs in a bounded thread pool
  (``SPF_THREADS`` threads unless the caller gives its own executor), never on the event
  loop. The answers each check got are kept :data:`MEMO_SECONDS` per :class:`SpfDns`; a
  check whose every lookup is among them (the next messages of a burst from one sender)
  is evaluated at once on the calling thread, with no DNS and no thread hop; the first
  lookup it lacks sends it to the pool as above;
- pyspf never does DNS of its own: this module replaces its one lookup function
  (``spf.DNSLookup``) with a bridge that asks the caller's asynchronous :class:`SpfDns` on
  the event loop (``asyncio.run_coroutine_threadsafe``) and waits in the pyspf thread. Tests
  give zone data as a dict; production adapts dnspython (:class:`DnspythonSpfDns`, over
  ``pochta.dns.async_resolver.make_async_resolver``). A pyspf call outside a check (no
  bridge in that thread) gets a temporary error, never the network;
- NXDOMAIN and "no such record" both count as void (RFC 7208 §4.6.4); a timeout, SERVFAIL or
  an unreachable server is a temporary error (RFC 7208 §2.6.6: ``temperror``). The whole
  check has one time budget (``timeout_seconds``, RFC 7208 §4.6.4: at least 20 s);
  each lookup waits at most for what is left of it.

Processing limits (RFC 7208 §4.6.4), enforced by pyspf in strict mode and checked by
``tests/unit/test_spf.py``: at most 10 DNS-querying terms (include, a, mx, ptr, exists,
redirect) per check, at most 10 MX or PTR names each, at most 2 void lookups; past any of
them the result is ``permerror``. The bridge adds its own ceiling on the number of DNS
queries of one check (:data:`MAX_DNS_QUERIES`, what the limits above allow at most), so that
a pyspf bug cannot turn one message into unbounded DNS traffic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.resolver
import spf

from pochta.logs import get_logger

__all__ = [
    "MAX_DNS_QUERIES",
    "SPF_THREADS",
    "DnsNameNotFound",
    "DnsTemporaryError",
    "DnspythonSpfDns",
    "SpfDns",
    "SpfResult",
    "check_helo",
    "check_spf",
]

log = get_logger("spf")

SpfResultKeyword = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]

SPF_THREADS = 4
"""Threads of the default pool: at most this many SPF checks run at once, the rest wait."""

# RFC 7208 §4.6.4: "at least 20 seconds" before giving up on a whole check.
DEFAULT_TIMEOUT_SECONDS = 20.0

# Most DNS queries one check can need within the RFC 7208 §4.6.4 limits: the first TXT, then
# 10 terms of at most 1 + 10 queries each (mx/ptr: the MX/PTR names, then ≤10 address
# lookups), the %{p} macro's PTR validation (1 + 10) and the exp= TXT. More means a bug.
MAX_DNS_QUERIES = 1 + 10 * (1 + 10) + (1 + 10) + 1

_DEFAULT_EXPLANATION = spf.EXPLANATIONS["fail"]
_RESULTS: frozenset[str] = frozenset(
    ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
)


class DnsNameNotFound(Exception):
    """The name does not exist (NXDOMAIN, RCODE 3)."""


class DnsTemporaryError(Exception):
    """No answer could be had: timeout, SERVFAIL, no server reachable (RFC 7208 §2.6.6)."""


class SpfDns(Protocol):
    """The DNS an SPF check asks. Each method returns the records of ``name`` (CNAMEs
    followed), ``[]`` when the name has none of that type, raises :class:`DnsNameNotFound`
    for NXDOMAIN and :class:`DnsTemporaryError` when there is no answer (timeout, SERVFAIL).
    """

    async def txt(self, name: str) -> list[bytes]:
        """TXT records, each one's character-strings joined (RFC 7208 §3.3)."""
        ...

    async def a(self, name: str) -> list[str]:
        """IPv4 addresses, dotted quads."""
        ...

    async def aaaa(self, name: str) -> list[str]:
        """IPv6 addresses in text form."""
        ...

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange host name) pairs."""
        ...

    async def ptr(self, name: str) -> list[str]:
        """Host names of a PTR name (``4.3.2.1.in-addr.arpa``)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SpfResult:
    """One SPF check's outcome, in RFC 8601 terms (``spf`` method, ``smtp`` ptype).

    ``result``: the RFC 7208 §2.6 result, which is also the RFC 8601 §2.7.2 keyword;
    ``reason``: why, for the Authentication-Results comment and the log; ``properties``:
    ``{"smtp.mailfrom": ...}`` or ``{"smtp.helo": ...}``; ``identity``: ``"mailfrom"`` or
    ``"helo"``; ``domain``: the domain checked (DMARC's SPF-authenticated identifier,
    RFC 7489 §4.1); ``explanation``: for ``fail``, the domain's ``exp=`` text or our default
    (RFC 7208 §6.2), to quote in a 550 reply; ``dns_queries``: how many lookups it took.
    """

    result: SpfResultKeyword
    reason: str
    properties: dict[str, str] = field(default_factory=dict)
    identity: Literal["mailfrom", "helo"] = "mailfrom"
    domain: str = ""
    explanation: str = ""
    dns_queries: int = 0


MEMO_SECONDS = 10.0
"""How long an answer an SPF check got stays usable for the next checks through the same
``SpfDns`` (:class:`_AnswerMemo`): bursts of mail from one sender are checked on the event
loop with no DNS round trip and no thread (the resolver's cache keeps the TTL; this bounds
how much longer an answer may be used to these few seconds)."""
MEMO_ENTRIES = 4096


class _AnswerMemo:
    """The recent answers of one ``SpfDns``: (name, type) -> (expiry, values)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._answers: dict[tuple[str, str], tuple[float, list[Any]]] = {}
        self._clock = clock

    def get(self, name: str, qtype: str) -> list[Any] | None:
        found = self._answers.get((name.lower(), qtype))
        if found is None or found[0] < self._clock():
            return None
        return found[1]

    def put(self, name: str, qtype: str, values: list[Any]) -> None:
        if len(self._answers) >= MEMO_ENTRIES:
            now = self._clock()
            self._answers = {k: v for k, v in self._answers.items() if v[0] >= now}
            if len(self._answers) >= MEMO_ENTRIES:
                self._answers.clear()
        self._answers[(name.lower(), qtype)] = (self._clock() + MEMO_SECONDS, values)


_memos: weakref.WeakKeyDictionary[Any, _AnswerMemo] = weakref.WeakKeyDictionary()


def _memo_for(dns_: SpfDns) -> _AnswerMemo | None:
    """The memo of ``dns_`` (made at first use), or None for an adapter that cannot be
    weakly referenced (then every check goes to the thread)."""
    try:
        memo = _memos.get(dns_)
        if memo is None:
            memo = _memos[dns_] = _AnswerMemo()
    except TypeError:
        return None
    return memo


class _NotInMemo(BaseException):
    """An inline check needed an answer the memo does not have (a BaseException, so that
    pyspf's own handlers never take it for an error of the record)."""


class _MemoBridge:
    """pyspf's lookups answered from the memo alone, on the calling thread."""

    def __init__(self, memo: _AnswerMemo, max_queries: int) -> None:
        self._memo = memo
        self._max_queries = max_queries
        self.queries = 0
        # pyspf swallows some lookup errors with a bare except (exp=, ptr): a miss seen
        # anywhere voids the inline result.
        self.missed = False

    def lookup(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        self.queries += 1
        if self.queries > self._max_queries:
            # RFC 7208 §4.6.4: exceeding the processing limits is a permerror.
            raise spf.PermError(f"more than {self._max_queries} DNS queries in one SPF check")
        values = self._memo.get(name, qtype)
        if values is None:
            self.missed = True
            raise _NotInMemo
        return [((name, qtype), value) for value in values]


class _Bridge:
    """Answers pyspf's synchronous lookups from an :class:`SpfDns` on the event loop."""

    def __init__(
        self,
        dns_: SpfDns,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        clock: Callable[[], float],
        max_queries: int,
        memo: _AnswerMemo | None = None,
    ) -> None:
        self._dns = dns_
        self._memo = memo
        self._loop = loop
        self._deadline = deadline
        self._clock = clock
        self._max_queries = max_queries
        self.queries = 0

    def lookup(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's ``DNSLookup`` contract: ``[((name, type), value), ...]`` or ``TempError``."""
        self.queries += 1
        if self.queries > self._max_queries:
            # RFC 7208 §4.6.4: exceeding the processing limits is a permerror.
            raise spf.PermError(f"more than {self._max_queries} DNS queries in one SPF check")
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise spf.TempError(f"DNS: SPF check out of time before {qtype} {name}")
        asked = self._ask(name, qtype)
        try:
            future = asyncio.run_coroutine_threadsafe(asked, self._loop)
        except RuntimeError as exc:  # the loop is closed: the server is stopping
            asked.close()
            raise spf.TempError(f"DNS: {qtype} {name}: {exc}") from None
        try:
            values = future.result(timeout=remaining)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise spf.TempError(f"DNS: timeout on {qtype} {name}") from None
        except DnsTemporaryError as exc:
            raise spf.TempError(f"DNS: {qtype} {name}: {exc}") from None
        except Exception as exc:  # a failing resolver adapter: no answer, so temporary
            log.warning("spf_dns_error", name=name, type=qtype, error=repr(exc))
            raise spf.TempError(f"DNS: {qtype} {name}: {exc!r}") from None
        if self._memo is not None:
            self._loop.call_soon_threadsafe(self._memo.put, name, qtype, values)
        return [((name, qtype), value) for value in values]

    async def _ask(self, name: str, qtype: str) -> list[Any]:
        try:
            if qtype == "TXT":
                # pyspf joins a record's strings itself: hand it one string per record.
                return [(record,) for record in await self._dns.txt(name)]
            if qtype == "A":
                return list(await self._dns.a(name))
            if qtype == "AAAA":
                return list(await self._dns.aaaa(name))
            if qtype == "MX":
                return list(await self._dns.mx(name))
            if qtype == "PTR":
                return list(await self._dns.ptr(name))
        except DnsNameNotFound:
            return []  # RFC 7208 §4.6.4: NXDOMAIN is a void lookup like an empty answer
        # RFC 7208 §3.1 / §14.1: the SPF RR type is no longer used; nothing else is asked.
        return []


_local = threading.local()


def _lookup_in_thread(
    name: str, qtype: str, strict: object = True, timeout: object = None
) -> list[tuple[tuple[str, str], Any]]:
    bridge: _Bridge | _MemoBridge | None = getattr(_local, "bridge", None)
    if bridge is None:
        raise spf.TempError("DNS: pyspf called outside pochta.mailauth.spf.check_spf")
    return bridge.lookup(name, qtype)


# pyspf calls the module-level DNSLookup for every query: route it to the check running in
# the calling thread, so pyspf never uses its own resolver.
spf.DNSLookup = _lookup_in_thread

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _default_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=SPF_THREADS, thread_name_prefix="spf")
        return _pool


def _valid_ip(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"SPF check: {ip!r} is not an IP address") from None
    return str(address)


def _run_query(
    bridge: _Bridge | _MemoBridge, ip: str, sender: str, helo: str, receiver: str
) -> tuple[str, str, str]:
    """One pyspf evaluation with ``bridge`` as its DNS (in a pool thread; a
    :class:`_MemoBridge` on the event loop)."""
    _local.bridge = bridge
    try:
        query = spf.query(i=ip, s=sender, h=helo, receiver=receiver, strict=True)
        query.set_default_explanation(_DEFAULT_EXPLANATION)
        result, _code, explanation = query.check()
        return str(result), str(explanation), str(getattr(query, "prob", "") or "")
    finally:
        _local.bridge = None


async def _check(
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    sender: str,
    helo: str,
    identity: Literal["mailfrom", "helo"],
    domain: str,
    properties: dict[str, str],
    *,
    dns: SpfDns,
    receiver: str,
    timeout_seconds: float,
    executor: Executor | None,
    clock: Callable[[], float],
    max_dns_queries: int,
) -> SpfResult:
    address = _valid_ip(ip)
    loop = asyncio.get_running_loop()
    memo = _memo_for(dns)
    outcome: tuple[str, str, str] | None = None
    queries = 0
    try:
        if memo is not None:
            # Every answer recent: evaluated here, no DNS and no thread (MEMO_SECONDS).
            inline = _MemoBridge(memo, max_dns_queries)
            try:
                outcome = _run_query(inline, address, sender, helo, receiver)
                queries = inline.queries
            except _NotInMemo:
                outcome = None
            if inline.missed:
                outcome = None
        if outcome is None:
            bridge = _Bridge(dns, loop, clock() + timeout_seconds, clock, max_dns_queries, memo)
            pool = executor if executor is not None else _default_pool()
            outcome = await loop.run_in_executor(
                pool, _run_query, bridge, address, sender, helo, receiver
            )
            queries = bridge.queries
        result, explanation, problem = outcome
    except Exception as exc:  # a pyspf bug on some record: say so, do not crash the session
        log.warning("spf_error", sender=sender, helo=helo, ip=address, error=repr(exc))
        result, explanation, problem = "permerror", "", f"SPF evaluation failed: {exc!r}"
    if result not in _RESULTS:
        result, problem = "permerror", f"unexpected pyspf result {result!r}"
    keyword: SpfResultKeyword = result  # type: ignore[assignment]
    reason = problem or f"{domain}: {_REASONS[keyword]} {address}"
    return SpfResult(
        result=keyword,
        reason=reason,
        properties=properties,
        identity=identity,
        domain=domain,
        # RFC 7208 §6.2: the explanation is only for a "fail" result.
        explanation=explanation if keyword == "fail" else "",
        dns_queries=queries,
    )


_REASONS: dict[str, str] = {
    "pass": "designates as permitted sender",
    "fail": "does not designate as permitted sender",
    "softfail": "discourages use of",
    "neutral": "neither permits nor denies",
    "none": "publishes no SPF record for",
    "temperror": "gave a temporary DNS error for",
    "permerror": "has a broken SPF record for",
}


async def check_spf(
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    mail_from: str,
    helo: str,
    *,
    dns: SpfDns,
    receiver: str = "unknown",
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    executor: Executor | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_dns_queries: int = MAX_DNS_QUERIES,
) -> SpfResult:
    """check_host() (RFC 7208 §4) for the MAIL FROM identity of a client at ``ip``.

    ``mail_from`` is the reverse-path without brackets (``""`` for the null sender);
    ``helo`` the EHLO/HELO argument; ``receiver`` our host name (the ``%{r}`` macro).
    RFC 7208 §2.4: a null reverse-path is checked as ``postmaster@HELO``; a reverse-path
    without a local part gets ``postmaster`` (RFC 7208 §4.3).
    ``ValueError`` if ``ip`` is not an IP address (the caller's bug, not the sender's).
    """
    # RFC 7208 §2.4: with a null reverse-path, the MAIL FROM identity is postmaster@HELO.
    sender = mail_from if mail_from else f"postmaster@{helo}"
    local, _, domain = sender.rpartition("@")
    if not local:
        sender = f"postmaster@{domain}"  # RFC 7208 §4.3: no local part: use "postmaster"
    return await _check(
        ip,
        sender,
        helo,
        "mailfrom",
        domain.lower(),
        {"smtp.mailfrom": sender},
        dns=dns,
        receiver=receiver,
        timeout_seconds=timeout_seconds,
        executor=executor,
        clock=clock,
        max_dns_queries=max_dns_queries,
    )


async def check_helo(
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    helo: str,
    *,
    dns: SpfDns,
    receiver: str = "unknown",
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    executor: Executor | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_dns_queries: int = MAX_DNS_QUERIES,
) -> SpfResult:
    """check_host() (RFC 7208 §4) for the HELO identity (RFC 7208 §2.3).

    RFC 7208 §2.3: <sender> is ``postmaster@HELO`` and <domain> the HELO name. A HELO that
    is an address literal (``[192.0.2.1]``) or not a multi-label name gives ``none``
    (RFC 7208 §4.3), without a DNS query.
    """
    properties = {"smtp.helo": helo}
    name = helo.rstrip(".")
    if not name or name.startswith("[") or "." not in name or _is_ip(name):
        # RFC 7208 §4.3: a malformed or single-label domain: check_host() returns "none".
        _valid_ip(ip)
        return SpfResult(
            result="none",
            reason=f"HELO {helo!r} is not a domain name that SPF can check",
            properties=properties,
            identity="helo",
            domain=name.lower(),
        )
    return await _check(
        ip,
        f"postmaster@{name}",
        name,
        "helo",
        name.lower(),
        properties,
        dns=dns,
        receiver=receiver,
        timeout_seconds=timeout_seconds,
        executor=executor,
        clock=clock,
        max_dns_queries=max_dns_queries,
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class DnspythonSpfDns:
    """:class:`SpfDns` over a dnspython asyncio resolver (production; build the resolver with
    ``pochta.dns.async_resolver.make_async_resolver(settings.dns)``)."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self._resolver = resolver

    async def _resolve(self, name: str, rdtype: str) -> list[Any]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsNameNotFound(name) from None
        except dns.resolver.NoAnswer:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"{rdtype} {name}: {exc}") from None
        except dns.exception.DNSException as exc:  # YXDOMAIN, bad name, ...: no usable answer
            raise DnsTemporaryError(f"{rdtype} {name}: {exc}") from None
        return list(answer)

    async def txt(self, name: str) -> list[bytes]:
        return [b"".join(rdata.strings) for rdata in await self._resolve(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(rdata.address) for rdata in await self._resolve(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(rdata.address) for rdata in await self._resolve(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return [
            (int(rdata.preference), rdata.exchange.to_text(omit_final_dot=True))
            for rdata in await self._resolve(name, "MX")
        ]

    async def ptr(self, name: str) -> list[str]:
        return [
            rdata.target.to_text(omit_final_dot=True) for rdata in await self._resolve(name, "PTR")
        ]
