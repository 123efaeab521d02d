"""`pochta init`: a config, a self-signed certificate, DKIM keys and an empty directory.

When the host name is not the domain nor one of its subdomains (``mx.provider.test`` serving
``example.test``), the host name gets DKIM keys of its own, in a signing-only directory row:
the server's notices leave as ``MAILER-DAEMON@HOSTNAME`` and are signed with ``d=HOSTNAME``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from pochta.cli.common import fail
from pochta.config.sample import render_config
from pochta.config.settings import STANDARD_PORTS, Settings, port_with_base
from pochta.directory.addresses import AddressError, normalize_address, normalize_domain
from pochta.durable import write_atomic


@click.command()
@click.option("--data", "data_dir", required=True, metavar="DIR", help="Data directory to create.")
@click.option("--hostname", required=True, help="Fully qualified name of this mail host.")
@click.option("--domain", required=True, help="First mail domain to host.")
@click.option(
    "--port-base",
    type=click.IntRange(0, 55000),
    default=0,
    show_default=True,
    help=(
        "Move every listener into N..N+999: N plus the standard port (10000 gives SMTP "
        "10025, IMAP 10143, ...), N plus the last three digits above 999."
    ),
)
@click.option(
    "--bind",
    default="0.0.0.0",  # noqa: S104 - a mail server listens on all interfaces by default
    show_default=True,
    help="Address the listeners bind to (127.0.0.1 for a local demo).",
)
@click.option(
    "--postmaster",
    default="",
    metavar="ADDR",
    help=(
        "Who reads mail for postmaster (RFC 5321 §4.5.1), here or elsewhere. Default: the "
        "first account you add to --domain."
    ),
)
@click.option("--run-as-user", default="", help="Unprivileged user to switch to after binding.")
@click.option("--no-dkim", is_flag=True, help="Do not generate DKIM keys.")
@click.pass_context
def init(
    ctx: click.Context,
    data_dir: str,
    hostname: str,
    domain: str,
    port_base: int,
    bind: str,
    postmaster: str,
    run_as_user: str,
    no_dkim: bool,
) -> None:
    """Create DATA/pochta.toml, a TLS certificate, DKIM keys and the directory."""
    try:
        host = normalize_domain(hostname)
    except AddressError as exc:
        fail(f"--hostname: {exc}")
    try:
        dom = normalize_domain(domain)
    except AddressError as exc:
        fail(f"--domain: {exc}")
    if postmaster:
        try:
            postmaster = normalize_address(postmaster)
        except AddressError as exc:
            fail(f"--postmaster: {exc}")
    bind_host = f"[{bind}]" if ":" in bind else bind
    data = Path(data_dir).absolute()
    config_file = data / "pochta.toml"
    if config_file.exists():
        fail(f"{config_file} exists already; remove it or choose another --data")
    if run_as_user:
        import pwd

        try:
            pwd.getpwnam(run_as_user)
        except KeyError:
            fail(
                f"--run-as-user: no such user {run_as_user!r}; "
                f"create it with: useradd --system {run_as_user}"
            )
    try:
        # o+x (no listing): local users reach queue/maildrop/ for `pochta sendmail`.
        data.mkdir(parents=True, exist_ok=True, mode=0o751)
    except OSError as exc:
        fail(f"cannot create {data}: {exc.strerror}")

    from pochta.server.services import SERVICES

    values: dict[str, dict[str, object]] = {
        "server": {
            "hostname": host,
            "data_dir": str(data),
            "run_as_user": run_as_user,
            "postmaster": postmaster,
        },
        # Only listeners this version serves: every one now, ManageSieve (4190) included.
        "listen": {
            name: f"{bind_host}:{port_with_base(port, port_base)}"
            for name, port in STANDARD_PORTS.items()
            if name in SERVICES
        },
    }
    text = render_config(values)
    import tomllib

    import msgspec

    settings = msgspec.convert({**tomllib.loads(text), "config_path": str(config_file)}, Settings)

    from pochta.tls.selfsigned import write_self_signed

    cert, key = settings.path(settings.tls.cert_file), settings.path(settings.tls.key_file)
    write_self_signed(cert, key, host)

    from pochta.cli.domain import add_report_aliases
    from pochta.directory.open import open_directory
    from pochta.mailauth.dkim_keys import add_domain_keys, add_host_keys, host_needs_own_keys

    directory = open_directory(settings)
    try:
        directory.add_domain(dom)
        # Where other servers send their DMARC and TLS reports (the rua= `pochta dns` prints).
        add_report_aliases(directory, dom)
        selectors = []
        if not no_dkim:
            selectors = add_domain_keys(directory, dom, settings.dkim_dir)
        host_row = host_needs_own_keys(directory, host)
        host_selectors = []
        if host_row:
            host_selectors = add_host_keys(
                directory, host, settings.dkim_dir, make_keys=not no_dkim
            )
    finally:
        directory.close()
    from pochta.mailauth.srs import ensure_secret_file
    from pochta.receive.maildrop import ensure_maildrop

    owner = None
    if run_as_user and os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam(run_as_user)
        owner = (user.pw_uid, user.pw_gid)
    # One random SRS secret, 0600, the server's (mailauth/srs.py: the first line signs).
    srs_secret = settings.path(settings.srs.secret_file)
    ensure_secret_file(srs_secret, owner)
    # maildrop/ 1733, the server's: every local user may drop mail there, none may list it.
    ensure_maildrop(settings.spool_dir, owner)
    # Readable by everyone, as Postfix's main.cf: the server rereads it on SIGHUP after
    # dropping to run_as_user, and `pochta sendmail` reads it as any local user. It holds no
    # secrets (the relayhost password and the keys are files of their own, 0600).
    owner = (0, 0) if os.geteuid() == 0 else None
    write_atomic(config_file, text.encode("utf-8"), mode=0o644, owner=owner)

    click.echo(f"Created {config_file}")
    click.echo(f"  TLS certificate  {cert} (self-signed for {host})")
    click.echo(f"  directory        {settings.directory_db} (domain {dom})")
    click.echo(f"  SRS secret       {srs_secret}")
    for sel in selectors:
        click.echo(f"  DKIM key         {sel.selector} ({sel.algorithm}) {sel.key_path}")
    if host_row:
        click.echo(
            f"  host name        {host} is not in {dom}: it has DKIM keys of its own (a "
            "signing-only directory entry, no mail domain), so the notices it sends as "
            f"MAILER-DAEMON@{host} are signed with d={host}"
        )
        for sel in host_selectors:
            click.echo(f"  DKIM key         {sel.selector} ({sel.algorithm}) {sel.key_path}")
        if no_dkim:
            click.echo("                   (make its keys with: pochta dkim keygen --all-missing)")
    if postmaster:
        click.echo(f"  postmaster       mail for postmaster goes to {postmaster}")
    else:
        click.echo(f"  postmaster       mail for postmaster goes to the first account of {dom}")
    click.echo("Next:")
    click.echo(f"  pochta --config {config_file} user add you@{dom}")
    click.echo(f"  pochta --config {config_file} dns {dom}")
    click.echo(f"  pochta --config {config_file} serve")
