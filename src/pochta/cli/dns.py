"""`pochta dns DOMAIN`: the DNS records DOMAIN needs, and with --check, what DNS says.

When the host name has DKIM keys of its own (a signing-only entry: no hosted domain contains
it), its HELO SPF and DKIM records follow the domain's in a section of their own, titled
with the host name; ``pochta dns HOSTNAME`` prints only the host name's records.

With ``--check`` the records are compared with DNS by meaning (``dns/compare.py``: MATCH,
VALID-BUT-DIFFERENT, MISSING, BROKEN; exit 1 only for a required record missing or broken),
then the DNS doctor (``pochta.dns.doctor``) checks that the whole works. Our addresses for
the SPF evaluation and the doctor: ``--ip``
(and ``--ipv4``/``--ipv6``), else what the host name resolves to on this machine
(``_public_addresses``), else the host name's A/AAAA in the DNS asked. The MTA-STS policy is
fetched with ``deliver/mta_sts.py`` at the address ``mta-sts.DOMAIN`` has in that DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import click
import dns.asyncresolver
import dns.resolver

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.config.settings import Settings
from pochta.deliver.mta_sts import StsResolver
from pochta.deliver.sts_dane_policy import default_cache_dir
from pochta.deliver.tls_policy import DomainPolicy
from pochta.directory.addresses import AddressError, normalize_domain
from pochta.directory.model import DkimSelector
from pochta.dns.compare import Comparison, compare_records
from pochta.dns.doctor import (
    CHECKS,
    DEFAULT_BLOCKLISTS,
    DoctorInput,
    FetchedPolicy,
    Finding,
    PolicyFetch,
    async_resolver_like,
    host_addresses,
    render_findings,
    run_doctor,
)
from pochta.dns.records import (
    CLIENT_SERVICES,
    Record,
    dkim_key_warning,
    host_signing_records,
    mail_host_records,
    make_resolver,
    render_rdata,
    render_zone,
    required_records,
    srs_domain_records,
)
from pochta.mailauth.spf import DnspythonSpfDns


def _listener_port(value: str) -> int | None:
    """Port of a "HOST:PORT" listener; None when it is switched off or a unix socket."""
    if not value or value.startswith("unix:"):
        return None
    port = value.rpartition(":")[2]
    return int(port) if port.isdigit() else None


def _service_ports(settings: Settings) -> dict[str, int | None]:
    listen = settings.listen
    return {name: _listener_port(getattr(listen, name)) for name, _, _ in CLIENT_SERVICES}


def _public_addresses(hostname: str) -> tuple[str | None, str | None]:
    """The first global IPv4 and IPv6 address HOSTNAME resolves to (loopback and private
    addresses from /etc/hosts are no use to the world)."""
    try:
        infos = socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None, None
    v4: str | None = None
    v6: str | None = None
    for family, _, _, _, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if not ip.is_global:
            continue
        if family == socket.AF_INET and v4 is None:
            v4 = str(ip)
        elif family == socket.AF_INET6 and v6 is None:
            v6 = str(ip)
    return v4, v6


def _check_ip(option: str, value: str | None, version: int) -> str | None:
    if value is None:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        fail(f"{option} {value!r} is not an IP address")
    if ip.version != version:
        fail(f"{option} {value} is not an IPv{version} address")
    return str(ip)


_STATUS_WIDTH = len("VALID-BUT-DIFFERENT")


def _print_comparisons(results: list[Comparison]) -> None:
    """One line per record (status, name, type; "(optional)" for an optional record that is
    not a MATCH), then what DNS has, ours, and each difference with what it means."""
    pad = " " * (_STATUS_WIDTH + 2)
    for res in results:
        rec = res.record
        line = f"{res.status:<{_STATUS_WIDTH}}  {rec.name}. {rec.rtype}"
        if res.status == "MATCH":
            click.echo(line + (f"  ({'; '.join(res.notes)})" if res.notes else ""))
            continue
        click.echo(line + ("" if res.required else "  (optional)"))
        for found in res.found:
            click.echo(f"{pad}DNS has:  {found}")
        click.echo(f"{pad}ours:     {render_rdata(rec)}")
        for note in res.notes:
            click.echo(f"{pad}{note}")


def _compare(
    records: list[Record], resolver: dns.resolver.Resolver, host: str, ips: list[str]
) -> list[Comparison]:
    async def run() -> list[Comparison]:
        aresolver = async_resolver_like(resolver)
        return await compare_records(records, aresolver, DnspythonSpfDns(aresolver), host, ips)

    return asyncio.run(run())


def _policy_fetch(
    settings: Settings, resolver: dns.asyncresolver.Resolver, port: int
) -> PolicyFetch:
    """The MTA-STS fetch of ``deliver/mta_sts.py`` (its certificate checks, limits and
    parser), at the address ``mta-sts.DOMAIN`` has in the DNS the doctor asks. Trusted CAs:
    the system's (``SSL_CERT_FILE`` replaces them) and ``delivery.tls_ca_file``."""
    ca_file = settings.delivery.tls_ca_file

    async def fetch(domain: str) -> FetchedPolicy:
        name = f"mta-sts.{domain}"
        addresses = await host_addresses(resolver, name)
        if not addresses:
            raise OSError(f"{name} has no address in DNS (A/AAAA)")
        ip = addresses[0]
        where = f"[{ip}]" if ":" in ip else ip
        sts = StsResolver(
            resolver,
            default_cache_dir(settings),
            ca_file=settings.path(ca_file) if ca_file else None,
            url_template=f"https://{where}:{{port}}/.well-known/mta-sts.txt",
            port=port,
            timeout_seconds=resolver.lifetime,
        )
        policy = await sts.fetch(domain)
        matcher = DomainPolicy("verify", "mta-sts", policy.mx, "enforce")
        return FetchedPolicy(policy.mode, policy.mx, matcher.mx_allowed)

    return fetch


def _doctor(
    settings: Settings,
    resolver: dns.resolver.Resolver,
    what: DoctorInput,
    ips_known: bool,
    mta_sts_port: int,
) -> tuple[list[Finding], list[str]]:
    """Run the doctor (``pochta.dns.doctor``); (findings, notes)."""

    async def run() -> tuple[list[Finding], list[str]]:
        aresolver = async_resolver_like(resolver)
        notes: list[str] = []
        target = what
        if not ips_known:
            found = tuple(await host_addresses(aresolver, what.host))
            if found:
                notes.append(
                    f"; our addresses: {', '.join(found)}, {what.host} in DNS (or pass --ip)"
                )
            else:
                notes.append(f"; our addresses: unknown, pass --ip (no A/AAAA for {what.host})")
            target = DoctorInput(
                what.domain,
                what.host,
                found,
                what.selectors,
                what.expected,
                what.blocklists,
                what.mail_domain,
                what.skip,
            )
        findings = await run_doctor(
            aresolver,
            DnspythonSpfDns(aresolver),
            _policy_fetch(settings, aresolver, mta_sts_port),
            target,
        )
        return findings, notes

    return asyncio.run(run())


@click.command("dns")
@click.argument("domain")
@click.option("--ipv4", metavar="A.B.C.D", help="Public IPv4 address of the mail host.")
@click.option("--ipv6", metavar="ADDR", help="Public IPv6 address of the mail host.")
@click.option(
    "--check",
    is_flag=True,
    help="Compare the meaning of each record with what DNS answers; exit 1 only when a "
    "required record (A/AAAA, PTR, MX, SPF, active DKIM keys, DMARC) is missing or broken.",
)
@click.option(
    "--nameserver",
    metavar="IP[:PORT]",
    help="With --check, ask this server (e.g. the domain's authoritative server, which has no "
    "stale cache) instead of the system resolver.",
)
@click.option(
    "--ip",
    "ips",
    metavar="ADDR",
    multiple=True,
    help="With --check: a public address the host sends mail from (repeatable); default: "
    "--ipv4/--ipv6, else what the host name resolves to.",
)
@click.option(
    "--blocklist",
    "blocklists",
    metavar="ZONE",
    multiple=True,
    help="With --check: a DNS blocklist to look our addresses up in (repeatable; replaces "
    f"the default {', '.join(DEFAULT_BLOCKLISTS)}).",
)
@click.option(
    "--skip",
    "skips",
    type=click.Choice([*CHECKS, "all"]),
    multiple=True,
    help="With --check: leave out this check of the doctor (repeatable; all: only compare "
    "the records).",
)
@click.option(
    "--mta-sts-port",
    type=click.IntRange(1, 65535),
    default=443,
    show_default=True,
    help="With --check: port of the MTA-STS policy server (443; other values are for tests).",
)
@click.pass_context
def dns_command(
    ctx: click.Context,
    domain: str,
    ipv4: str | None,
    ipv6: str | None,
    check: bool,
    nameserver: str | None,
    ips: tuple[str, ...],
    blocklists: tuple[str, ...],
    skips: tuple[str, ...],
    mta_sts_port: int,
) -> None:
    """Print every DNS record DOMAIN needs, as zone-file lines.

    With --check, compare the meaning of each with what DNS has (MATCH, VALID-BUT-DIFFERENT
    with what differs and what it means, MISSING, BROKEN), then run the doctor: reverse DNS
    of the host, SPF evaluated for our addresses, MX, DKIM keys against our private keys,
    DMARC and its report targets, the MTA-STS policy over HTTPS, and DNS blocklists.
    Optional records (SRV, MTA-STS, TLS-RPT, autoconfig) never make the exit status."""
    if nameserver and not check:
        fail("--nameserver is used with --check")
    if (ips or blocklists or skips) and not check:
        fail("--ip, --blocklist and --skip are used with --check")
    ipv4 = _check_ip("--ipv4", ipv4, 4)
    ipv6 = _check_ip("--ipv6", ipv6, 6)
    given: list[str] = []
    for value in ips:
        try:
            given.append(str(ipaddress.ip_address(value)))
        except ValueError:
            fail(f"--ip {value!r} is not an IP address")
    for ip in given:  # the first --ip of each family stands for the A/AAAA record
        if ":" in ip and ipv6 is None:
            ipv6 = ip
        elif ":" not in ip and ipv4 is None:
            ipv4 = ip
    try:
        dom = normalize_domain(domain)
    except AddressError as exc:
        fail(str(exc))
    settings = load_cli_settings(ctx)
    host = settings.server.hostname.rstrip(".").lower()
    directory = open_directory(settings)
    try:
        hosted = directory.get_domain(dom)
        host_entry = directory.get_domain(host)
    finally:
        directory.close()
    if hosted is None:
        fail(f"domain {dom} is not hosted here; add it with: pochta domain add {dom}")
    if warning := dkim_key_warning(dom, hosted.dkim):
        click.echo(f"pochta: warning: {warning}", err=True)
    # The host name signs its own notices: its records get a section of their own.
    own_host = host_entry if host_entry is not None and host_entry.signing_only else None
    if hosted.signing_only:
        own_host = None  # the host name itself is asked for: all its records are the zone
    if own_host is not None and (warning := dkim_key_warning(host, own_host.dkim)):
        click.echo(f"pochta: warning: {warning}", err=True)

    notes: list[str] = []
    if ipv4 is None or ipv6 is None:
        found4, found6 = _public_addresses(host)
        if ipv4 is None and found4:
            ipv4 = found4
            notes.append(f"; A record: {found4} is what {host} resolves to now (or pass --ipv4)")
        if ipv6 is None and found6:
            ipv6 = found6
            notes.append(f"; AAAA record: {found6} is what {host} resolves to now (or pass --ipv6)")
    if ipv4 is None:
        notes.append(f"; A record: pass --ipv4 (could not determine the address of {host})")
    if ipv6 is None:
        notes.append(f"; AAAA record: pass --ipv6 if {host} has an IPv6 address")

    resolver = None
    if check:
        try:
            resolver = make_resolver(nameserver)
        except ValueError as exc:
            fail(f"--nameserver {exc}")
        except OSError as exc:  # no /etc/resolv.conf
            fail(f"cannot set up a DNS resolver ({exc}); name one with --nameserver IP")

    section: list[Record] = []
    if hosted.signing_only:
        # No mail domain: no MX, DMARC, MTA-STS... only what the host name itself needs.
        title = (
            f"; DNS records for {dom}, which only signs the mail host's notices (a "
            "signing-only entry, no mail domain)"
        )
        records = mail_host_records(dom, hosted.dkim, ipv4, ipv6)
    else:
        title = f"; DNS records for {dom}, whose mail is served by {host}"
        records = required_records(
            dom,
            host,
            hosted.dkim,
            ipv4,
            ipv6,
            service_ports=_service_ports(settings),
            helo_spf=own_host is None,
        )
        if own_host is not None:
            section = host_signing_records(host, own_host.dkim)
        srs_domain = settings.srs.domain.rstrip(".").lower() if settings.srs.enabled else ""
        if srs_domain and srs_domain not in (dom, host) and srs_domain.endswith(f".{dom}"):
            records = [*records, *srs_domain_records(srs_domain, host)]
    if resolver is None:
        click.echo(title)
        for note in notes:
            click.echo(note)
        click.echo()
        click.echo(render_zone(records), nl=False)
        if section:
            click.echo()
            click.echo(
                f"; ===== The mail host {host}: its own records, in the zone of {host} ====="
            )
            click.echo(render_zone(section), nl=False)
        return

    for note in notes:
        click.echo(note)
    ours = list(dict.fromkeys([*given, *(ip for ip in (ipv4, ipv6) if ip)]))
    results = _compare([*records, *section], resolver, host, ours)
    _print_comparisons(results)
    where = f"nameserver {nameserver}" if nameserver else "the system resolver"
    count = {s: sum(1 for r in results if r.status == s) for s in ("MATCH", "VALID-BUT-DIFFERENT")}
    # A required record DNS gave no answer for counts too: it cannot be shown to work.
    bad = sum(1 for r in results if r.bad)
    broken = sum(1 for r in results if r.bad and r.status != "ERROR")
    optional = sum(1 for r in results if not r.required and r.status in ("MISSING", "BROKEN"))
    unknown = sum(1 for r in results if r.status == "ERROR")
    click.echo(
        f"{count['MATCH']} of {len(results)} records match, {count['VALID-BUT-DIFFERENT']} "
        f"valid but different, {broken} required missing or broken, {optional} optional missing "
        f"or broken, {unknown} could not be checked (asked {where})"
    )
    if broken:
        click.echo(f"Print the expected records with: pochta dns {dom}")
    doctor_bad = 0
    if "all" not in skips and len(set(skips)) < len(CHECKS):
        dkim: list[DkimSelector] = list(hosted.dkim)
        what = DoctorInput(
            dom,
            host,
            tuple(ours),
            tuple(dkim),
            tuple([*records, *section]),
            blocklists or DEFAULT_BLOCKLISTS,
            mail_domain=not hosted.signing_only,
            skip=frozenset(skips),
        )
        findings, doctor_notes = _doctor(settings, resolver, what, bool(ours), mta_sts_port)
        if own_host is not None and "dkim" not in skips:
            extra = DoctorInput(
                host, host, (), tuple(own_host.dkim), (), skip=frozenset(CHECKS) - {"dkim"}
            )
            more, _ = _doctor(settings, resolver, extra, True, mta_sts_port)
            findings += more
        click.echo()
        for note in doctor_notes:
            click.echo(note)
        for line in render_findings(findings):
            click.echo(line)
        doctor_bad = sum(1 for f in findings if f.bad)
        unknown = sum(1 for f in findings if f.status == "COULD-NOT-CHECK")
        optional = sum(1 for f in findings if not f.needed and f.status not in ("OK",))
        ok = sum(1 for f in findings if f.status == "OK")
        click.echo(
            f"{ok} of {len(findings)} checks OK, {doctor_bad} to fix, {unknown} could not be "
            "checked" + (f", {optional} optional not OK" if optional else "") + " (the doctor)"
        )
    if bad or doctor_bad:
        ctx.exit(1)
