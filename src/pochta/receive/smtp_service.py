"""The SMTP, submission and LMTP listeners: one loop per connection, read → feed → act → write.

The protocol lives in ``pochta.protocols.smtp``; this module decides: who may relay, who may
send as whom, which recipients exist, and when a message is safe on disk (only then 250).
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import dns.asyncresolver

from pochta.directory.sasl import Success, server_mechanism
from pochta.directory.sasl_exchange import (
    Authenticated,
    Failed,
    Resolve,
    SaslExchange,
    SendChallenge,
)
from pochta.dns.async_resolver import ResolverConfigError, make_async_resolver
from pochta.logs import get_logger
from pochta.mime.headers import leading_fields
from pochta.netaddr import is_loopback
from pochta.protocols.smtp import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    Event,
    Helo,
    MailFrom,
    MessageData,
    Quit,
    RcptTo,
    Reset,
    SMTPServerConnection,
    StartTLS,
    State,
)
from pochta.protocols.smtp import replies as R
from pochta.protocols.smtp.replies import Reply
from pochta.queue.base import SpoolError, SpoolFull, required_free_bytes
from pochta.queue.envelope import Envelope, Recipient
from pochta.quick_ack import ack_now
from pochta.receive.client_name import NameCache, system_client_name, verified_client_name
from pochta.receive.policy import Findings, PolicyRequest, check_policies
from pochta.resolve.classes import MailboxDest
from pochta.tls.streams import reloadable_tls_context, upgrade_to_tls

if TYPE_CHECKING:
    from pochta.cleanup.verdict import Verdict
    from pochta.runtime import MailRuntime, SessionRuntime

log = get_logger("smtpd")

Mode = Literal["mx", "submission", "lmtp"]
READ_CHUNK = 65536
MAX_FROM_HEADER_SCAN = 1 << 20
# RFC 5322 §2.2.3: unfolding removes each line break (the final one too).
_UNFOLD = re.compile(rb"\r?\n")

TOO_MANY_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_AUTH_FAILURES = Reply(
    421, "4.7.0", "Authentication credentials invalid; too many failures, closing connection"
)


def header_from_addresses(content: bytes) -> list[str]:
    """The addresses of every From field of the message's header block (within its first
    MAX_FROM_HEADER_SCAN bytes; cleanup refuses a longer block), as ``mime.headers`` splits
    it: the block ends at the empty line or at the first line that is no field (RFC 5322
    §2.2), fields are unfolded (§2.2.3), CRLF and bare LF both end a line."""
    values = [
        _UNFOLD.sub(b"", field.value).decode("utf-8", "replace")
        for field in leading_fields(content, MAX_FROM_HEADER_SCAN)
        if field.key == "from"
    ]
    return [addr for _, addr in email.utils.getaddresses(values) if addr]


@dataclass
class _Transaction:
    sender: str = ""
    params: dict[str, str | None] = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)
    findings: Findings = field(default_factory=Findings)  # what the policies found (SPF)


class SMTPService:
    """One listener: ``mode`` decides the policy (MX, submission, LMTP)."""

    def __init__(
        self, server: SessionRuntime, listener: str, mode: Mode, *, implicit_tls: bool
    ) -> None:
        self.server = server
        self.name = listener
        self.mode = mode
        # Loaded now, before the privilege drop: the key file is root's.
        self.tls = None if mode == "lmtp" else reloadable_tls_context(server)
        if implicit_tls and self.tls is None:
            raise RuntimeError(f"listen.{listener} needs a TLS certificate; see tls.cert_file")
        self.ssl_context = self.tls if implicit_tls else None
        self._dns: dns.asyncresolver.Resolver | None = None
        self._dns_settings: object = None
        self.names = NameCache()  # the system resolver's answers (client_name.py)

    @property
    def dns(self) -> dns.asyncresolver.Resolver | None:
        """The resolver for client names (made at first use from ``[dns]``, again when a
        reload changed ``[dns]``); None when ``[dns]`` cannot make one (``pochta check``
        says why)."""
        wanted = self.server.settings.dns
        if self._dns is None or self._dns_settings != wanted:
            self._dns_settings = wanted
            try:
                self._dns = make_async_resolver(wanted)
            except ResolverConfigError as exc:
                self._dns = None
                log.warning("client_name_lookup_off", listener=self.name, reason=str(exc))
        return self._dns

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"  # unix socket: local
        # smtp.max_connections and max_connections_per_ip, over every process (server/app.py).
        refused = self.server.refusal(self.name, ip)
        if refused is not None:
            # RFC 5321 §3.8: 421 instead of the greeting; the client tries again later.
            writer.write(
                (TOO_MANY_FROM_IP if refused == "per_ip" else TOO_MANY_CONNECTIONS).encode()
            )
            await writer.drain()
            log.warning("too_many_connections", listener=self.name, client=ip, limit=refused)
            return
        await _Session(self, reader, writer, ip).run()


class _Session:
    def __init__(
        self,
        service: SMTPService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ip: str,
    ) -> None:
        self.service = service
        self.server = service.server
        self.reader = reader
        self.writer = writer
        self._socket = writer.get_extra_info("socket")
        self.ip = ip
        self.mode = service.mode
        s = self.server.settings
        self.tls_active = service.ssl_context is not None
        submission = self.mode == "submission"
        self.conn = SMTPServerConnection(
            hostname=s.server.hostname,
            settings=s.smtp,
            lmtp=self.mode == "lmtp",
            tls_active=self.tls_active,
            tls_available=service.tls is not None and not self.tls_active,
            auth_mechanisms=("PLAIN", "LOGIN", "SCRAM-SHA-256") if submission else (),
            auth_requires_tls=not (s.auth.allow_plaintext_on_loopback and is_loopback(ip)),
            require_auth=submission,
        )
        self.auth_user = ""
        self.sasl: SaslExchange | None = None
        self.helo = ""
        self.client_hostname = ""  # forward-confirmed reverse DNS name, "" when unknown
        self.txn = _Transaction()
        self.messages = 0
        self.auth_failures = 0

    @property
    def mail(self) -> MailRuntime:
        mail = self.server.mail
        assert mail is not None
        return mail

    async def run(self) -> None:
        s = self.server.settings
        started = time.monotonic()
        await self._look_up_client_name()
        log.info(
            "connect",
            listener=self.service.name,
            client=self.ip,
            client_name=self.client_hostname or "unknown",
        )
        # When the first byte of a command line not yet ended arrived (None: no such line).
        # A line must end within smtp.command_timeout_seconds: bytes trickling in one at a
        # time reset the idle timer but not this one (RFC 5321 §4.5.3.2.7: the server waits
        # 5 minutes for a command; here for the whole line, not for each read). Message
        # content has only the idle timer per read and the session timer.
        line_started: float | None = None
        self.conn.greet(Reply(220, "", f"{s.server.hostname} ESMTP pochta"))
        try:
            await self._flush()
            while not self.conn.closed:
                s = self.server.settings
                now = time.monotonic()
                timers = {
                    "idle": float(s.smtp.idle_timeout_seconds),
                    "session": s.smtp.session_timeout_seconds - (now - started),
                }
                if line_started is not None:
                    timers["command"] = s.smtp.command_timeout_seconds - (now - line_started)
                timer = min(timers, key=timers.__getitem__)
                if line_started is not None or self.conn.state in (State.DATA, State.BDAT):
                    # More of a line or of the message is to come: ACK what came now, or a
                    # client that writes the content and its end in two writes waits 40 ms
                    # for the kernel's delayed ACK (quick_ack.py; Postfix waits too).
                    ack_now(self._socket)
                try:
                    async with asyncio.timeout(max(timers[timer], 0)):
                        data = await self.reader.read(READ_CHUNK)
                except TimeoutError:
                    log.info("timeout", client=self.ip, timer=timer)
                    self.conn.timeout()  # RFC 5321 §4.5.3.2: 421 4.4.2
                    await self._flush()
                    break
                read_at = time.monotonic()
                if self.server.stopping.is_set() and not data:
                    break
                self.conn.receive_data(data)
                while True:
                    event = self.conn.next_event()
                    if event is NEED_DATA:
                        break
                    assert isinstance(event, Event)
                    await self._act(event)
                    if self.conn.pending is None:
                        await self._flush()
                await self._flush()
                if not data:
                    break
                if self.conn.state in (State.DATA, State.BDAT) or data.endswith(b"\n"):
                    line_started = None  # message content, or every line ended
                elif line_started is None:
                    line_started = read_at
        finally:
            log.info(
                "disconnect",
                listener=self.service.name,
                client=self.ip,
                messages=self.messages,
                user=self.auth_user or None,
            )

    async def _look_up_client_name(self) -> None:
        """Postfix's client_name, once per connection before the greeting (as smtpd does):
        the PTR name of the IP when its forward lookup confirms it (receive/client_name.py).
        LMTP clients are our own MTAs: not looked up."""
        s = self.server.settings.smtp
        if self.mode == "lmtp" or not s.peername_lookup:
            return
        if not self.server.settings.dns.nameservers:  # the system's resolver, as Postfix
            self.client_hostname = await system_client_name(
                self.ip, timeout_seconds=s.peername_lookup_timeout_seconds, cache=self.service.names
            )
            return
        resolver = self.service.dns
        if resolver is None:
            return
        self.client_hostname = await verified_client_name(
            resolver, self.ip, timeout_seconds=s.peername_lookup_timeout_seconds
        )

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    # -- events ----------------------------------------------------------------------------

    async def _act(self, event: Event) -> None:
        if not event.needs_reply:
            if isinstance(event, Reset | Quit):
                self.txn = _Transaction()
            if isinstance(event, Quit):
                # The core has queued 221; before it goes out, the connection stops counting
                # toward the connection limits (a client may reconnect the moment it reads it).
                self.server.connection_quit()
            return
        try:
            if isinstance(event, Helo):
                self.helo = event.name
                self.conn.send_reply(R.OK)
            elif isinstance(event, StartTLS):
                await self._starttls()
            elif isinstance(event, AuthStart):
                await self._auth_start(event)
            elif isinstance(event, AuthResponse):
                await self._auth_response(event)
            elif isinstance(event, MailFrom):
                self.conn.send_reply(await self._mail_from(event))
            elif isinstance(event, RcptTo):
                self.conn.send_reply(await self._rcpt_to(event))
            elif isinstance(event, MessageData):
                await self._message(event)
            else:  # pragma: no cover - every event that needs a reply is handled above
                self.conn.send_reply(R.NOT_IMPLEMENTED)
        except R.ReplyError as exc:
            self.conn.send_reply(exc.reply)

    async def _starttls(self) -> None:
        tls = self.service.tls
        if tls is None or self.tls_active:
            self.conn.send_reply(R.TLS_UNAVAILABLE)
            return
        self.conn.send_reply(R.SERVICE_READY_TLS)
        await self._flush()
        if not await upgrade_to_tls(self.reader, self.writer, tls, self.ip, log):
            self.conn.receive_data(b"")
            return
        self.tls_active = True
        self.conn.tls_started()

    # -- AUTH (RFC 4954) --------------------------------------------------------------------

    async def _auth_start(self, event: AuthStart) -> None:
        try:
            self.sasl = SaslExchange(server_mechanism(event.mechanism))
        except ValueError:
            self.conn.send_reply(Reply(504, "5.5.4", "Unrecognized authentication type"))
            return
        await self._auth_step(self.sasl.start(event.initial_response))

    async def _auth_response(self, event: AuthResponse) -> None:
        # The core answered "*" and bad base64 itself (RFC 4954 §4).
        if self.sasl is None or self.sasl.finished:
            self.conn.send_reply(R.BAD_SEQUENCE)
            return
        await self._auth_step(self.sasl.answer(event.data))

    async def _auth_step(self, action: Resolve | SendChallenge | Authenticated | Failed) -> None:
        sasl = self.sasl
        assert sasl is not None
        action = await self.mail.authenticator.settle(self.ip, sasl, action)
        if isinstance(action, SendChallenge):
            self.conn.auth_challenge(action.data)  # RFC 4954 §4: 334 base64
        elif isinstance(action, Authenticated):
            self._authenticated(action.success)
        elif isinstance(action, Failed):
            reason = action.reason
            log.info("auth_failed", client=self.ip, mechanism=sasl.mechanism.name, reason=reason)
            self.sasl = None
            self.auth_failures += 1
            if self.auth_failures >= self.server.settings.smtp.max_auth_failures:
                # Dovecot's login processes close after 3 failures; Postfix has only its
                # error limit (smtpd_hard_error_limit). RFC 5321 §3.8: 421 closes.
                log.warning("too_many_auth_failures", client=self.ip, failures=self.auth_failures)
                self.conn.send_reply(TOO_MANY_AUTH_FAILURES)
                return
            self.conn.send_reply(R.AUTH_FAILED)

    def _authenticated(self, success: Success) -> None:
        self.auth_user = success.authcid
        self.sasl = None
        log.info("auth", client=self.ip, user=self.auth_user)
        self.conn.send_reply(R.AUTH_OK)

    # -- the transaction --------------------------------------------------------------------

    async def _mail_from(self, event: MailFrom) -> Reply:
        s = self.server.settings
        if (
            self.mode == "submission"
            and s.smtp.sender_login_mismatch == "reject"
            and event.address
            and not self.mail.resolver.sender_allowed(self.auth_user, event.address)
        ):
            log.info(
                "rejected",
                client=self.ip,
                stage="mail",
                sender=event.address,
                user=self.auth_user,
                reason="sender_login_mismatch",
            )
            return Reply(
                553,
                "5.7.1",
                f"<{event.address}>: Sender address not owned by user {self.auth_user}",
            )
        refusal = self._storage_refusal(event)
        findings = Findings()  # this transaction's: the policies fill it, cleanup reads it
        if refusal is None:
            refusal = await self._policy_refusal("mail", event.address, findings=findings)
        if refusal is not None:
            return refusal
        self.txn = _Transaction(sender=event.address, params=dict(event.params), findings=findings)
        return R.SENDER_OK

    async def _policy_refusal(
        self,
        stage: Literal["mail", "rcpt"],
        sender: str,
        recipient: str = "",
        *,
        findings: Findings,
    ) -> Reply | None:
        """The recipient policies (receive/policy.py) after the built-in checks passed;
        LMTP does not ask them."""
        policies = self.mail.policies
        if self.mode == "lmtp" or not policies:
            return None
        request = PolicyRequest(
            stage=stage,
            listener=self.service.name,
            client_ip=self.ip,
            client_hostname=self.client_hostname,
            helo=self.helo,
            auth_user=self.auth_user,
            sender=sender,
            recipient=recipient,
            findings=findings,
        )
        reply = await check_policies(policies, request)
        if reply is not None:
            log.info(
                "rejected",
                client=self.ip,
                stage=stage,
                sender=sender or "<>",
                to=recipient or None,
                reply=str(reply),
                reason="policy",
            )
        return reply

    def _storage_refusal(self, event: MailFrom) -> Reply | None:
        """Postfix queue_minfree: refuse at MAIL FROM, before the client sends the message,
        when the spool's file system has too little room (``required_free_bytes``). LMTP
        writes to the mailboxes, not to the spool: not checked here."""
        if self.mode == "lmtp":
            return None
        s = self.server.settings
        raw_size = event.params.get("SIZE")
        size = int(raw_size) if raw_size and raw_size.isdigit() else 0  # RFC 1870 §6.1
        needed = required_free_bytes(
            min_free_bytes=s.queue.min_free_bytes,
            max_message_bytes=s.smtp.max_message_bytes,
            size=size,
        )
        space = self.mail.spool.free_space
        if space.shortfall(needed) == 0:
            return None
        log.warning(
            "rejected",
            client=self.ip,
            stage="mail",
            sender=event.address or "<>",
            reason="insufficient_storage",
            free_bytes=space.free_bytes(),
            needed_bytes=needed,
            spool=str(space.path),
        )
        # RFC 1870 §6.1 and RFC 5321 §4.2.3: 452 (try later); RFC 3463 §3.4: 4.3.1 system full.
        return R.INSUFFICIENT_STORAGE

    async def _rcpt_to(self, event: RcptTo) -> Reply:
        address = event.address
        if address.lower() == "postmaster":  # RFC 5321 §4.1.1.3
            address = f"postmaster@{self.server.settings.server.hostname}"
        size = 0
        raw_size = self.txn.params.get("SIZE")
        if raw_size and raw_size.isdigit():
            size = int(raw_size)
        # Canonical mapping first (recipient_canonical_maps, then canonical_maps, the
        # function cleanup applies to the envelope): the address judged here is the one
        # that will be delivered to, so RCPT TO and delivery agree.
        mapped = self.mail.door.canonical_recipient(address)
        reply = self._recipient_refusal(address, mapped, size)
        if reply is not None:
            log.info(
                "rejected",
                client=self.ip,
                stage="rcpt",
                to=address,
                mapped_to=mapped if mapped != address else None,
                sender=self.txn.sender or "<>",
                reply=str(reply),
            )
            return reply
        refusal = await self._policy_refusal(
            "rcpt", self.txn.sender, address, findings=self.txn.findings
        )
        if refusal is not None:
            return refusal
        notify = tuple(n for n in (event.params.get("NOTIFY") or "").split(",") if n)
        self.txn.recipients.append(
            Recipient(address=address, orcpt=event.params.get("ORCPT") or "", notify=notify)
        )
        return R.RECIPIENT_OK

    def _recipient_refusal(self, address: str, mapped: str, size: int) -> Reply | None:
        """The built-in RCPT TO checks of ``address``, which canonical maps rewrite to
        ``mapped``; None to accept.

        postconf(5) smtpd_reject_unlisted_recipient: "An address is always considered
        'known' when it matches a virtual(5) alias or a canonical(5) mapping". Postfix then
        accepts the key whatever it maps to, and an unknown result bounces after the queue.
        Deviation: here the result is resolved at RCPT too (unknown user 550 5.1.1, quota,
        LMTP's mailboxes only), so no bounce is owed later (no backscatter). The relay
        permission (reject_unauth_destination) stays judged on the address as given, as in
        Postfix's smtpd, before cleanup rewrites it: a key in one of our domains may map to
        another host, a key in another domain relays only for an authenticated client.
        """
        resolver = self.mail.resolver
        authenticated = bool(self.auth_user)
        judged = address
        if mapped != address:
            domain = address.rpartition("@")[2] or self.server.settings.server.hostname
            try:
                ours = resolver.is_ours(domain)
            except ValueError:  # not a domain: check_recipient of ``address`` says so
                ours = False
            if ours or authenticated:
                judged, authenticated = mapped, True
        reply = resolver.check_recipient(
            judged,
            authenticated=authenticated,
            quota_check=lambda account: self.mail.mailbox.quota_reply(account, size),
        )
        if reply is None and self.mode == "lmtp":
            # LMTP is final delivery (RFC 2033): every recipient must be a mailbox here.
            dests = resolver.resolve(judged).deliverable
            if not dests or not all(isinstance(d, MailboxDest) for d in dests):
                reply = Reply(550, "5.1.1", f"<{judged}>: not a local mailbox")
        if reply is not None and judged != address:
            text = f"<{address}> is rewritten by canonical maps to <{mapped}>: {reply.text}"
            reply = Reply(reply.code, reply.enhanced, text)
        return reply

    async def _message(self, event: MessageData) -> None:
        from pochta.cleanup.pipeline import CleanupInput

        queue_id = self.mail.door.new_queue_id()  # delivered by this process
        txn, self.txn = self.txn, _Transaction()
        nrcpt = len(txn.recipients)
        if self.mode == "submission":
            problem = self._from_header_problem(event.content)
            if problem is not None:
                self._reply_all(problem, nrcpt)
                return
        obj = self.writer.get_extra_info("ssl_object") if self.tls_active else None
        info = CleanupInput(
            sender=txn.sender,
            recipients=[r.address for r in txn.recipients],
            client_ip=self.ip,
            client_hostname=self.client_hostname,
            helo=self.helo,
            protocol=self._protocol(),
            tls_version=obj.version() or "" if obj else "",
            tls_cipher=obj.cipher()[0] if obj and obj.cipher() else "",
            auth_user=self.auth_user,
            queue_id=queue_id,
            submission=self.mode == "submission",
            from_mx=self.mode == "mx",
            spf=txn.findings.spf,
        )
        result = await self.mail.door.clean(event.content, info)
        if result.reply is not None and not result.accepted:
            log.info(
                "rejected", queue_id=queue_id, client=self.ip, stage="data", reply=str(result.reply)
            )
            self._reply_all(result.reply, nrcpt)
            return
        recipients = [
            Recipient(address=addr, orcpt=r.orcpt, notify=r.notify, original=r.address)
            for addr, r in zip(result.recipients, txn.recipients, strict=True)
        ]
        if result.verdict.action == "discard":
            # Postfix DISCARD: the client is told the mail was accepted; it is dropped here.
            log.info("discarded", queue_id=queue_id, client=self.ip, reason=result.verdict.reason)
            self.messages += 1
            self._reply_all(Reply(250, "2.0.0", f"Ok: discarded as {queue_id}"), nrcpt)
            return
        if self.mode == "lmtp":
            await self._deliver_lmtp(
                queue_id, result.sender, recipients, result.content, result.verdict
            )
            return
        envelope = Envelope(
            queue_id=queue_id,
            sender=result.sender,
            recipients=recipients,
            arrival=time.time(),
            size=len(result.content),
            ret=_ret(txn.params.get("RET")),
            envid=txn.params.get("ENVID") or "",
            smtputf8="SMTPUTF8" in txn.params,
            body=_body(txn.params.get("BODY")),
            client_ip=self.ip,
            client_helo=self.helo,
            client_hostname=self.client_hostname,
            auth_user=self.auth_user,
            protocol=info.protocol,
            verdict=result.verdict,
        )
        try:
            queue_id = await self.mail.door.submit(envelope, result.content)
        except R.ReplyError as exc:  # the door's refusal (backscatter rule, cleanup/door.py)
            self._reply_all(exc.reply, nrcpt)
            return
        except SpoolFull as exc:
            log.warning(
                "queue_write_failed",
                queue_id=exc.queue_id or queue_id,
                client=self.ip,
                path=exc.path,
                error="no space left on device",
            )
            self.conn.send_reply(R.INSUFFICIENT_STORAGE)
            return
        except (OSError, SpoolError) as exc:
            log.error("queue_write_failed", queue_id=queue_id, client=self.ip, error=str(exc))
            self.conn.send_reply(R.TEMPORARY_FAILURE)
            return
        self.messages += 1
        self.conn.send_reply(Reply(250, "2.0.0", f"Ok: queued as {queue_id}"))

    async def _deliver_lmtp(
        self,
        queue_id: str,
        sender: str,
        recipients: list[Recipient],
        content: bytes,
        verdict: Verdict,
    ) -> None:
        replies = []
        agent = self.mail.mailbox
        for rcpt in recipients:
            dests = self.mail.resolver.resolve(rcpt.address).deliverable
            reply = R.OK
            for dest in dests:
                assert isinstance(dest, MailboxDest)
                if dest.mailbox_path:  # a virtual_mailbox_maps mailbox (virtual(8))
                    done = await agent.deliver_table_mailbox(
                        queue_id=queue_id,
                        sender=sender,
                        recipient=rcpt.address,
                        path=dest.mailbox_path,
                        content=content,
                    )
                else:
                    done = await agent.deliver(
                        queue_id=queue_id,
                        sender=sender,
                        recipient=rcpt.address,
                        account=dest.account,
                        content=content,
                        verdict_folder=verdict.delivery_folder,
                        extension=dest.extension,
                        verdict=verdict,
                        original_recipient=rcpt.original,
                        client_ip=self.ip,
                        client_host=self.client_hostname,  # RFC 5183 remote-host: verified only
                        auth_user=self.auth_user,
                        lmtp=True,  # RFC 5429 §2.1: ereject refuses in the LMTP reply
                    )
                log.info(
                    "delivery",
                    queue_id=queue_id,
                    to=rcpt.address,
                    relay="lmtp",
                    status=done.outcome,
                    reply=str(done.reply),
                )
                if not done.reply.is_positive:
                    reply = done.reply
                    break
                reply = done.reply
            replies.append(reply)
        self.messages += 1
        self.conn.send_replies(replies)

    def _reply_all(self, reply: Reply, nrcpt: int) -> None:
        if self.mode == "lmtp":
            self.conn.send_replies([reply] * max(nrcpt, 1))
        else:
            self.conn.send_reply(reply)

    def _from_header_problem(self, content: bytes) -> Reply | None:
        """Submission: every From header address must belong to the account (RFC 6409 §8,
        Postfix reject_sender_login_mismatch applied to the header as well)."""
        if self.server.settings.smtp.sender_login_mismatch != "reject":
            return None
        for addr in header_from_addresses(content):
            if not self.mail.resolver.sender_allowed(self.auth_user, addr):
                log.info(
                    "rejected",
                    client=self.ip,
                    stage="data",
                    header_from=addr,
                    user=self.auth_user,
                    reason="sender_login_mismatch",
                )
                return Reply(553, "5.7.1", f"From: <{addr}> is not owned by user {self.auth_user}")
        return None

    def _protocol(self) -> str:
        # RFC 3848 "with" keywords.
        if self.mode == "lmtp":
            return "LMTP"
        proto = "ESMTP" if self.conn.extended else "SMTP"
        if self.tls_active:
            proto += "S"
        if self.auth_user:
            proto += "A"
        return proto


def _ret(value: str | None) -> Literal["FULL", "HDRS", ""]:
    return "FULL" if value == "FULL" else "HDRS" if value == "HDRS" else ""


def _body(value: str | None) -> Literal["7BIT", "8BITMIME", "BINARYMIME"]:
    if value in ("8BITMIME", "BINARYMIME"):
        return value  # type: ignore[return-value]
    return "7BIT"


def smtp(server: SessionRuntime, listener: str) -> SMTPService:
    return SMTPService(server, listener, "mx", implicit_tls=False)


def submission(server: SessionRuntime, listener: str) -> SMTPService:
    return SMTPService(server, listener, "submission", implicit_tls=False)


def submissions(server: SessionRuntime, listener: str) -> SMTPService:
    return SMTPService(server, listener, "submission", implicit_tls=True)


def lmtp(server: SessionRuntime, listener: str) -> SMTPService:
    return SMTPService(server, listener, "lmtp", implicit_tls=False)
