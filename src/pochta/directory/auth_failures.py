"""Counting failed logins and the tarpit delay that follows (pure: the caller passes ``now``).

Failures are counted over a sliding window per client address and per account name. Once
either count reaches the threshold, each answer is delayed, 1 s at the threshold and doubling
with every further failure up to ``max_delay``. Like Dovecot's auth_penalty, but the delay
also keys on the account, so an attacker spread over many addresses is slowed on the account
they target; a success clears that account's count (the owner logged in) but not the
address's.

IPv6 clients are counted per /64: one host usually holds a whole /64 (RFC 4291 §2.5.1
interface identifiers, RFC 8981 temporary addresses), so counting single addresses would let
it try 2^64 times. IPv4-mapped IPv6 addresses count as the IPv4 address.

Memory is bounded: at most ``max_entries`` addresses and as many accounts are tracked; the
least recently failed go first, and entries whose last failure left the window are dropped.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque

__all__ = ["FailureTracker", "client_key"]


def client_key(ip: str) -> str:
    """The counting key of a client address: IPv4 as is, IPv6 as its /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return ip  # a unix socket or something unparsable: count it as given
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


class _Counter:
    """Failure times per key, oldest key first; each key keeps only the newest few times."""

    def __init__(self, window: float, keep: int, max_entries: int) -> None:
        self._window = window
        self._keep = keep
        self._max_entries = max_entries
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def add(self, key: str, now: float) -> None:
        self._purge(now)
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self._keep)
            while len(self._times) > self._max_entries:
                self._times.popitem(last=False)  # evict the least recently failed
        else:
            self._times.move_to_end(key)
        times.append(now)

    def clear(self, key: str) -> None:
        self._times.pop(key, None)

    def count(self, key: str, now: float) -> int:
        times = self._times.get(key)
        if not times:
            return 0
        cutoff = now - self._window
        return sum(1 for t in times if t > cutoff)

    def _purge(self, now: float) -> None:
        # Keys are in order of their last failure, so the expired ones are at the front.
        cutoff = now - self._window
        while self._times:
            key, times = next(iter(self._times.items()))
            if times and times[-1] > cutoff:
                break
            del self._times[key]


class FailureTracker:
    def __init__(
        self,
        window_seconds: float = 60,
        threshold: int = 5,
        max_delay: float = 15.0,
        *,
        max_entries: int = 100_000,
    ) -> None:
        if window_seconds <= 0 or threshold < 1 or max_delay < 0 or max_entries < 1:
            raise ValueError(
                "FailureTracker needs window_seconds > 0, threshold >= 1, max_delay >= 0 "
                "and max_entries >= 1"
            )
        self.window_seconds = float(window_seconds)
        self.threshold = threshold
        self.max_delay = float(max_delay)
        # Enough times per key to reach max_delay: threshold, then one doubling per failure.
        keep = threshold + max(1, math.ceil(math.log2(max(self.max_delay, 1.0)))) + 1
        self._by_ip = _Counter(self.window_seconds, keep, max_entries)
        self._by_account = _Counter(self.window_seconds, keep, max_entries)

    def record_failure(self, ip: str, account: str | None, now: float) -> None:
        self._by_ip.add(client_key(ip), now)
        if account:
            self._by_account.add(account, now)

    def record_success(self, ip: str, account: str | None, now: float) -> None:
        # The account's owner got in: forget its failures. The address keeps its count, or an
        # attacker holding one account could reset their counter between guesses on others.
        if account:
            self._by_account.clear(account)

    def failures(self, ip: str, account: str | None, now: float) -> int:
        """The larger of the address's and the account's failure counts in the window."""
        n = self._by_ip.count(client_key(ip), now)
        if account:
            n = max(n, self._by_account.count(account, now))
        return n

    def delay(self, ip: str, account: str | None, now: float) -> float:
        """Seconds to wait before answering: 0 below the threshold, then 1, 2, 4, ... s."""
        excess = self.failures(ip, account, now) - self.threshold
        if excess < 0:
            return 0.0
        return min(self.max_delay, 2.0 ** min(excess, 62))

    def entries(self) -> int:
        """Tracked entries (addresses + accounts), for metrics and the memory-bound test."""
        return len(self._by_ip) + len(self._by_account)
