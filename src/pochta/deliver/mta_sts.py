"""MTA-STS (RFC 8461): a recipient domain's promise that its MX hosts speak verified TLS.

Three parts, from the bytes up:

1. ``parse_txt`` reads the ``_mta-sts.DOMAIN`` TXT record (§3.1); only its ``id`` matters
   to a sender: a new id means a new policy to fetch.
2. ``parse_policy`` reads the policy file (§3.2): ``version``, ``mode``, ``max_age`` and the
   ``mx`` patterns. Any text gives a ``StsPolicy`` or a ``StsPolicyError`` saying what is
   wrong, nothing else (the tests hold this with hypothesis).
3. ``StsResolver.policy(domain)`` puts them together (§3.3, §5): look up the TXT id, reuse
   the cached policy when the id is unchanged and the policy has not expired, else fetch
   ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` and cache what it says, in memory and
   in one JSON file per domain, so that a restart does not forget a policy and open a window
   for a downgrade (§5, §10.2).

The fetch is strict, as §3.3 asks: HTTPS with a certificate valid for ``mta-sts.DOMAIN``
(the system CA store plus an optional extra CA file), status 200, media type ``text/plain``,
no redirects, a timeout for the whole exchange and a size limit on the body. The URL can be
pointed elsewhere (tests use ``https://127.0.0.1:PORT/...``): the TLS name checked and the
Host header are always ``mta-sts.DOMAIN``, whatever address the URL connects to.

``StsResolver.policy()`` never raises: it returns ``None`` when the domain has no usable
policy, and logs why (``mta_sts_*`` events).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.rdtypes.ANY.TXT
import dns.resolver
import httpx
import msgspec

from pochta.durable import write_atomic
from pochta.logs import get_logger

log = get_logger("deliver")

Mode = Literal["enforce", "testing", "none"]

DEFAULT_URL_TEMPLATE = "https://mta-sts.{domain}/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: "a suggested maximum policy size is 64 kilobytes"
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: max_age "MUST be less than or equal to 31557600"
DEFAULT_TIMEOUT_SECONDS = 60.0  # RFC 8461 §3.3: "a suggested timeout is one minute"
MAX_TXT_BYTES = 4096  # a TXT answer for _mta-sts is a few dozen octets; refuse anything huge
MAX_MEMORY_ENTRIES = 10_000  # domains kept in memory; the disk cache holds the rest


class StsPolicyError(ValueError):
    """A policy file or TXT record that does not follow RFC 8461; the message says why."""


class StsPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed policy file (RFC 8461 §3.2)."""

    mode: Mode
    mx: tuple[str, ...]  # lower-case patterns, "mail.example.org" or "*.example.org"
    max_age: int  # seconds

    def render(self) -> str:
        """The policy as a file, CRLF-terminated (what ``parse_policy`` reads back)."""
        lines = ["version: STSv1", f"mode: {self.mode}"]
        lines += [f"mx: {pattern}" for pattern in self.mx]
        lines.append(f"max_age: {self.max_age}")
        return "".join(line + "\r\n" for line in lines)


# -- policy file (RFC 8461 §3.2) -------------------------------------------------------------

# sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
_FIELD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# sts-policy-ext-value = sts-policy-vchar *(*WSP sts-policy-vchar), vchar = %x21-7E / UTF-8
_FIELD_VALUE = re.compile(r"[^\x00-\x20\x7f]+(?:[ \t]+[^\x00-\x20\x7f]+)*")
# sts-policy-max-age-value = 1*10(DIGIT)
_MAX_AGE = re.compile(r"[0-9]{1,10}")
# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str]; Domain = sub-domain *("." sub-domain)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_KNOWN_FIELDS = ("version", "mode", "max_age", "mx")
_MODES: tuple[Mode, ...] = ("enforce", "testing", "none")


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy file; ``StsPolicyError`` says which line is wrong and how."""
    # RFC 8461 §3.3: senders may limit the policy size; 64 KiB is the suggested limit.
    # (Characters count first: a longer text is too large whatever its encoding.)
    if len(text) > MAX_POLICY_BYTES or _utf8_size(text) > MAX_POLICY_BYTES:
        raise StsPolicyError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    firsts: dict[str, str] = {}
    mx: list[str] = []
    # RFC 8461 §3.2: sts-policy-term = LF / CRLF; the last line may lack one.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t"):
            # Deviation from RFC 8461 §3.2 (the grammar has no empty lines): blank lines are
            # skipped, as published policies sometimes end with one.
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise StsPolicyError(f"line {number}: expected 'key: value', found {_show(line)}")
        if not _FIELD_NAME.fullmatch(key):
            raise StsPolicyError(f"line {number}: {_show(key)} is not a valid field name")
        value = rest.lstrip(" \t").rstrip(" \t")  # sts-policy-field-delim = ":" *WSP; *WSP
        if not _FIELD_VALUE.fullmatch(value):
            what = "empty value" if not value else "control character in the value"
            raise StsPolicyError(f"line {number}: {what} of {key!r}")
        if key == "mx":
            mx.append(_mx_pattern(value, number))
        elif key in _KNOWN_FIELDS:
            # RFC 8461 §3.2: a field other than mx that appears more than once: the first
            # occurrence counts. The later ones must still be well-formed.
            _check_known(key, value, number)
            firsts.setdefault(key, value)
        # RFC 8461 §3.2: unknown fields (extensions) are ignored.
    for key in ("version", "mode", "max_age"):
        if key not in firsts:
            raise StsPolicyError(f"missing {key!r} field{_case_hint(key, lines)}")
    mode = _mode(firsts["mode"])
    if not mx and mode != "none":
        # RFC 8461 §3.2: mx is required at least once unless the mode is "none".
        raise StsPolicyError(f"missing 'mx' field (required in mode {mode!r})")
    return StsPolicy(mode=mode, mx=tuple(mx), max_age=int(firsts["max_age"]))


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _check_known(key: str, value: str, number: int) -> None:
    if key == "version" and value != "STSv1":
        # RFC 8461 §3.2: sts-policy-version-value = %s"STSv1" (case-sensitive)
        raise StsPolicyError(f"line {number}: version {_show(value)} is not 'STSv1'")
    if key == "mode" and value not in _MODES:
        raise StsPolicyError(
            f"line {number}: mode {_show(value)} is not one of enforce, testing, none"
        )
    if key == "max_age":
        if not _MAX_AGE.fullmatch(value):
            raise StsPolicyError(
                f"line {number}: max_age {_show(value)} is not a number of seconds (1 to 10 digits)"
            )
        if int(value) > MAX_AGE_LIMIT:
            raise StsPolicyError(
                f"line {number}: max_age {value} is more than {MAX_AGE_LIMIT} seconds (a year)"
            )


def _mode(value: str) -> Mode:
    for mode in _MODES:
        if value == mode:
            return mode
    raise StsPolicyError(f"mode {_show(value)} is not one of enforce, testing, none")


def _mx_pattern(value: str, number: int) -> str:
    # RFC 8461 §3.2: sts-policy-mx-value = ["*."] Domain, in A-labels (RFC 5321 Domain).
    if not value.isascii():
        # Checked before lower-casing: "\u212a".lower() is an ASCII "k".
        raise StsPolicyError(
            f"line {number}: mx {_show(value)} must be written in A-labels (xn--...), not UTF-8"
        )
    pattern = value.lower()
    if pattern.endswith(".") and len(pattern) > 1:
        # Deviation from RFC 8461 §3.2: a trailing dot (the absolute form) is accepted and
        # dropped; it names the same host.
        pattern = pattern[:-1]
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise StsPolicyError(f"line {number}: mx {_show(value)} is not a host name or *.domain")
    return pattern


def _case_hint(key: str, lines: list[str]) -> str:
    for raw in lines:
        name = raw.partition(":")[0]
        if name != key and name.lower() == key:
            return f" (found {name!r}: field names are case-sensitive)"
    return ""


def _show(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- TXT record (RFC 8461 §3.1) --------------------------------------------------------------

# sts-field-delim = *WSP ";" *WSP
_TXT_DELIM = re.compile(r"[ \t]*;[ \t]*")
# sts-id = %s"id=" 1*32(ALPHA / DIGIT)
_TXT_ID = re.compile(r"[A-Za-z0-9]{1,32}")
# sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E): visible characters but "=" and ";"
_TXT_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_TXT_START = re.compile(r"v=STSv1(?:[ \t;]|$)")

TxtRecord = str | bytes | tuple[bytes, ...]


def check_txt(records: Iterable[TxtRecord]) -> str:
    """The policy id of the ``_mta-sts`` TXT RRset; ``StsPolicyError`` says why there is none."""
    texts = [_txt_text(record) for record in records]
    # RFC 8461 §3.1: records that do not begin with "v=STSv1" are discarded ...
    candidates = [text for text in texts if text is not None and _TXT_START.match(text)]
    # ... and unless exactly one remains the domain has no policy.
    if not candidates:
        raise StsPolicyError("no TXT record starting with 'v=STSv1'")
    if len(candidates) > 1:
        raise StsPolicyError(f"{len(candidates)} TXT records start with 'v=STSv1', need one")
    return _txt_id(candidates[0])


def parse_txt(records: Iterable[TxtRecord]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT RRset, or None when it names no policy."""
    try:
        return check_txt(records)
    except StsPolicyError:
        return None


def _txt_text(record: TxtRecord) -> str | None:
    # RFC 7208 §3.3 convention, also used for MTA-STS: a TXT record's strings are joined.
    raw = b"".join(record) if isinstance(record, tuple) else record
    if isinstance(raw, str):
        return raw if len(raw) <= MAX_TXT_BYTES else None
    if len(raw) > MAX_TXT_BYTES:
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def _txt_id(text: str) -> str:
    # sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    fields = _TXT_DELIM.split(text)
    if fields[0] != "v=STSv1":
        raise StsPolicyError(f"TXT record {_show(text)} does not start with 'v=STSv1;'")
    if fields[-1] == "" and len(fields) > 1:
        fields.pop()  # the optional trailing delimiter
    policy_id = ""
    for field in fields[1:]:
        name, sep, value = field.partition("=")
        if not sep or not _FIELD_NAME.fullmatch(name):
            raise StsPolicyError(f"TXT record {_show(text)}: bad field {_show(field)}")
        if name == "id":
            if not _TXT_ID.fullmatch(value):
                raise StsPolicyError(
                    f"TXT record {_show(text)}: id must be 1 to 32 letters or digits"
                )
            # Like a repeated policy field (RFC 8461 §3.2), the first id counts.
            policy_id = policy_id or value
        elif not _TXT_EXT_VALUE.fullmatch(value):
            raise StsPolicyError(f"TXT record {_show(text)}: bad value of {name!r}")
    if not policy_id:
        raise StsPolicyError(f"TXT record {_show(text)} has no id field")
    return policy_id


# -- fetching and caching (RFC 8461 §3.3, §5) ------------------------------------------------


class StsFetchError(Exception):
    """The policy could not be fetched over HTTPS; the message says why."""


class CachedPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A fetched policy with what is needed to know when to fetch it again (the disk form)."""

    domain: str
    policy_id: str
    fetched_at: float  # seconds since the epoch
    policy: StsPolicy

    def expired(self, now: float) -> bool:
        # RFC 8461 §3.2, §5: a policy is good for max_age seconds after it was fetched.
        return now >= self.fetched_at + self.policy.max_age


_DOMAIN_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CachedPolicy)


class StsResolver:
    """Finds, fetches and caches the MTA-STS policies of recipient domains.

    ``resolver``: the async DNS resolver for the TXT lookups. ``cache_dir``: where one JSON
    file per domain keeps fetched policies across restarts (created when first needed).
    ``ca_file``: PEM CA certificates trusted beside the system store. ``url_template`` with
    ``{domain}`` (and ``{port}``, filled from ``port``): where to fetch from; the certificate
    is always checked against ``mta-sts.DOMAIN``. ``clock``: wall-clock seconds (policies on
    disk outlive the process, so not a monotonic clock).
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver,
        cache_dir: Path,
        *,
        ca_file: str | Path | None = None,
        url_template: str = DEFAULT_URL_TEMPLATE,
        port: int = 443,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_policy_bytes: int = MAX_POLICY_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.resolver = resolver
        self.cache_dir = Path(cache_dir)
        self.url_template = url_template
        self.port = port
        self.timeout_seconds = timeout_seconds
        self.max_policy_bytes = max_policy_bytes
        self.clock = clock
        # RFC 8461 §3.3: the certificate must chain to a trusted root and name mta-sts.DOMAIN
        # (RFC 6125); the default context checks both, and the expiry.
        self._ssl = ssl.create_default_context()
        if ca_file:
            self._ssl.load_verify_locations(cafile=str(ca_file))
        self._memory: OrderedDict[str, CachedPolicy] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[StsPolicy | None]] = {}

    async def policy(self, domain: str) -> StsPolicy | None:
        """The policy to apply to mail for ``domain`` now, or None when there is none."""
        name = domain.lower().rstrip(".")
        if not domain.isascii() or not _DOMAIN_NAME.fullmatch(name):
            log.info("mta_sts_skipped", domain=domain, reason="not an ASCII domain name")
            return None
        # Concurrent deliveries to one domain share one lookup (and one fetch).
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.ensure_future(self._policy(name))
            self._inflight[name] = task
            task.add_done_callback(lambda _: self._inflight.pop(name, None))
        return await asyncio.shield(task)

    async def _policy(self, domain: str) -> StsPolicy | None:
        now = self.clock()
        cached = await self._cached(domain, now)
        try:
            policy_id = await self._txt_id(domain)
        except StsPolicyError as exc:
            policy_id = None
            if cached is None:
                log.debug("mta_sts_none", domain=domain, reason=str(exc))
            else:
                log.info("mta_sts_txt_missing", domain=domain, reason=str(exc))
        if policy_id is None:
            # RFC 8461 §5: no live policy can be discovered, but a valid (unexpired) cached
            # one exists: apply it. This is what defeats stripping the TXT record.
            return cached.policy if cached is not None else None
        if cached is not None and cached.policy_id == policy_id:
            return cached.policy  # RFC 8461 §5.1: same id, policy still fresh
        try:
            policy = await self.fetch(domain)
        except StsFetchError as exc:
            log.warning(
                "mta_sts_fetch_failed",
                domain=domain,
                policy_id=policy_id,
                error=str(exc),
                using_cached=cached is not None,
            )
            # RFC 8461 §3.3/§5.1: a failed fetch leaves the cached policy (if any) in force.
            return cached.policy if cached is not None else None
        entry = CachedPolicy(domain=domain, policy_id=policy_id, fetched_at=now, policy=policy)
        await self._store(entry)
        log.info(
            "mta_sts_fetched",
            domain=domain,
            policy_id=policy_id,
            mode=policy.mode,
            max_age=policy.max_age,
            mx=",".join(policy.mx),
        )
        return policy

    async def _txt_id(self, domain: str) -> str:
        qname = f"_mta-sts.{domain}."
        try:
            answer = await self.resolver.resolve(qname, "TXT", raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise StsPolicyError(f"no {qname} TXT record (NXDOMAIN)") from exc
        except dns.exception.DNSException as exc:
            # RFC 8461 §5: a failed lookup is like no record; a cached policy still applies.
            raise StsPolicyError(f"{qname} TXT lookup failed: {exc}") from exc
        records: list[TxtRecord] = []
        if answer.rrset is not None:
            for rdata in answer.rrset:
                if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                    records.append(tuple(rdata.strings))
        return check_txt(records)

    # -- HTTPS --

    async def fetch(self, domain: str) -> StsPolicy:
        """Fetch and parse the policy of ``domain`` now (no cache); ``StsFetchError`` if not."""
        host = f"mta-sts.{domain}"
        url = self.url_template.format(domain=domain, port=self.port)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                body = await self._get(url, host)
        except TimeoutError as exc:
            raise StsFetchError(f"{url}: no complete answer in {self.timeout_seconds:g} s") from exc
        except httpx.HTTPError as exc:
            raise StsFetchError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except (ssl.SSLError, OSError) as exc:
            raise StsFetchError(f"{url}: {exc}") from exc
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StsFetchError(f"{url}: the policy is not UTF-8 text") from exc
        try:
            return parse_policy(text)
        except StsPolicyError as exc:
            raise StsFetchError(f"{url}: {exc}") from exc

    async def _get(self, url: str, host: str) -> bytes:
        # One client per fetch: fetches are rare (once per policy id or max_age), and no
        # connection made for one domain's name can be reused for another's.
        async with httpx.AsyncClient(
            verify=self._ssl,
            follow_redirects=False,  # RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"
            timeout=httpx.Timeout(self.timeout_seconds),
            trust_env=False,  # no proxies or netrc from the environment
        ) as client:
            request = client.build_request(
                "GET",
                url,
                # Identity encoding: the size limit then bounds what is decompressed, too.
                headers={"Host": host, "Accept-Encoding": "identity", "Accept": "text/plain"},
                # The TLS name (SNI and the certificate check) is mta-sts.DOMAIN even when
                # the URL gives an address (RFC 8461 §3.3).
                extensions={"sni_hostname": host},
            )
            response = await client.send(request, stream=True)
            try:
                return await self._read(url, response)
            finally:
                await response.aclose()

    async def _read(self, url: str, response: httpx.Response) -> bytes:
        if response.is_redirect:
            raise StsFetchError(f"{url}: redirect ({response.status_code}) refused, RFC 8461 §3.3")
        if response.status_code != 200:
            # RFC 8461 §3.3: only a 200 answer carries a policy.
            raise StsFetchError(f"{url}: HTTP status {response.status_code}, expected 200")
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "text/plain":
            # RFC 8461 §3.2: the policy is served as text/plain.
            raise StsFetchError(f"{url}: content type {media_type or 'missing'!r}, not text/plain")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_policy_bytes:
            raise StsFetchError(f"{url}: body of {declared} bytes exceeds {self.max_policy_bytes}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_policy_bytes:
                raise StsFetchError(f"{url}: body exceeds {self.max_policy_bytes} bytes")
        return bytes(body)

    # -- cache --

    def _path(self, domain: str) -> Path:
        return self.cache_dir / f"{domain}.json"

    async def _cached(self, domain: str, now: float) -> CachedPolicy | None:
        entry = self._memory.get(domain)
        if entry is None:
            entry = await asyncio.to_thread(self._load, domain)
            if entry is not None:
                self._remember(entry)
        else:
            self._memory.move_to_end(domain)
        if entry is not None and entry.expired(now):
            self._memory.pop(domain, None)
            with contextlib.suppress(OSError):
                self._path(domain).unlink()
            log.info("mta_sts_expired", domain=domain, policy_id=entry.policy_id)
            return None
        return entry

    def _load(self, domain: str) -> CachedPolicy | None:
        path = self._path(domain)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("mta_sts_cache_unreadable", domain=domain, path=str(path), error=str(exc))
            return None
        try:
            entry = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("mta_sts_cache_unreadable", domain=domain, path=str(path), error=str(exc))
            return None
        if entry.domain != domain:
            return None
        return entry

    async def _store(self, entry: CachedPolicy) -> None:
        self._remember(entry)
        try:
            await asyncio.to_thread(self._write, entry)
        except OSError as exc:
            # The policy still applies from memory; only a restart would forget it.
            log.warning("mta_sts_cache_write_failed", domain=entry.domain, error=str(exc))

    def _remember(self, entry: CachedPolicy) -> None:
        self._memory[entry.domain] = entry
        self._memory.move_to_end(entry.domain)
        while len(self._memory) > MAX_MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    def _write(self, entry: CachedPolicy) -> None:
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The directory is fsynced too: a policy the next start does not find is a window
        # for a downgrade (RFC 8461 §10.2).
        write_atomic(self._path(entry.domain), _encoder.encode(entry), mode=0o600)
