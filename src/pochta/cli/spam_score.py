"""``pochta spam score FILE...|-``: the spam filter's verdict on messages, without delivering.

For an admin asking "why did this land in Junk?" and for accuracy runs over a corpus: each
message is scanned by the checks the config switches on (``spam/setup.build_checks``, made
once for every file), as mail from the MX would be, and one JSON object is printed for it::

    {"file": "msg.eml", "score": 1000.0, "action": "quarantine", "is_spam": true,
     "required": 6.0, "symbols": {"GTUBE": {"score": 1000.0, "description": "...",
     "options": []}}}

One file is printed indented; several files (or ``--json-lines``) one object per line, in
the order given. A file that cannot be read gives ``{"file": ..., "error": ...}`` on its
line and exit status 1 at the end; the others are still scored. The envelope the checks see
is given with ``--from``, ``--rcpt``, ``--ip``, ``--helo`` (default: none). The mail
authentication results are not computed here (no DNS for SPF/DKIM/DMARC): the checks that
read them see none.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from pochta.cli.common import load_cli_settings, open_directory
from pochta.spam.check import ScanInput
from pochta.spam.message import ScanMessage
from pochta.spam.scanner import Scanner, ScanResult

__all__ = ["result_json", "score"]


def result_json(result: ScanResult) -> dict[str, Any]:
    """The verdict of one message as ``pochta spam score`` prints it (Rspamd's /checkv2
    shape: score, action, is_spam, symbols by name)."""
    return {
        "score": round(result.score, 2),
        "action": result.action,
        "is_spam": result.is_spam,
        "required": result.required,
        "symbols": {
            s.name: {"score": s.score, "description": s.description, "options": list(s.options)}
            for s in sorted(result.symbols, key=lambda s: (-s.score, s.name))
        },
        **({"failed_checks": list(result.failed)} if result.failed else {}),
    }


def _read(name: str) -> bytes:
    return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()


@click.command("score")
@click.argument("files", nargs=-1, required=True, metavar="FILE...|-")
@click.option("--json-lines", is_flag=True, help="One JSON object per line, even for one file.")
@click.option("--from", "sender", default="", metavar="ADDR", help="Envelope sender to assume.")
@click.option("--rcpt", "recipients", multiple=True, metavar="ADDR", help="Envelope recipient.")
@click.option("--ip", "client_ip", default="", metavar="IP", help="Client address to assume.")
@click.option("--helo", default="", metavar="NAME", help="HELO name to assume.")
@click.pass_context
def score(
    ctx: click.Context,
    files: tuple[str, ...],
    json_lines: bool,
    sender: str,
    recipients: tuple[str, ...],
    client_ip: str,
    helo: str,
) -> None:
    """Score messages with the spam checks and print the verdicts as JSON (nothing is
    delivered). "-" reads one message from stdin."""
    from pochta.dns.async_resolver import make_async_resolver
    from pochta.spam.setup import build_checks

    settings = load_cli_settings(ctx)
    directory = open_directory(settings)
    one = len(files) == 1 and not json_lines

    async def run() -> int:
        checks = build_checks(
            settings, directory=directory, dns_resolver=make_async_resolver(settings.dns)
        )
        scanner = Scanner(checks, settings.spam)
        status = 0
        for name in files:
            out: dict[str, Any] = {"file": name}
            try:
                content = _read(name)  # one at a time: the CLI's loop has nothing else to do
            except OSError as exc:
                out["error"] = f"cannot read {name}: {exc.strerror}"
                status = 1
            else:
                scan = ScanInput(
                    message=ScanMessage(content),
                    sender=sender,
                    recipients=list(recipients),
                    client_ip=client_ip,
                    helo=helo,
                    from_mx=True,
                )
                out.update(result_json(await scanner.scan(scan)))
            click.echo(json.dumps(out, indent=2 if one else None, ensure_ascii=False))
        return status

    try:
        status = asyncio.run(run())
    finally:
        directory.close()
    sys.exit(status)
