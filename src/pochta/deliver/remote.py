"""The smtp, relay and lmtp delivery agent: hand a queued message to another server.

``RemoteAgent.deliver(envelope, recipients, content, transport)`` is called by the delivery
stage for one destination group (all recipients share ``transport``, the parsed
``Recipient.destination``) and returns one ``Attempt`` per recipient. It works as Postfix's
smtp(8) and lmtp(8) do:

1. **Route.** ``smtp:DOMAIN`` / ``relay:DOMAIN``: the MX hosts of the domain (``mx.py``), port
   ``delivery.smtp_port``. ``smtp:[host]:port`` or an IP: that host, no MX lookup. ``lmtp:``:
   the host or unix socket given, port 24 by default, never MX. With ``delivery.relayhost``
   set, mail on the default smtp route (``smtp:`` + the recipients' own domain) goes to the
   relayhost instead, with AUTH when ``relayhost_username`` and the password file are set;
   relayhost port 465 means TLS from the first byte (RFC 8314 §3), 587 means STARTTLS is
   required (a submission port, where RFC 8314 wants no cleartext; Postfix leaves this to
   smtp_tls_security_level, we do not send a password in clear anyway).
2. **TLS policy.** A ``TLSPolicySource`` gives the domain's floor (MTA-STS) and each host's
   level (DANE); MX hosts that an MTA-STS policy in ``enforce`` mode does not list are not
   tried (RFC 8461 §4.1, §5). REQUIRETLS mail (RFC 8689 §4) needs at least "verify".
   LMTP goes to a local store and uses no TLS (Postfix lmtp_tls_security_level is empty by
   default) and no REQUIRETLS: it is final delivery, not relaying.
3. **Hosts in order.** For each host, each address: a connection failure, a greeting or EHLO
   refusal or a TLS failure tries the next address; after a session was opened, a 4xx to
   MAIL FROM tries the next host (RFC 5321 §4.5.4.1 and §5.1: "the SMTP client MUST be able
   to try (and retry) each of the relevant addresses"). A 5xx to MAIL FROM, or a message too
   big, ends the attempt for every recipient. A 5xx to RCPT is final for that recipient;
   after DATA, a 4xx or 5xx applies to every accepted recipient. Recipients a host refused
   with a 4xx (to RCPT, or to the final dot) are tried at the next host in the same attempt,
   as Postfix's smtp does; after the last host they are deferred with that 4xx. When every
   host fails, every recipient is deferred with the last reply, unless the last failure was
   a missing capability the message needs (SMTPUTF8, REQUIRETLS), which bounces (Postfix).
4. **Connection cache.** After a message the session is kept open for
   ``connection_cache_seconds`` for the next message to the same (host, address, port, TLS
   level, AUTH user); it is reset with RSET before use (RFC 5321 §4.1.1.5) and closed when
   idle for longer or older than ``REUSE_TIME_LIMIT_SECONDS`` (Postfix
   smtp_connection_reuse_time_limit). ``close()`` ends them all with QUIT.
5. **Pacing.** ``destination_rate_delay_seconds`` > 0 serialises deliveries to one
   destination and waits that long between them (Postfix destination_rate_delay).

One log line per attempt per host address (``smtp_attempt``): queue id, transport, host,
address, TLS version and how the peer was verified, and the reply.

All recipients of a group go in one transaction; a server limit on recipients (452, RFC 5321
§4.5.3.1.10) defers the rest, which the queue retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import dns.asyncresolver

from pochta.config.settings import Settings
from pochta.deliver.mx import MXHost, MXResult, ipv6_routable, resolve_host, resolve_mx
from pochta.deliver.smtp_client import (
    ClientSession,
    ClientSettings,
    Credentials,
    DaneCheck,
    Endpoint,
    OutgoingMessage,
    RecipientSpec,
    ServerReply,
    SessionFailure,
    TLSState,
    address_problem,
)
from pochta.deliver.tls_policy import (
    LEVEL_ORDER,
    ConfiguredPolicy,
    DomainPolicy,
    HostTLS,
    Level,
    TLSPolicySource,
)
from pochta.dns.async_resolver import make_async_resolver
from pochta.logs import get_logger
from pochta.mailauth.tls_report import (
    PolicyType,
    TlsOutcome,
    classify_failure,
    sts_policy_string,
    tlsa_policy_string,
)
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt, Outcome
from pochta.resolve.transport import NETWORK_KINDS, Transport, TransportError, parse_transport

log = get_logger("deliver")

__all__ = ["REUSE_TIME_LIMIT_SECONDS", "RemoteAgent"]

LMTP_PORT = 24
IMPLICIT_TLS_PORT = 465  # RFC 8314 §3: submission over implicit TLS
SUBMISSION_PORT = 587  # RFC 6409 §3.1
# A cached session is not used for new mail once it is this old (Postfix's default).
REUSE_TIME_LIMIT_SECONDS = 300.0
# Destinations remembered for the rate delay before old ones are forgotten.
_PACING_ENTRIES = 1000


@dataclass(frozen=True, slots=True)
class _Route:
    """Where one group goes."""

    hosts: tuple[MXHost, ...]
    port: int
    domain: str  # the recipient domain (MX routes) or the next hop, for the TLS policy
    mx: bool  # the hosts came from MX records (MTA-STS applies)
    lmtp: bool = False
    unix: bool = False
    implicit_tls: bool = False
    min_level: Level = "none"
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class _NoRoute:
    """Why a group cannot be routed now: the reply for every recipient."""

    reply: str


_CacheKey = tuple[bool, Endpoint, Level, bool, str]


@dataclass(frozen=True, slots=True)
class _Failed:
    """An address that took no transaction: why, and whether the server itself answered
    (then its other addresses would answer the same, and the reply names it)."""

    failure: SessionFailure
    answered: bool


@dataclass(eq=False)
class _Idle:
    session: ClientSession
    timer: asyncio.TimerHandle | None = None


def _outcome(reply: ServerReply | str) -> Outcome:
    """RFC 5321 §4.2.1: 2xx (and 3xx) done, 4xx try again later, 5xx permanent."""
    text = str(reply)
    if text[:1] in ("2", "3"):
        return "delivered"
    return "bounced" if text[:1] == "5" else "deferred"


def _ascii_name(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


class RemoteAgent:
    """The smtp / relay / lmtp delivery agent (see the module docstring).

    ``resolver``: the asyncio DNS resolver (default: from ``settings.dns``). ``policy``: the
    TLS policy source (default: the configured level alone). ``dane_check_for(host)`` returns
    the certificate check for a host whose policy level is "dane" (``StsDanePolicy.dane_check``
    fits); without it such hosts fail their TLS check. ``rng`` shuffles equal MX preferences.
    ``tls_outcome`` is told the TLS outcome of each new session to a recipient domain's MX
    host (RFC 8460 TLS-RPT; ``reports/tls_store.TlsRecorder`` records it).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        resolver: dns.asyncresolver.Resolver | None = None,
        policy: TLSPolicySource | None = None,
        dane_check_for: Callable[[str], DaneCheck] | None = None,
        rng: random.Random | None = None,
        routable6: Callable[[str], bool] = ipv6_routable,
        tls_outcome: Callable[[TlsOutcome], None] | None = None,
        sender_rewrite: Callable[[str, str], str] | None = None,
    ) -> None:
        self.settings = settings
        # (sender, queue id) -> the MAIL FROM to send: SRS (mailauth/srs.SrsRewriter).
        self._sender_rewrite = sender_rewrite
        delivery = settings.delivery
        self._resolver = resolver
        self._configured = ConfiguredPolicy(delivery.tls_security_level)
        self._policy: TLSPolicySource = policy if policy is not None else self._configured
        self._dane_check_for = dane_check_for
        self._rng = rng
        self._routable6 = routable6
        self._tls_outcome = tls_outcome
        self.helo_name = _ascii_name(delivery.helo_name or settings.server.hostname)
        self._local_names = frozenset(
            n.lower().rstrip(".") for n in (self.helo_name, settings.server.hostname) if n
        )
        ca_file = str(settings.path(delivery.tls_ca_file)) if delivery.tls_ca_file else ""
        self._client = ClientSettings(
            helo_name=self.helo_name,
            connect_timeout=delivery.connect_timeout_seconds,
            command_timeout=delivery.command_timeout_seconds,
            source_address=delivery.source_address,
            source_address6=delivery.source_address6,
            ca_file=ca_file,
        )
        self._idle: dict[_CacheKey, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._pace_locks: dict[str, asyncio.Lock] = {}
        self._pace_last: dict[str, float] = {}

    # -- the DeliverFn side --

    async def deliver(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        content: bytes,
        transport: Transport,
    ) -> list[Attempt]:
        """Try to hand ``content`` to the next hop of ``transport`` for ``recipients``;
        one ``Attempt`` per recipient, in the order given."""
        if not recipients:
            return []
        if transport.kind not in NETWORK_KINDS:
            reply = f"451 4.3.5 Transport {transport.kind!r} is not smtp, relay or lmtp"
            return [Attempt(r.address, "deferred", reply) for r in recipients]
        results: dict[int, Attempt] = {}
        problem = address_problem(envelope.sender)
        if problem:
            # RFC 3463 §3.2 X.1.7: bad sender's mailbox address syntax.
            reply = f"550 5.1.7 Sender address {envelope.sender!r} cannot be sent: {problem}"
            return [Attempt(r.address, "bounced", reply) for r in recipients]
        sendable: list[tuple[int, Recipient]] = []
        for index, rcpt in enumerate(recipients):
            problem = address_problem(rcpt.address) or ("" if rcpt.address else "it is empty")
            if problem:
                # RFC 3463 §3.2 X.1.3: bad destination mailbox address syntax.
                reply = f"550 5.1.3 Recipient address {rcpt.address!r} cannot be sent: {problem}"
                results[index] = Attempt(rcpt.address, "bounced", reply)
            else:
                sendable.append((index, rcpt))
        if sendable:
            attempts = await self._deliver_group(
                envelope, [r for _, r in sendable], content, transport
            )
            for (index, _), attempt in zip(sendable, attempts, strict=True):
                results[index] = attempt
        return [results[i] for i in range(len(recipients))]

    async def _deliver_group(
        self,
        envelope: Envelope,
        recipients: list[Recipient],
        content: bytes,
        transport: Transport,
    ) -> list[Attempt]:
        route = await self._route(envelope, recipients, transport)
        if isinstance(route, _NoRoute):
            log.info(
                "smtp_no_route",
                queue_id=envelope.queue_id,
                nexthop=str(transport),
                reply=route.reply,
            )
            return [Attempt(r.address, _outcome(route.reply), route.reply) for r in recipients]
        message = OutgoingMessage(
            queue_id=envelope.queue_id,
            sender=(
                self._sender_rewrite(envelope.sender, envelope.queue_id)
                if self._sender_rewrite is not None
                else envelope.sender
            ),
            recipients=tuple(
                RecipientSpec(
                    r.address,
                    tuple(r.notify),
                    r.orcpt or (f"rfc822;{r.original}" if r.original else ""),
                )
                for r in recipients
            ),
            content=content,
            body=envelope.body,
            smtputf8=envelope.smtputf8,
            requiretls=envelope.requiretls and not route.lmtp,
            ret=envelope.ret,
            envid=envelope.envid,
        )
        pace_key = f"{'lmtp' if route.lmtp else 'smtp'}:{route.domain}:{route.port}"
        async with self._paced(pace_key):
            return await self._try_hosts(envelope, message, route, transport.kind)

    # -- routing --

    def _uses_relayhost(self, transport: Transport, recipients: list[Recipient]) -> bool:
        """postconf(5) relayhost: the next hop of mail on the default route. An explicit next
        hop (a transport map entry with another host, brackets or a port) wins."""
        if transport.kind != "smtp" or not self.settings.delivery.relayhost:
            return False
        if not transport.mx_lookup or transport.port is not None:
            return False
        domains = {r.address.rpartition("@")[2].lower().rstrip(".") for r in recipients}
        return transport.nexthop == "" or domains == {transport.nexthop.lower().rstrip(".")}

    def _relay_credentials(self) -> Credentials | _NoRoute | None:
        delivery = self.settings.delivery
        if not delivery.relayhost_username or not delivery.relayhost_password_file:
            return None
        path = self.settings.path(delivery.relayhost_password_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return _NoRoute(
                f"451 4.3.5 Cannot read delivery.relayhost_password_file {path}: {reason}"
            )
        if not lines or not lines[0]:
            return _NoRoute(f"451 4.3.5 delivery.relayhost_password_file {path} is empty")
        return Credentials(delivery.relayhost_username, lines[0])

    async def _route(
        self, envelope: Envelope, recipients: list[Recipient], transport: Transport
    ) -> _Route | _NoRoute:
        delivery = self.settings.delivery
        lmtp = transport.kind == "lmtp"
        domain = recipients[0].address.rpartition("@")[2].lower().rstrip(".")
        if transport.unix_socket:
            path = transport.nexthop
            return _Route((MXHost(path, 0, (path,)),), 0, path, False, lmtp=lmtp, unix=True)
        credentials: Credentials | None = None
        implicit_tls = False
        min_level: Level = "none"
        if self._uses_relayhost(transport, recipients):
            try:
                relay = parse_transport(f"smtp:{delivery.relayhost}")
            except TransportError as exc:
                return _NoRoute(f"451 4.3.5 delivery.relayhost is not valid: {exc}")
            found = self._relay_credentials()
            if isinstance(found, _NoRoute):
                return found
            credentials = found
            nexthop, port, mx_lookup = relay.nexthop, relay.port or 25, relay.mx_lookup
            implicit_tls = port == IMPLICIT_TLS_PORT
            if port == SUBMISSION_PORT:
                min_level = "encrypt"  # submission (RFC 6409): STARTTLS required
        else:
            nexthop = transport.nexthop or domain
            default_port = LMTP_PORT if lmtp else delivery.smtp_port
            port = transport.port if transport.port is not None else default_port
            mx_lookup = transport.mx_lookup and not lmtp
        if not nexthop:
            return _NoRoute("451 4.3.5 No next hop for these recipients")
        resolver = self._dns()
        found_hosts: MXResult
        if mx_lookup:
            found_hosts = await resolve_mx(
                resolver,
                nexthop,
                max_hosts=delivery.max_mx_hosts,
                local_names=self._local_names,
                rng=self._rng,
                routable6=self._routable6,
            )
        else:
            found_hosts = await resolve_host(resolver, nexthop, routable6=self._routable6)
        for note in found_hosts.skipped:
            log.info("mx_skipped", queue_id=envelope.queue_id, domain=nexthop, detail=note)
        if not found_hosts.ok:
            return _NoRoute(found_hosts.error)
        return _Route(
            found_hosts.hosts,
            port,
            nexthop,
            mx_lookup,
            lmtp=lmtp,
            implicit_tls=implicit_tls,
            min_level=min_level,
            credentials=credentials,
        )

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            self._resolver = make_async_resolver(self.settings.dns)
        return self._resolver

    # -- trying the hosts --

    async def _floor(self, route: _Route) -> DomainPolicy:
        if route.lmtp or route.unix:
            return DomainPolicy("none")
        if route.mx:
            return await self._policy.domain_policy(route.domain)
        # A bracketed host or a relayhost is not an MX host of the recipient domain: its
        # MTA-STS policy does not apply (RFC 8461 §4.1 matches MX hosts).
        return DomainPolicy(self._configured.level)

    async def _host_tls(
        self, route: _Route, host: MXHost, floor: DomainPolicy, requiretls: bool
    ) -> HostTLS:
        if route.lmtp or route.unix:
            return HostTLS("none")
        found = await self._policy.host_tls(route.domain, host.name, route.port, floor)
        level = found.level
        for at_least in (floor.level, route.min_level):
            if LEVEL_ORDER[at_least] > LEVEL_ORDER[level]:
                level = at_least
        if requiretls and level not in ("verify", "dane"):
            # RFC 8689 §4: the server's certificate must be authenticated.
            level = "verify"
        return HostTLS(level, found.source, found.tlsa if level == "dane" else ())

    async def _try_hosts(
        self, envelope: Envelope, message: OutgoingMessage, route: _Route, kind: str
    ) -> list[Attempt]:
        recipients = message.recipients

        def everyone(reply: str, outcome: Outcome, remote: str = "") -> list[Attempt]:
            return [Attempt(r.address, outcome, reply, remote) for r in recipients]

        try:
            floor = await self._floor(route)
        except Exception as exc:  # a policy source failing must not lose the message
            log.exception("tls_policy_failed", queue_id=message.queue_id, domain=route.domain)
            return everyone(
                f"451 4.7.5 TLS policy lookup for {route.domain} failed: {exc}", "deferred"
            )
        hosts = list(route.hosts)
        if route.mx and floor.mx_patterns:
            refused = [h.name for h in hosts if not floor.mx_allowed(h.name)]
            if refused and floor.mode == "enforce":
                # RFC 8461 §5: in enforce mode, MX hosts the policy does not list are not used.
                hosts = [h for h in hosts if floor.mx_allowed(h.name)]
                log.info(
                    "mta_sts_skipped",
                    queue_id=message.queue_id,
                    domain=route.domain,
                    hosts=",".join(refused),
                )
            elif refused:
                log.warning(
                    "mta_sts_mismatch",
                    queue_id=message.queue_id,
                    domain=route.domain,
                    mode=floor.mode,
                    hosts=",".join(refused),
                )
        if not hosts:
            return everyone(
                f"451 4.7.5 The MTA-STS policy of {route.domain} lists none of its MX hosts",
                "deferred",
            )

        last: SessionFailure | None = None
        final: list[Attempt] = []  # from hosts tried before, for recipients now done with
        soft: list[Attempt] = []  # a host's 4xx for the recipients still to try
        for number, host in enumerate(hosts, 1):
            try:
                host_tls = await self._host_tls(route, host, floor, message.requiretls)
            except Exception as exc:  # e.g. a DANE lookup failure: RFC 7672 §2.2, next host
                last = SessionFailure(f"451 4.7.5 TLS policy lookup for {host.name} failed: {exc}")
                log.info(
                    "smtp_attempt",
                    queue_id=message.queue_id,
                    transport=kind,
                    host=host.name,
                    ip="",
                    tls="none",
                    tls_verified="none",
                    reply=last.reply,
                )
                continue
            for address in host.addresses:
                endpoint = Endpoint(host.name, address, route.port, route.unix)
                outcome = await self._try_endpoint(message, route, kind, endpoint, host_tls, floor)
                if isinstance(outcome, list):
                    soft = [a for a in outcome if a.outcome == "deferred"]
                    if not soft or number == len(hosts):
                        return final + outcome
                    # A temporary refusal of some recipients (RCPT, or the reply to the
                    # final dot): they are tried at the next MX host now, as Postfix's smtp
                    # does (RFC 5321 §5.1: the other hosts are there to take the mail).
                    final += [a for a in outcome if a.outcome != "deferred"]
                    again = {a.recipient_address for a in soft}
                    message = dataclasses.replace(
                        message,
                        recipients=tuple(r for r in message.recipients if r.address in again),
                    )
                    recipients = message.recipients
                    break
                last = outcome.failure
                if last.scope == "final":
                    remote = host.name if outcome.answered else ""
                    if soft:  # an earlier host's 4xx says more than this host's refusal
                        return final + soft
                    return final + everyone(last.reply, _outcome(last.reply), remote)
                if outcome.answered:
                    break  # the host answered: its other addresses would answer the same
        if soft:
            return final + soft
        assert last is not None
        if last.scope == "bounce_if_last" and last.permanent:
            return final + everyone(last.reply, "bounced")
        return final + everyone(last.reply, "deferred")

    async def _try_endpoint(
        self,
        message: OutgoingMessage,
        route: _Route,
        kind: str,
        endpoint: Endpoint,
        host_tls: HostTLS,
        floor: DomainPolicy,
    ) -> list[Attempt] | _Failed:
        """One address: the attempts when a transaction ran, else why not."""
        user = route.credentials.username if route.credentials else ""
        key: _CacheKey = (route.lmtp, endpoint, host_tls.level, route.implicit_tls, user)
        session = await self._take(key)
        reused = session is not None
        if session is None:
            dane_check = None
            if host_tls.level == "dane" and self._dane_check_for is not None:
                dane_check = self._dane_check_for(endpoint.host)
            try:
                session = await ClientSession.open(
                    endpoint,
                    self._client_for(route),
                    host_tls,
                    dane_check=dane_check,
                    credentials=route.credentials,
                    implicit_tls=route.implicit_tls,
                    requiretls=message.requiretls,
                    queue_id=message.queue_id,
                )
            except SessionFailure as failure:
                self._log(message, kind, endpoint, failure.tls, failure.reply, reused=False)
                self._tls_seen(route, endpoint, host_tls, floor, failure.reply, failure.tls)
                return _Failed(failure, answered=False)
            self._tls_seen(route, endpoint, host_tls, floor, "", session.tls)
        try:
            result = await session.send(message)
        except SessionFailure as failure:
            self._log(message, kind, endpoint, failure.tls, failure.reply, reused=reused)
            if failure.reusable and session.usable:
                self._keep(key, session)
            else:
                session.close()
            return _Failed(failure, answered=True)
        except BaseException:
            session.close()  # a bug or a cancellation: never leave the socket behind
            raise
        attempts = [
            Attempt(spec.address, _outcome(reply), reply.text, endpoint.host)
            for spec, reply in zip(message.recipients, result.replies, strict=True)
        ]
        self._log(
            message,
            kind,
            endpoint,
            session.tls,
            result.reply.text,
            reused=reused,
            delivered=sum(a.outcome == "delivered" for a in attempts),
            deferred=sum(a.outcome == "deferred" for a in attempts),
            bounced=sum(a.outcome == "bounced" for a in attempts),
        )
        if session.usable:
            self._keep(key, session)
        else:
            session.close()
        return attempts

    def _tls_seen(
        self,
        route: _Route,
        endpoint: Endpoint,
        host_tls: HostTLS,
        floor: DomainPolicy,
        failure: str,
        tls: TLSState,
    ) -> None:
        """Tell ``tls_outcome`` how TLS went on a new session to an MX host of the recipient
        domain (RFC 8460 §4: reports count sessions; a relayhost or LMTP is no MX host)."""
        if self._tls_outcome is None or not route.mx or host_tls.level == "none":
            return
        if failure:
            result_type = classify_failure(failure)
            if result_type is None:
                return  # no TLS was negotiated (connection refused, greeting refused...)
        elif tls.version:
            result_type = ""
        else:
            # Opportunistic TLS ended in plain text (STARTTLS not offered, or refused).
            result_type = "starttls-not-supported"  # RFC 8460 §4.3.1
        # RFC 8460 §4.4 policy-type and policy-string: DANE where it applied, else MTA-STS.
        policy_type: PolicyType = "no-policy-found"
        policy: tuple[str, ...] = ()
        if host_tls.level == "dane" and host_tls.tlsa:
            policy_type = "tlsa"
            policy = tlsa_policy_string(
                (r.usage, r.selector, r.mtype, r.data) for r in host_tls.tlsa
            )
        elif floor.source == "mta-sts":
            policy_type = "sts"
            policy = sts_policy_string(floor.mode, floor.mx_patterns)
        delivery = self.settings.delivery
        source = delivery.source_address6 if ":" in endpoint.address else delivery.source_address
        try:
            self._tls_outcome(
                TlsOutcome(
                    route.domain,
                    policy_type,
                    policy,
                    endpoint.host,
                    endpoint.address,
                    source,
                    result_type,
                    failure,
                )
            )
        except Exception:  # a report is never worth a delivery
            log.exception("tls_outcome_failed", domain=route.domain, host=endpoint.host)

    def _client_for(self, route: _Route) -> ClientSettings:
        if not route.lmtp:
            return self._client
        return dataclasses.replace(self._client, lmtp=True)

    def _log(
        self,
        message: OutgoingMessage,
        kind: str,
        endpoint: Endpoint,
        tls: TLSState,
        reply: str,
        *,
        reused: bool,
        **counts: int,
    ) -> None:
        log.info(
            "smtp_attempt",
            queue_id=message.queue_id,
            transport=kind,
            host=endpoint.host,
            ip=str(endpoint),
            tls=tls.shown,
            tls_verified=tls.verified,
            reused=reused,
            reply=reply,
            **counts,
        )

    # -- the connection cache --

    async def _take(self, key: _CacheKey) -> ClientSession | None:
        entries = self._idle.get(key)
        while entries:
            entry = entries.pop()
            if not entries:
                del self._idle[key]
            if entry.timer is not None:
                entry.timer.cancel()
            if time.monotonic() - entry.session.opened_at > REUSE_TIME_LIMIT_SECONDS:
                self._quit_later(entry.session)
            elif await entry.session.reset():
                return entry.session
            entries = self._idle.get(key)
        return None

    def _keep(self, key: _CacheKey, session: ClientSession) -> None:
        seconds = self.settings.delivery.connection_cache_seconds
        too_old = time.monotonic() - session.opened_at > REUSE_TIME_LIMIT_SECONDS
        if self._closed or seconds <= 0 or too_old or not session.usable:
            self._quit_later(session)
            return
        entry = _Idle(session)
        entry.timer = asyncio.get_running_loop().call_later(seconds, self._expire, key, entry)
        self._idle.setdefault(key, []).append(entry)

    def _expire(self, key: _CacheKey, entry: _Idle) -> None:
        entries = self._idle.get(key, [])
        if entry in entries:
            entries.remove(entry)
            if not entries:
                del self._idle[key]
            self._quit_later(entry.session)

    def _quit_later(self, session: ClientSession) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def idle_sessions(self) -> int:
        """Sessions kept open in the cache right now."""
        return sum(len(entries) for entries in self._idle.values())

    async def close(self) -> None:
        """Close every cached session (QUIT) and wait for the closing ones."""
        self._closed = True
        for entries in self._idle.values():
            for entry in entries:
                if entry.timer is not None:
                    entry.timer.cancel()
                self._quit_later(entry.session)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    # -- pacing --

    @contextlib.asynccontextmanager
    async def _paced(self, key: str) -> AsyncIterator[None]:
        """postconf(5) destination_rate_delay: one delivery at a time to the destination,
        this long apart."""
        delay = self.settings.delivery.destination_rate_delay_seconds
        if delay <= 0:
            yield
            return
        if len(self._pace_locks) > _PACING_ENTRIES:
            now = time.monotonic()
            for old in [
                k
                for k, lock in self._pace_locks.items()
                if not lock.locked() and self._pace_last.get(k, -math.inf) + delay < now
            ]:
                del self._pace_locks[old]
                self._pace_last.pop(old, None)
        lock = self._pace_locks.setdefault(key, asyncio.Lock())
        async with lock:
            wait = self._pace_last.get(key, -math.inf) + delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._pace_last[key] = time.monotonic()
