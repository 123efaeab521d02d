"""A dict-backed :class:`pochta.mailauth.spf.SpfDns` for tests: zone data in, answers out.

The zone maps a name to a list of ``(type, value)`` pairs in the order of the openspf.org test
suites' ``zonedata`` (``/work/shared/testdata/spf/README.md``), with the semantics of pyspf's
own driver (``test/testspf.py``):

- ``("TIMEOUT", None)`` in a name's list: a query of a type with no record before it in the
  list times out (:class:`DnsTemporaryError`); one that had records gets those;
- a name not in the zone is NXDOMAIN, except names starting with ``error.``, which time out;
- a CNAME is followed (as a resolver does), at most :data:`MAX_CNAME_CHAIN` deep; a loop
  gives no answer;
- values: A/AAAA/PTR a string, MX ``(preference, host)``, TXT ``bytes`` (strings joined).

``queries`` records every ``(type, name)`` asked, for tests that count lookups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from pochta.mailauth.spf import DnsNameNotFound, DnsTemporaryError

MAX_CNAME_CHAIN = 10

Zone = Mapping[str, Sequence[tuple[str, Any]]]


class ZoneDns:
    def __init__(self, zone: Zone, *, hang: frozenset[str] = frozenset()) -> None:
        self.zone = {name.lower().rstrip("."): list(records) for name, records in zone.items()}
        self.hang = hang  # names whose every query never answers (the caller's timeout decides)
        self.queries: list[tuple[str, str]] = []

    def _records(self, name: str, rdtype: str, depth: int = 0) -> list[Any]:
        name = name.lower().rstrip(".")
        records = self.zone.get(name)
        if records is None:
            if name.startswith("error."):
                raise DnsTemporaryError(f"timeout on {rdtype} {name}")
            raise DnsNameNotFound(name)
        found: list[Any] = []
        for rtype, value in records:
            if rtype == "TIMEOUT":
                if not found:
                    raise DnsTemporaryError(f"timeout on {rdtype} {name}")
                return found
            if rtype == rdtype:
                found.append(value)
            elif rtype == "CNAME" and rdtype != "CNAME":
                if depth >= MAX_CNAME_CHAIN:
                    return []  # a loop or an over-long chain: no answer
                try:
                    return self._records(str(value), rdtype, depth + 1)
                except DnsNameNotFound:
                    return []
        return found

    async def _ask(self, name: str, rdtype: str) -> list[Any]:
        self.queries.append((rdtype, name))
        if name.lower().rstrip(".") in self.hang:
            await asyncio.Event().wait()
        return self._records(name, rdtype)

    async def txt(self, name: str) -> list[bytes]:
        return [bytes(v) for v in await self._ask(name, "TXT")]

    async def a(self, name: str) -> list[str]:
        return [str(v) for v in await self._ask(name, "A")]

    async def aaaa(self, name: str) -> list[str]:
        return [str(v) for v in await self._ask(name, "AAAA")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return [(int(p), str(h)) for p, h in await self._ask(name, "MX")]

    async def ptr(self, name: str) -> list[str]:
        return [str(v) for v in await self._ask(name, "PTR")]


def zone_from_suite(zonedata: Mapping[str, Sequence[Any]]) -> dict[str, list[tuple[str, Any]]]:
    """The YAML suites' ``zonedata`` as a :class:`ZoneDns` zone (see README.md there): TXT and
    SPF values are a string or a list of strings, joined; an ``SPF`` record is also served as
    TXT unless the name has TXT records of its own (``TXT: NONE`` counts, and is no record)."""
    zone: dict[str, list[tuple[str, Any]]] = {}
    for name, entries in zonedata.items():
        records: list[tuple[str, Any]] = []
        generated: list[tuple[str, Any]] = []
        has_txt = False
        for entry in entries:
            if entry == "TIMEOUT":
                records.append(("TIMEOUT", None))
                continue
            for rtype, value in entry.items():
                if rtype in ("TXT", "SPF"):
                    strings = [value] if isinstance(value, str) else list(value)
                    if rtype == "TXT":
                        has_txt = True
                    if strings == ["NONE"]:
                        continue
                    joined = "".join(strings).encode("utf-8")
                    if rtype == "SPF":
                        generated.append(("TXT", joined))
                    records.append((rtype, joined))
                elif rtype == "MX":
                    records.append(("MX", (int(value[0]), str(value[1]))))
                else:
                    records.append((rtype, str(value)))
        if not has_txt:
            records.extend(generated)
        zone[name.lower()] = records
    return zone
