"""A small authoritative DNS server on loopback, serving one dnspython zone over UDP and TCP.

Used by tests that need real DNS answers (``pochta dns --check``, SPF, DKIM, DMARC, MTA-STS)
without touching the network::

    with ZoneServer(zone_text, origin=".") as server:
        resolver = server.resolver()
        ...
        server.load(changed_zone_text)  # swap the data while running

Origin "." accepts any absolute names, so one server can hold example.test, its reverse
names and other domains together. Answers are authoritative (AA): the records of the name
(following CNAMEs inside the zone), NOERROR with no answer when the name exists without that
type (or is an empty non-terminal), NXDOMAIN otherwise, with the zone's SOA in the authority
section when there is one (RFC 2308 §3). UDP answers larger than the client's limit come back
truncated (TC) so that the client retries over TCP (RFC 1035 §4.2.1, RFC 7766).

``ZoneServer(..., authenticated=True)`` plays a trusted DNSSEC-validating resolver (DANE
tests): answers carry the AD flag when the query asked for DNSSEC with DO or AD (RFC 6840
§5.7-5.8). ``authenticated`` may instead be a function of (name, type), e.g. to make one
host's records insecure; the attribute can be changed while the server runs.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.resolver
import dns.rrset
import dns.zone

_UDP_DEFAULT_SIZE = 512  # RFC 1035 §4.2.1, without EDNS
_MAX_CNAME_CHAIN = 8


R = TypeVar("R", bound=dns.resolver.BaseResolver)


class ZoneServer:
    """Authoritative server for one zone on 127.0.0.1 (UDP and TCP on the same port)."""

    def __init__(
        self,
        zone_text: str,
        origin: str = ".",
        *,
        host: str = "127.0.0.1",
        authenticated: bool | Callable[[str, str], bool] = False,
    ) -> None:
        self.origin = dns.name.from_text(origin)
        self.authenticated = authenticated
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str]] = []  # (name, type) of every question, in order
        self._lock = threading.Lock()
        self._zone = self._parse(zone_text)
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- data --
    def _parse(self, zone_text: str) -> dns.zone.Zone:
        return dns.zone.from_text(
            zone_text, origin=self.origin, relativize=False, check_origin=False
        )

    def load(self, zone_text: str) -> None:
        """Replace the zone's data; later queries see the new records."""
        zone = self._parse(zone_text)
        with self._lock:
            self._zone = zone

    # -- lifecycle --
    def start(self) -> ZoneServer:
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP on " + self.host)
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, name=f"zoneserver-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for t in self._threads:
            t.join(timeout=5)
        for s in (self._udp, self._tcp):
            if s is not None:
                s.close()
        self._threads.clear()

    def __enter__(self) -> ZoneServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The server as "IP:PORT", the form ``pochta dns --nameserver`` takes."""
        return f"{self.host}:{self.port}"

    def resolver(self, *, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks only this server."""
        return self._aimed(dns.resolver.Resolver(configure=False), timeout)

    def async_resolver(self, *, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
        """The same, for asyncio code."""
        return self._aimed(dns.asyncresolver.Resolver(configure=False), timeout)

    def _aimed(self, r: R, timeout: float) -> R:
        r.nameservers = [self.host]
        r.port = self.port
        r.timeout = r.lifetime = timeout
        return r

    # -- answering --
    def answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != 0 or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.opcode() != 0 else dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries.append((qname, qtype))
        if self._authentic(query, qname, qtype):
            response.flags |= dns.flags.AD
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        with self._lock:
            zone = self._zone
        name = question.name
        origin = zone.origin
        assert origin is not None
        if not name.is_subdomain(origin):
            response.set_rcode(dns.rcode.REFUSED)
            return response
        for _ in range(_MAX_CNAME_CHAIN):
            node = zone.get_node(name)
            if node is None:
                if not any(n.is_subdomain(name) for n in zone.nodes):
                    response.set_rcode(dns.rcode.NXDOMAIN)  # RFC 1035 §4.3.2 step 3c
                self._add_soa(zone, response)
                return response
            rdataset = node.get_rdataset(dns.rdataclass.IN, question.rdtype)
            if rdataset is not None:
                _add(response, response.answer, name, rdataset)
                return response
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if cname is None or question.rdtype == dns.rdatatype.CNAME:
                self._add_soa(zone, response)
                return response
            # RFC 1034 §4.3.2 step 3a: answer the CNAME and restart with its target.
            _add(response, response.answer, name, cname)
            name = cname[0].target
            if not name.is_subdomain(origin):
                return response
        return response

    def _authentic(self, query: dns.message.Message, qname: str, qtype: str) -> bool:
        # RFC 6840 §5.7-5.8: a validating resolver sets AD only for a query with DO or AD.
        wants = bool(query.ednsflags & dns.flags.DO) or bool(query.flags & dns.flags.AD)
        if not wants:
            return False
        if callable(self.authenticated):
            return self.authenticated(qname, qtype)
        return self.authenticated

    @staticmethod
    def _add_soa(zone: dns.zone.Zone, response: dns.message.Message) -> None:
        origin = zone.origin
        assert origin is not None
        soa = zone.get_rdataset(origin, dns.rdatatype.SOA)
        if soa is not None:
            _add(response, response.authority, origin, soa)

    def _respond(self, wire: bytes, *, udp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = self.answer(query)
        if not udp:
            return response.to_wire()
        limit = max(query.payload, _UDP_DEFAULT_SIZE) if query.edns >= 0 else _UDP_DEFAULT_SIZE
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while not self._stopping.is_set():
            try:
                wire, peer = self._udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self._respond(wire, udp=True)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True).start()

    def _serve_conn(self, conn: socket.socket) -> None:
        # RFC 1035 §4.2.2 / RFC 7766 §8: each message is preceded by a two-octet length.
        conn.settimeout(5)
        with conn:
            while not self._stopping.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _recv_exact(conn, length)
                if wire is None:
                    return
                reply = self._respond(wire, udp=False)
                if reply is None:
                    return
                try:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return


def _add(
    response: dns.message.Message,
    section: list[dns.rrset.RRset],
    name: dns.name.Name,
    rdataset: dns.rdataset.Rdataset,
) -> None:
    # find_rrset(create=True) keeps the message's index in step, so the response can be
    # used in-process (dns.resolver.Answer) as well as sent.
    rrset = response.find_rrset(
        section, name, dns.rdataclass.IN, rdataset.rdtype, rdataset.covers, create=True
    )
    for rdata in rdataset:
        rrset.add(rdata, rdataset.ttl)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = conn.recv(n - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data
