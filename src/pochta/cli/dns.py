"""`pochta dns DOMAIN`: the DNS records DOMAIN needs, and with --check, what DNS says.

When the host name has DKIM keys of its own (a signing-only entry: no hosted domain contains
it), its HELO SPF and DKIM records follow the domain's in a section of their own, titled
with the host name; ``pochta dns HOSTNAME`` prints only the host name's records.
"""

from __future__ import annotations

import ipaddress
import socket

import click

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_domain
from pochta.dns.records import (
    CLIENT_SERVICES,
    CheckResult,
    Record,
    check_records,
    dkim_key_warning,
    host_signing_records,
    mail_host_records,
    make_resolver,
    render_rdata,
    render_zone,
    required_records,
)


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


def _print_check(results: list[CheckResult]) -> int:
    bad = 0
    for res in results:
        rec = res.record
        line = f"{res.status:<9}  {rec.name}. {rec.rtype}"
        if res.status == "OK":
            click.echo(line + (f"  ({res.detail})" if res.detail else ""))
            continue
        bad += 1
        click.echo(line)
        click.echo(f"           expected: {render_rdata(rec)}")
        for found in res.found:
            click.echo(f"           DNS has:  {found}")
        if res.detail:
            click.echo(f"           {res.detail}")
    return bad


@click.command("dns")
@click.argument("domain")
@click.option("--ipv4", metavar="A.B.C.D", help="Public IPv4 address of the mail host.")
@click.option("--ipv6", metavar="ADDR", help="Public IPv6 address of the mail host.")
@click.option(
    "--check", is_flag=True, help="Compare with what DNS answers; exit 1 on a difference."
)
@click.option(
    "--nameserver",
    metavar="IP[:PORT]",
    help="With --check, ask this server (e.g. the domain's authoritative server, which has no "
    "stale cache) instead of the system resolver.",
)
@click.pass_context
def dns_command(
    ctx: click.Context,
    domain: str,
    ipv4: str | None,
    ipv6: str | None,
    check: bool,
    nameserver: str | None,
) -> None:
    """Print every DNS record DOMAIN needs, as zone-file lines."""
    if nameserver and not check:
        fail("--nameserver is used with --check")
    ipv4 = _check_ip("--ipv4", ipv4, 4)
    ipv6 = _check_ip("--ipv6", ipv6, 6)
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
    results = check_records([*records, *section], resolver)
    bad = _print_check(results)
    where = f"nameserver {nameserver}" if nameserver else "the system resolver"
    click.echo(f"{len(results) - bad} of {len(results)} records OK (asked {where})")
    if bad:
        click.echo(f"Print the expected records with: pochta dns {dom}")
        ctx.exit(1)
