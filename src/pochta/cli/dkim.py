"""`pochta dkim`: DKIM keys of a hosted domain — make, show, rotate, activate, retire.

The host name has keys of its own when no hosted domain contains it (a signing-only entry,
made by ``pochta init`` or ``keygen --all-missing``): the same commands manage them.

Rotation keeps mail verifiable throughout: the old selectors stop signing but stay published
(``active = False``) until ``retire``, because a receiver may verify a message days after it
was signed (queued mail, re-verification of stored mail). With ``rotate --stage`` the new
keys are published first and signing switches later (``activate``), so no message is ever
signed with a key that receivers cannot find yet.

``retire`` also refuses while the queue holds a message signed with the selector (its
``DKIM-Signature`` has ``d=DOMAIN`` and ``s=SELECTOR``): that message is still to be delivered
and verified, and its signature would fail once the DNS record is gone. Only the header block
of each queued message is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

import click
from dkim.util import InvalidTagValueList, parse_tag_value

from pochta.cli.common import fail, load_cli_settings, open_directory
from pochta.config.settings import Settings
from pochta.directory.addresses import AddressError, normalize_domain
from pochta.directory.base import Directory, DirectoryError
from pochta.directory.model import DkimSelector, Domain
from pochta.dns.records import Record, render_record
from pochta.mailauth.dkim_keys import (
    Algorithm,
    DkimKeyError,
    add_selectors,
    dkim_txt_value,
    host_needs_own_keys,
)
from pochta.mime.headers import MAX_HEADER_BLOCK_BYTES, split_message
from pochta.queue.spool import MAX_ENVELOPE_BYTES, STATES, Spool

RETIRE_AFTER_DAYS = 7
MAX_LISTED_IDS = 20  # queue ids named when retire refuses; the count is always complete
_HEAD_CHUNK_BYTES = 64 * 1024
_ALGORITHMS: dict[str, tuple[Algorithm, ...]] = {
    "rsa": ("rsa-sha256",),
    "ed25519": ("ed25519-sha256",),
    "both": ("rsa-sha256", "ed25519-sha256"),
}


def _hosted_domain(directory: Directory, domain: str) -> Domain:
    try:
        name = normalize_domain(domain)
    except AddressError as exc:
        fail(str(exc))
    found = directory.get_domain(name)
    if found is None:
        fail(f"domain {name} is not hosted here; add it with: pochta domain add {name}")
    return found


def _find_selector(dom: Domain, selector: str) -> DkimSelector:
    for sel in dom.dkim:
        if sel.selector == selector.lower():
            return sel
    known = ", ".join(s.selector for s in dom.dkim) or "none"
    fail(f"domain {dom.name} has no DKIM selector {selector} (selectors: {known})")


def _txt_line(domain: str, sel: DkimSelector) -> str:
    return render_record(Record(f"{sel.selector}._domainkey.{domain}", "TXT", dkim_txt_value(sel)))


def _make_selectors(
    settings: Settings,
    directory: Directory,
    dom: Domain,
    algorithms: Iterable[Algorithm],
    *,
    selector: str | None,
    bits: int,
    active: bool,
) -> list[DkimSelector]:
    """New keys for ``dom``, written and added to the directory; on failure none is left."""
    try:
        return add_selectors(
            directory,
            dom.name,
            settings.dkim_dir,
            algorithms,
            selector=selector,
            rsa_bits=bits,
            active=active,
        )
    except (DkimKeyError, DirectoryError, OSError) as exc:
        fail(str(exc))


def _print_publish(domain: str, selectors: Sequence[DkimSelector]) -> None:
    click.echo("Publish in DNS:")
    for sel in selectors:
        click.echo(_txt_line(domain, sel))


@click.group()
def dkim() -> None:
    """DKIM keys of hosted domains (RFC 6376, Ed25519 per RFC 8463)."""


@dkim.command()
@click.argument("domain", required=False)
@click.option(
    "--all-missing",
    is_flag=True,
    help=(
        "Make keys for every hosted domain that has no DKIM selector (instead of DOMAIN), and "
        "for the host name when no hosted domain contains it (it signs the notices)."
    ),
)
@click.option(
    "--algorithm",
    type=click.Choice(sorted(_ALGORITHMS)),
    default="both",
    show_default=True,
    help="Key type; 'both' makes an RSA and an Ed25519 key, and mail is signed with each.",
)
@click.option("--selector", help="Selector name (default: rsa-YYYYMM / ed-YYYYMM).")
@click.option(
    "--bits",
    type=click.IntRange(1024, 4096),
    default=2048,
    show_default=True,
    help="RSA key size (RFC 8301 §3.2: at least 1024, 2048 recommended).",
)
@click.pass_context
def keygen(
    ctx: click.Context,
    domain: str | None,
    all_missing: bool,
    algorithm: str,
    selector: str | None,
    bits: int,
) -> None:
    """Make new DKIM keys for DOMAIN (or, with --all-missing, for every hosted domain
    without any, and for the host name when no hosted domain contains it); they sign new
    mail at once."""
    if all_missing and domain:
        fail("name a DOMAIN or use --all-missing, not both")
    if not all_missing and not domain:
        fail("name the DOMAIN to make keys for, or use --all-missing for every domain without")
    if selector and (algorithm == "both" or all_missing):
        fail(
            "--selector names one key of one domain; use it with DOMAIN and "
            "--algorithm rsa or --algorithm ed25519"
        )
    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    try:
        if domain:
            targets = [_hosted_domain(directory, domain)]
        else:
            targets = [d for d in directory.list_domains() if not d.dkim]
            host = settings.server.hostname
            if host_needs_own_keys(directory, host):
                # The notices leave as MAILER-DAEMON@HOST: without a hosted domain above it,
                # the host name signs them itself (mailauth/dkim_keys.py add_host_keys).
                try:
                    targets.append(directory.add_domain(normalize_domain(host), signing_only=True))
                except (AddressError, DirectoryError) as exc:
                    fail(f"server.hostname {host}: {exc}")
                click.echo(
                    f"Added {targets[-1].name}, the host name, as a signing-only entry: no "
                    "hosted domain contains it, so it signs the notices it sends itself"
                )
            if not targets:
                click.echo("Every hosted domain has DKIM keys; nothing to do.")
        for dom in targets:
            made = _make_selectors(
                settings,
                directory,
                dom,
                _ALGORITHMS[algorithm],
                selector=selector,
                bits=bits,
                active=True,
            )
            # Printed domain by domain: a failure further on leaves these keys in place.
            for sel in made:
                click.echo(
                    f"Created DKIM selector {sel.selector} ({sel.algorithm}) for {dom.name} "
                    f"{sel.key_path}"
                )
            _print_publish(dom.name, made)
    finally:
        directory.close()


@dkim.command()
@click.argument("domain")
@click.pass_context
def show(ctx: click.Context, domain: str) -> None:
    """List the DKIM selectors of DOMAIN with their DNS records."""
    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    try:
        dom = _hosted_domain(directory, domain)
    finally:
        directory.close()
    if not dom.dkim:
        click.echo(
            f"{dom.name} has no DKIM selectors; make them with: pochta dkim keygen {dom.name}"
        )
        return
    for sel in dom.dkim:
        state = "active" if sel.active else "published (not signing)"
        missing = "" if Path(sel.key_path).is_file() else "  (key file missing!)"
        click.echo(f"{sel.selector}  {sel.algorithm}  {state}  {sel.key_path}{missing}")
        click.echo(f"  {_txt_line(dom.name, sel)}")


@dkim.command()
@click.argument("domain")
@click.option(
    "--stage",
    is_flag=True,
    help="Add the new keys without signing with them; switch later with 'pochta dkim activate'.",
)
@click.option("--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True)
@click.pass_context
def rotate(ctx: click.Context, domain: str, stage: bool, bits: int) -> None:
    """Replace the signing keys of DOMAIN; the old ones stay published until retired."""
    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    try:
        dom = _hosted_domain(directory, domain)
        old = [s for s in dom.dkim if s.active]
        in_use = {s.algorithm for s in old}
        algorithms = [a for a in _ALGORITHMS["both"] if a in in_use] or list(_ALGORITHMS["both"])
        made = _make_selectors(
            settings, directory, dom, algorithms, selector=None, bits=bits, active=not stage
        )
        if not stage:
            try:
                for sel in old:
                    directory.set_dkim_selector_active(dom.name, sel.selector, False)
            except DirectoryError as exc:
                fail(str(exc))
    finally:
        directory.close()
    for sel in made:
        click.echo(f"Created DKIM selector {sel.selector} ({sel.algorithm}) {sel.key_path}")
    _print_publish(dom.name, made)
    if stage:
        names = " ".join(s.selector for s in made)
        click.echo(
            "The new selectors do not sign yet. Once the records above are in DNS, switch "
            f"with: pochta dkim activate {dom.name} SELECTOR (for each of: {names})"
        )
        return
    click.echo(
        "The new selectors sign new mail now: publish their records at once, or receivers "
        "cannot verify it (use --stage next time to publish first)."
    )
    if old:
        click.echo("These selectors no longer sign but stay published so mail in transit verifies:")
        for sel in old:
            click.echo(f"  {sel.selector} ({sel.algorithm})")
        click.echo(f"After {RETIRE_AFTER_DAYS} days retire each of them with:")
        for sel in old:
            click.echo(f"  pochta dkim retire {dom.name} {sel.selector}")


@dkim.command()
@click.argument("domain")
@click.argument("selector")
@click.pass_context
def activate(ctx: click.Context, domain: str, selector: str) -> None:
    """Sign with SELECTOR; other active selectors of its algorithm stop signing."""
    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    try:
        dom = _hosted_domain(directory, domain)
        sel = _find_selector(dom, selector)
        replaced = [
            s
            for s in dom.dkim
            if s.active and s.algorithm == sel.algorithm and s.selector != sel.selector
        ]
        try:
            directory.set_dkim_selector_active(dom.name, sel.selector, True)
            for s in replaced:
                directory.set_dkim_selector_active(dom.name, s.selector, False)
        except DirectoryError as exc:
            fail(str(exc))
    finally:
        directory.close()
    click.echo(f"{sel.selector} ({sel.algorithm}) signs new mail for {dom.name}")
    for s in replaced:
        click.echo(
            f"{s.selector} no longer signs; retire it after {RETIRE_AFTER_DAYS} days with: "
            f"pochta dkim retire {dom.name} {s.selector}"
        )


@dkim.command()
@click.argument("domain")
@click.argument("selector")
@click.option("--force", is_flag=True, help="Retire the selector even if it still signs mail.")
@click.pass_context
def retire(ctx: click.Context, domain: str, selector: str, force: bool) -> None:
    """Remove SELECTOR of DOMAIN and delete its private key."""
    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    try:
        dom = _hosted_domain(directory, domain)
        sel = _find_selector(dom, selector)
        if sel.active and not force:
            fail(
                f"selector {sel.selector} still signs mail for {dom.name}; rotate first with: "
                f"pochta dkim rotate {dom.name} (or retire it anyway with --force)"
            )
        if not force:
            try:
                queued = queued_signed_with(settings.spool_dir, dom.name, sel.selector)
            except OSError as exc:
                fail(
                    f"cannot read the queue {settings.spool_dir} to see whether mail signed "
                    f"with {sel.selector} waits there: {exc.strerror or exc} (run as root or "
                    "as the server's user, or retire anyway with --force)"
                )
            if queued:
                shown = " ".join(queued[:MAX_LISTED_IDS])
                more = (
                    f" and {len(queued) - MAX_LISTED_IDS} more"
                    if len(queued) > MAX_LISTED_IDS
                    else ""
                )
                fail(
                    f"{len(queued)} queued message(s) signed with selector {sel.selector} of "
                    f"{dom.name} still wait for delivery: {shown}{more}; retire it once they "
                    "have left the queue (pochta queue list), or anyway with --force"
                )
        try:
            directory.remove_dkim_selector(dom.name, sel.selector)
        except DirectoryError as exc:
            fail(str(exc))
    finally:
        directory.close()
    try:
        Path(sel.key_path).unlink(missing_ok=True)
    except OSError as exc:
        fail(
            f"selector {sel.selector} removed, but its key {sel.key_path} could not be deleted: "
            f"{exc.strerror}"
        )
    click.echo(f"Retired {sel.selector}: removed from {dom.name} and deleted {sel.key_path}")
    click.echo(f"Remove its DNS record: {sel.selector}._domainkey.{dom.name}. TXT")


def queued_signed_with(spool_dir: Path, domain: str, selector: str) -> list[str]:
    """Queue ids of the messages in the spool (any state) that carry a DKIM-Signature with
    ``d=domain`` and ``s=selector`` (RFC 6376 §3.5; both compared case-insensitively)."""
    spool = Spool(spool_dir, io_threads=1, create=False)
    found: list[str] = []
    try:
        for state in STATES:
            for queue_id in spool.ids_sync(state):
                head = _queued_header(spool, queue_id)
                if head is not None and _signed_with(head, domain, selector):
                    found.append(queue_id)
    finally:
        spool.close()
    return found


def _queued_header(spool: Spool, queue_id: str) -> bytes | None:
    """The start of a queued message, through its header block (None: no longer queued)."""
    for _ in range(5):  # the file may move to another state between locating and opening
        state = spool.locate_sync(queue_id)
        if state is None:
            return None
        try:
            with open(spool.message_path(state, queue_id), "rb") as f:
                # The first line of a queue file is the envelope (queue/spool.py).
                envelope = f.readline(MAX_ENVELOPE_BYTES + 1)
                if not envelope.endswith(b"\n"):
                    return None
                return _read_header_block(f)
        except FileNotFoundError:
            continue
    return None


def _read_header_block(f: BinaryIO) -> bytes:
    """Read up to the empty line that ends the header block (at most the cleanup limit)."""
    data = b""
    while len(data) < 2 * MAX_HEADER_BLOCK_BYTES:
        chunk = f.read(_HEAD_CHUNK_BYTES)
        if not chunk:
            break
        start = max(0, len(data) - 3)
        data += chunk
        if b"\n\r\n" in data[start:] or b"\n\n" in data[start:] or data.startswith(b"\r\n"):
            break
    return data


def _signed_with(head: bytes, domain: str, selector: str) -> bool:
    for field in split_message(head).get_all("dkim-signature"):
        # RFC 6376 §3.2: tag=value list; unfold first (parse_tag_value expects it).
        value = field.value.replace(b"\r", b"").replace(b"\n", b"")
        try:
            tags = parse_tag_value(value)
        except InvalidTagValueList:
            continue
        d = tags.get(b"d", b"").decode("ascii", "replace").rstrip(".").lower()
        s = tags.get(b"s", b"").decode("ascii", "replace").lower()
        if d == domain.lower() and s == selector.lower():
            return True
    return False
