"""Every DNS record a hosted domain needs, as zone-file lines (``dns/compare.py`` checks them
against DNS).

One pochta host (HOST, ``server.hostname``) serves any number of domains. The records split
in two:

- the host's own records (A/AAAA, PTR, the HELO SPF record and the shared ``_spf.HOST``
  record), published once in the zone of HOST whatever the number of domains;
- each domain's records (MX, SPF with ``redirect=_spf.HOST``, DKIM, DMARC, MTA-STS, TLS-RPT,
  client autoconfiguration), which point at the host.

When no hosted domain contains HOST (``mx.provider.test`` serving ``example.test``), HOST has
DKIM keys of its own (a signing-only directory entry, made by ``pochta init``): its notices
leave as ``MAILER-DAEMON@HOST`` signed with ``d=HOST``. ``host_signing_records`` are then the
host name's own section, its HELO SPF record and its DKIM keys; ``mail_host_records`` is all
the host name needs, without the records of a mail domain (MX, DMARC, MTA-STS...).

Names are absolute and printed with a trailing dot, so the output can be pasted into any zone.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename

from pochta.config.nameserver import parse_nameserver as parse_nameserver  # re-exported
from pochta.directory.model import DkimSelector
from pochta.mailauth.dkim_keys import dkim_txt_value, split_txt

DEFAULT_TTL = 3600
# RFC 8461 §3.2: max_age in seconds; a week while testing (RFC 8461 §3.2 suggests weeks).
MTA_STS_MAX_AGE = 604800

# Client services (RFC 6186 §3.1-3.3, RFC 8314 §5.1): (name, standard port, priority).
# RFC 8314 §5.1: implicit TLS gets the lower (preferred) priority value; RFC 6186 §3.4:
# priorities are compared across IMAP and POP3, so IMAP comes before POP3.
CLIENT_SERVICES: tuple[tuple[str, int, int], ...] = (
    ("submissions", 465, 0),
    ("submission", 587, 10),
    ("imaps", 993, 0),
    ("imap", 143, 10),
    ("pop3s", 995, 20),
    ("pop3", 110, 30),
)


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record. ``value`` is the presentation form of the data, except for TXT,
    whose value is the whole text unquoted (``render_zone`` splits and quotes it)."""

    name: str  # absolute, lower-case, without the trailing dot
    rtype: str  # "A", "TXT", ...
    value: str
    comment: str = ""  # what the record is for; records with the same comment form a group
    ttl: int = field(default=DEFAULT_TTL, compare=False)
    # Whether mail breaks without it: ``pochta dns --check`` exits 1 only for a required
    # record missing or broken (``dns/compare.py`` says which are and why).
    required: bool = field(default=True, compare=False)


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower()


def _under(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def mta_sts_policy(hostname: str, *, mode: str = "testing", max_age: int = MTA_STS_MAX_AGE) -> str:
    """The MTA-STS policy file served at https://mta-sts.DOMAIN/.well-known/mta-sts.txt
    (RFC 8461 §3.2; lines end in CRLF as in the RFC's examples)."""
    lines = ["version: STSv1", f"mode: {mode}", f"mx: {_fqdn(hostname)}", f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


def _where(host: str, domain: str) -> str:
    if _under(host, domain):
        return ""
    return f" These belong in the zone of {host}, once for all the domains it serves."


def _helo_spf(host: str, where: str) -> Record:
    return Record(
        host,
        "TXT",
        "v=spf1 a -all",
        # RFC 7208 §2.3: receivers check the HELO identity too; only HOST itself may use it.
        f"SPF for the HELO name (RFC 7208 §2.3): only {host} says HELO {host}.{where}",
    )


def _host_records(
    hostname: str, domain: str, ipv4: str | None, ipv6: str | None, *, helo_spf: bool = True
) -> list[Record]:
    host = _fqdn(hostname)
    where = _where(host, domain)
    out: list[Record] = []
    addr_comment = (
        f"Address of the mail host {host}: target of the MX, name in HELO and in the TLS "
        f"certificate.{where}"
    )
    if ipv4:
        out.append(Record(host, "A", ipv4, addr_comment))
    if ipv6:
        out.append(Record(host, "AAAA", ipv6, addr_comment))
    ptr_comment = (
        f"Reverse DNS of the host's addresses, pointing to {host}. Set it where the address "
        "is managed (the hosting provider's panel), not in your zone. The name must resolve "
        "back to the same address (forward-confirmed reverse DNS, RFC 1912 §2.1): large "
        "receivers refuse or junk mail from addresses without it."
    )
    for ip in (ipv4, ipv6):
        if ip:
            rev = dns.reversename.from_address(ip).to_text(omit_final_dot=True)
            out.append(Record(rev, "PTR", f"{host}.", ptr_comment))
    if helo_spf:
        out.append(_helo_spf(host, where))
    if ipv4 or ipv6:
        # RFC 7208 §5.6: ip4/ip6 need no further DNS lookups (the §4.6.4 limit is 10).
        mechs = [f"ip4:{ipv4}"] if ipv4 else []
        mechs += [f"ip6:{ipv6}"] if ipv6 else []
        shared = "v=spf1 " + " ".join(mechs) + " -all"
    else:
        shared = f"v=spf1 a:{host} -all"
    out.append(
        Record(
            f"_spf.{host}",
            "TXT",
            shared,
            f"Shared SPF record of the mail host: every hosted domain points here with "
            f"redirect=, so a change of the host's addresses is one change here "
            f"(RFC 7208 §6.1).{where}",
            required=False,  # needed only when an SPF record points at it (dns/compare.py)
        )
    )
    return out


def _dkim_records(
    domain: str, selectors: Sequence[DkimSelector], purpose: str = ""
) -> list[Record]:
    out: list[Record] = []
    for sel in selectors:
        state = (
            "active: signs new mail"
            if sel.active
            else (
                "retired from signing, still published so mail in transit verifies; remove "
                f"it after 7 days with: pochta dkim retire {domain} {sel.selector}"
            )
        )
        out.append(
            Record(
                # RFC 6376 §3.6.2.1: keys live at SELECTOR._domainkey.DOMAIN.
                f"{sel.selector}._domainkey.{domain}",
                "TXT",
                dkim_txt_value(sel),
                f"DKIM public key, selector {sel.selector}, {sel.algorithm} "
                f"(RFC 6376 §3.6.1{', RFC 8463 §4.2' if sel.algorithm.startswith('ed') else ''}"
                f"); {state}.{purpose}",
                required=sel.active,  # a retired key only serves mail still in transit
            )
        )
    return out


def host_signing_records(hostname: str, selectors: Sequence[DkimSelector]) -> list[Record]:
    """The host name's own section, when it has DKIM keys of its own (a signing-only entry):
    its HELO SPF record (RFC 7208 §2.3) and its DKIM keys, which sign the notices it sends as
    ``MAILER-DAEMON@HOST`` with ``d=HOST``. Both go in the zone of HOST. ``required_records``
    leaves the HELO record out when given ``helo_spf=False``, so it is printed once."""
    host = _fqdn(hostname)
    return [
        _helo_spf(host, ""),
        *_dkim_records(
            host,
            selectors,
            f" The notices of the mail host (bounces from MAILER-DAEMON@{host}) are signed "
            f"with d={host}: no hosted domain contains the host name.",
        ),
    ]


def srs_domain_records(srs_domain: str, hostname: str) -> list[Record]:
    """The records of an ``[srs] domain`` of its own (neither the host name nor a hosted
    domain): mail forwarded here leaves with SRS0=...@SRS_DOMAIN, so the next hop checks SPF
    for that name, and bounces to it come back through its MX."""
    name = _fqdn(srs_domain)
    host = _fqdn(hostname)
    comment = (
        f"The SRS domain ([srs] domain): forwarded mail leaves with senders @{name}; the "
        f"next hop checks their SPF (RFC 7208 §2.4) and bounces come back through the MX."
    )
    return [
        Record(name, "MX", f"10 {host}.", comment),
        Record(name, "TXT", f"v=spf1 redirect=_spf.{host}", comment),
    ]


def mail_host_records(
    hostname: str, selectors: Sequence[DkimSelector], ipv4: str | None, ipv6: str | None
) -> list[Record]:
    """Every record of a host name that only signs (a signing-only entry, no mail domain):
    its address, reverse and SPF records and its DKIM keys; no MX, DMARC, MTA-STS, TLS-RPT
    or client records, as no mail is delivered to it as a domain."""
    host = _fqdn(hostname)
    if ipv4 is not None:
        ipv4 = str(ipaddress.IPv4Address(ipv4))
    if ipv6 is not None:
        ipv6 = str(ipaddress.IPv6Address(ipv6))
    return [
        *_host_records(host, host, ipv4, ipv6, helo_spf=False),
        *host_signing_records(host, selectors),
    ]


def dkim_key_warning(domain: str, selectors: Sequence[DkimSelector]) -> str | None:
    """Why ``domain`` signs no mail, with the command that fixes it; None when one of its
    DKIM selectors is active. ``pochta dns`` and ``pochta check`` print it."""
    if not selectors:
        return (
            f"{domain} has no DKIM keys, so its mail goes out unsigned and has no DKIM record "
            f"to publish; make them with: pochta dkim keygen {domain} (or, for every domain "
            "without keys: pochta dkim keygen --all-missing)"
        )
    if not any(sel.active for sel in selectors):
        names = ", ".join(sel.selector for sel in selectors)
        return (
            f"{domain} has no active DKIM key, so its mail goes out unsigned; once a selector's "
            f"record is in DNS, switch it on with: pochta dkim activate {domain} SELECTOR "
            f"(selectors: {names})"
        )
    return None


def _srv_records(domain: str, host: str, service_ports: Mapping[str, int | None]) -> list[Record]:
    out: list[Record] = []
    comment = (
        "Where mail clients find the services (RFC 6186 §3): implicit TLS has the lower "
        "priority value so clients prefer it (RFC 8314 §5.1), and IMAP comes before POP3 "
        "(RFC 6186 §3.4). A target of '.' says the service is not offered (RFC 6186 §4)."
    )
    for name, standard_port, priority in CLIENT_SERVICES:
        port = service_ports.get(name, standard_port)
        value = f"{priority} 1 {port} {host}." if port else "0 0 0 ."
        out.append(Record(f"_{name}._tcp.{domain}", "SRV", value, comment, required=False))
    out.append(
        Record(
            f"_autodiscover._tcp.{domain}",
            "SRV",
            f"0 0 443 {host}.",
            "Outlook finds its autodiscover service here (HTTPS on port 443 of the host).",
            required=False,
        )
    )
    return out


def required_records(
    domain: str,
    hostname: str,
    selectors: Sequence[DkimSelector],
    ipv4: str | None,
    ipv6: str | None,
    *,
    mta_sts_id: str | None = None,
    report_address: str | None = None,
    service_ports: Mapping[str, int | None] | None = None,
    now: dt.datetime | None = None,
    helo_spf: bool = True,
) -> list[Record]:
    """Every record ``domain`` needs when mail for it is served by ``hostname``.

    ``selectors`` are the domain's DKIM selectors, active and retired-but-published alike.
    Without ``ipv4``/``ipv6`` the A/AAAA and PTR records are left out and ``_spf.HOST`` uses
    ``a:HOST``. ``mta_sts_id`` defaults to the current UTC time (YYYYMMDDhhmmss).
    ``report_address`` receives DMARC and TLS-RPT reports (default dmarc-reports@DOMAIN and
    tlsrpt@DOMAIN, the aliases ``pochta domain add`` makes). ``service_ports`` maps the
    client services (``submissions``, ``imap``, ...) to their ports, None for a service
    switched off; missing ones use the standard port.
    ``helo_spf=False`` leaves out the host's HELO SPF record, for when it is printed in the
    host name's own section (``host_signing_records``).
    """
    dom = _fqdn(domain)
    host = _fqdn(hostname)
    if ipv4 is not None:
        ipv4 = str(ipaddress.IPv4Address(ipv4))
    if ipv6 is not None:
        ipv6 = str(ipaddress.IPv6Address(ipv6))
    out = _host_records(host, dom, ipv4, ipv6, helo_spf=helo_spf)
    if host == dom:
        # The host's own "v=spf1 a -all" already covers the domain: a second SPF record at the
        # same name would be a permerror (RFC 7208 §4.5).
        out = [r for r in out if not (r.name == dom and r.rtype == "TXT")]
        out.append(
            Record(dom, "TXT", "v=spf1 a -all", f"SPF for {dom}, which is the mail host itself.")
        )
    # RFC 5321 §5.1: mail for DOMAIN goes to the MX target.
    out.append(Record(dom, "MX", f"10 {host}.", f"Mail for {dom} is delivered to {host}."))
    if host != dom:
        out.append(
            Record(
                dom,
                "TXT",
                # RFC 7208 §6.1: redirect= is ignored when the record has an "all" mechanism,
                # so the domain's record is the redirect alone; the "-all" is in _spf.HOST.
                f"v=spf1 redirect=_spf.{host}",
                f"SPF for {dom} (RFC 7208 §6.1): the host's shared record decides, so {dom} "
                "authorises exactly the mail host. No 'all' here: it would disable redirect=.",
            )
        )
    out.extend(_dkim_records(dom, selectors))
    dmarc_rua = report_address or f"dmarc-reports@{dom}"  # the report:dmarc alias
    out.append(
        Record(
            f"_dmarc.{dom}",
            "TXT",
            # RFC 7489 §6.3: v and p are required; rua is where aggregate reports go.
            f"v=DMARC1; p=quarantine; rua=mailto:{dmarc_rua}",
            f"DMARC policy (RFC 7489 §6.3). p=quarantine: mail that fails both aligned SPF "
            "and DKIM goes to spam, which stops spoofing of the domain from day one while a "
            "mistake in this setup costs spam-folder placement rather than bounces. Switch to "
            f"p=reject once the daily reports to {dmarc_rua} (pochta report dmarc) show only "
            "your own servers "
            "(RFC 7489 §6.7).",
        )
    )
    sts_id = mta_sts_id or (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d%H%M%S")
    policy = "\n".join("  " + line for line in mta_sts_policy(host).splitlines())
    out.append(
        Record(
            f"_mta-sts.{dom}",
            "TXT",
            # RFC 8461 §3.1: id is 1-32 letters/digits; change it whenever the policy changes.
            f"v=STSv1; id={sts_id}",
            "MTA-STS (RFC 8461 §3.1): tells senders to fetch the TLS policy of this domain; "
            "give id= a new value whenever the policy changes.",
            required=False,  # RFC 8461: without it senders simply apply no policy
        )
    )
    out.append(
        Record(
            f"mta-sts.{dom}",
            "CNAME",
            f"{host}.",
            f"The MTA-STS policy is fetched from https://mta-sts.{dom}/.well-known/mta-sts.txt "
            "(RFC 8461 §3.3), served by pochta's HTTP listener over TLS with a certificate "
            f"valid for mta-sts.{dom}. Senders check the MX certificate against public CAs "
            "(RFC 8461 §4.2): with a self-signed certificate keep mode: testing. "
            f"Policy file content:\n{policy}\n"
            "Start with mode: testing (failures are only reported) and switch to "
            "mode: enforce, with a new id=, once TLS-RPT reports show no failures.",
            required=False,
        )
    )
    tlsrpt_rua = report_address or f"tlsrpt@{dom}"
    out.append(
        Record(
            f"_smtp._tls.{dom}",
            "TXT",
            # RFC 8460 §3: v=TLSRPTv1 and rua (mailto: or https:) are required.
            f"v=TLSRPTv1; rua=mailto:{tlsrpt_rua}",
            f"SMTP TLS reporting (RFC 8460 §3): senders mail daily reports of TLS problems "
            f"to {tlsrpt_rua}; make that address an account or an alias.",
            required=False,  # RFC 8460: reports only
        )
    )
    auto_comment = (
        "Mail client autoconfiguration: Thunderbird fetches http://autoconfig."
        f"{dom}/mail/config-v1.1.xml, Outlook https://autodiscover.{dom}/autodiscover/"
        "autodiscover.xml; both are served by pochta's HTTP listener."
    )
    out.append(Record(f"autoconfig.{dom}", "CNAME", f"{host}.", auto_comment, required=False))
    out.append(Record(f"autodiscover.{dom}", "CNAME", f"{host}.", auto_comment, required=False))
    out.extend(_srv_records(dom, host, service_ports or {}))
    return out


def _quote(s: str) -> str:
    # RFC 1035 §5.1: inside a quoted string, '"' and '\' are escaped with '\'.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_rdata(record: Record) -> str:
    """The record's data as it is written in a zone file (TXT split and quoted)."""
    if record.rtype == "TXT":
        return " ".join(_quote(part) for part in split_txt(record.value))
    return record.value


def render_record(record: Record) -> str:
    """One zone-file line: ``name. TTL IN TYPE data``."""
    return f"{record.name}. {record.ttl} IN {record.rtype} {render_rdata(record)}"


def _comment_lines(comment: str) -> list[str]:
    lines: list[str] = []
    for paragraph in comment.splitlines():
        if paragraph.startswith("  "):  # pre-formatted (the MTA-STS policy)
            lines.append(";" + paragraph)
            continue
        lines.extend(
            "; " + line
            for line in textwrap.wrap(paragraph, 94, break_on_hyphens=False, break_long_words=False)
            or [""]
        )
    return lines


def render_zone(records: Sequence[Record]) -> str:
    """Zone-file text (RFC 1035 §5.1) with a ``;`` comment before each group of records."""
    out: list[str] = []
    previous: str | None = None
    for record in records:
        if record.comment != previous:
            if out:
                out.append("")
            out.extend(_comment_lines(record.comment))
            previous = record.comment
        out.append(render_record(record))
    return "\n".join(out) + "\n"


# -- checking against DNS ---------------------------------------------------------------------

TxtKind = Literal["spf", "dkim", "dmarc", "mta-sts", "tlsrpt", "other"]
# RFC 7208 §4.5, RFC 6376 §3.6.1, RFC 7489 §6.4, RFC 8461 §3.1, RFC 8460 §3: version tags.
_TXT_VERSIONS: tuple[tuple[TxtKind, re.Pattern[str]], ...] = (
    ("spf", re.compile(r"^v=spf1(?: |$)", re.IGNORECASE)),
    ("dkim", re.compile(r"^v\s*=\s*DKIM1\s*(?:;|$)")),
    ("dmarc", re.compile(r"^v\s*=\s*DMARC1\s*(?:;|$)")),
    ("mta-sts", re.compile(r"^v\s*=\s*STSv1\s*(?:;|$)")),
    ("tlsrpt", re.compile(r"^v\s*=\s*TLSRPTv1\s*(?:;|$)")),
)


def txt_kind(value: str) -> TxtKind:
    for kind, pattern in _TXT_VERSIONS:
        if pattern.match(value.strip()):
            return kind
    return "other"


def make_resolver(nameserver: str | None = None, *, timeout: float = 5.0) -> dns.resolver.Resolver:
    """A resolver that asks ``nameserver`` ("IP", "IP:PORT", "[IPv6]:PORT"), or the system's
    resolvers (/etc/resolv.conf) when None."""
    if nameserver is None:
        resolver = dns.resolver.Resolver(configure=True)
    else:
        ip, port = parse_nameserver(nameserver)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ip]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver
