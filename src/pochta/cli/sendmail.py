"""`pochta sendmail`: the sendmail(1) command line that cron, mail(1) and scripts expect.

Compatible with Postfix's sendmail(1) for what local programs use: the message on stdin, a
line with only "." ends it unless -i/-oi, -t takes recipients from the headers, -f sets the
sender, -N/-R/-V are the DSN parameters. Unknown-but-harmless options (-F, -oem, -odi, -v,
...) are accepted and ignored, as Postfix does; options that ask for another mode (-bs, -bp,
-q, -I) are refused with exit status 64.

As Postfix's postdrop(1), it does not write the queue: it writes one file into
``<spool_dir>/maildrop/`` (mode 1733: every local user may write there, nobody may list it;
format in ``receive/maildrop.py``) and exits, whether or not the server runs. The server's
pickup stage (``receive/pickup.py``) takes each file through the door: cleanup adds
``Received:``, ``Message-ID:`` and ``Date:``, the DKIM filter signs, aliases are expanded,
and the message is queued; while the server is stopped the files wait there. Only Bcc and
Resent-Bcc are dropped here, as Postfix's message_drop_headers does.

Exit statuses (sysexits.h, as sendmail): 0 written to the maildrop, 64 EX_USAGE (bad option,
no recipient, bad address), 65 EX_DATAERR (message larger than smtp.max_message_bytes), 75
EX_TEMPFAIL (not written: no config, maildrop missing or not writable, disk full — try again
later).
"""

from __future__ import annotations

import getopt
import os
import pwd
import sys
from email.utils import getaddresses
from pathlib import Path
from typing import Literal, NoReturn

import click

from pochta.cli.common import config_path
from pochta.mime.headers import (
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELD_BYTES,
    HeaderLimitError,
    SplitMessage,
    split_message,
)
from pochta.receive.maildrop import address_problem

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75

# Postfix sendmail(1)'s option letters; ':' takes a value.
OPTIONS = "B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:tvx"


RetType = Literal["FULL", "HDRS", ""]
BodyType = Literal["7BIT", "8BITMIME"]  # -B; BINARYMIME needs BDAT, which sendmail has not


class Usage(Exception):
    """A command line the way sendmail(1) would refuse it (exit 64)."""


def _exit(status: int, message: str) -> NoReturn:
    click.echo(f"pochta sendmail: {message}", err=True)
    sys.exit(status)


@click.command(
    "sendmail",
    context_settings={
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
        "help_option_names": ["--help"],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def sendmail(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Queue a message read from stdin: sendmail [-f FROM] [-t] [-i] [-oi] [-F NAME] RCPT...

    \b
    -f, -r FROM   envelope sender ("" or "<>": the null sender); default USER@HOSTNAME
    -t            add the recipients of To, Cc, Bcc (or Resent-*) headers
    -i, -oi       a line with only "." does not end the message
    -N DSN        never, or a list of success, delay, failure (RFC 3461 NOTIFY)
    -R full|hdrs  what a bounce returns (RFC 3461 RET)
    -V ENVID      envelope id (RFC 3461 ENVID)
    -B 8BITMIME   body type (detected when not given)
    -C FILE       pochta config file to use
    -F NAME       accepted, ignored (the cleanup stage fixes headers)
    """
    try:
        request = parse_args(list(args))
    except Usage as exc:
        _exit(EX_USAGE, str(exc))
    except getopt.GetoptError as exc:
        _exit(EX_USAGE, f"{exc}; usage: sendmail [-f FROM] [-t] [-i] [-oi] RCPT...")
    try:
        status = _run(ctx, request)
    except Usage as exc:
        _exit(EX_USAGE, str(exc))
    sys.exit(status)


class Request:
    """What the command line asked for."""

    def __init__(self) -> None:
        self.sender: str | None = None
        self.extract = False
        self.dots_end = True
        self.notify: tuple[str, ...] = ()
        self.ret: RetType = ""
        self.envid = ""
        self.body: BodyType | Literal[""] = ""
        self.config = ""
        self.recipients: list[str] = []


def parse_args(argv: list[str]) -> Request:
    """Parse a sendmail(1) command line (getopt, options may follow recipients as on GNU)."""
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("-q"):  # -q, -q30m, -qR...: a queue run, with or without a value
            raise Usage(f"{arg} is not supported; use `pochta queue flush`")
    opts, rest = getopt.gnu_getopt(argv, OPTIONS)
    request = Request()
    for opt, value in opts:
        if opt in ("-f", "-r"):
            request.sender = value
        elif opt == "-t":
            request.extract = True
        elif opt == "-i" or (opt == "-o" and value == "i"):
            request.dots_end = False
        elif opt == "-b":
            if value != "m":
                raise Usage(
                    f"-b{value} is not supported: only -bm (deliver mail) is; "
                    "see `pochta queue list` for -bp and `pochta serve` for -bd"
                )
        elif opt == "-I":
            raise Usage("-I (newaliases) is not supported; pochta reads alias files when loaded")
        elif opt == "-N":
            request.notify = _parse_notify(value)
        elif opt == "-R":
            if value.lower() not in ("full", "hdrs"):
                raise Usage(f"-R {value}: use full or hdrs")
            request.ret = "FULL" if value.lower() == "full" else "HDRS"
        elif opt == "-V":
            request.envid = value
        elif opt == "-B":
            if value.upper() not in ("7BIT", "8BITMIME"):
                raise Usage(f"-B {value}: use 7BIT or 8BITMIME")
            request.body = "7BIT" if value.upper() == "7BIT" else "8BITMIME"
        elif opt == "-C":
            request.config = value
        # -F -G -L -O -U -X -c -e -h -m -n -p -v -x and other -o: accepted, ignored.
    request.recipients = [r for arg in rest for r in _split_list(arg)]
    return request


def _parse_notify(value: str) -> tuple[str, ...]:
    # RFC 3461 §4.1: NEVER alone, or any of SUCCESS, FAILURE, DELAY.
    words = tuple(w.strip().upper() for w in value.split(",") if w.strip())
    if not words or not set(words) <= {"NEVER", "SUCCESS", "FAILURE", "DELAY"}:
        raise Usage(f"-N {value}: use never, or success, delay and failure")
    if "NEVER" in words and len(words) > 1:
        raise Usage("-N never cannot be combined with other values")
    return words


def _split_list(arg: str) -> list[str]:
    # "a@x, b@y" as one argument is two recipients (sendmail splits on commas).
    return [addr for _, addr in getaddresses([arg]) if addr] or ([arg] if arg.strip() else [])


def _run(ctx: click.Context, request: Request) -> int:
    from pochta.checks import load_checked_settings
    from pochta.config.load import ConfigError
    from pochta.logs import configure_logging

    path = request.config or config_path(ctx)
    try:
        settings = load_checked_settings(path, check_files=False)
    except ConfigError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        if "Permission denied" in problems:
            problems += f" (local users need to read it: chmod 644 {path}; it holds no secrets)"
        _exit(EX_TEMPFAIL, f"cannot read the config {path}: {problems}")
    configure_logging(settings.server.log_format, "warning")
    hostname = settings.server.hostname

    raw = sys.stdin.buffer.read()
    content = read_message(raw, dots_end=request.dots_end)
    if len(content) > settings.smtp.max_message_bytes:
        _exit(
            EX_DATAERR,
            f"message is {len(content)} bytes, more than smtp.max_message_bytes "
            f"({settings.smtp.max_message_bytes})",
        )
    try:
        message = split_message(
            content, max_block_bytes=MAX_HEADER_BLOCK_BYTES, max_field_bytes=MAX_HEADER_FIELD_BYTES
        )
    except HeaderLimitError as exc:
        _exit(EX_DATAERR, f"message header too large: {exc}")
    recipients = list(request.recipients)
    if request.extract:
        recipients.extend(extract_recipients(message))
    content = drop_headers(message, ("bcc", "resent-bcc"))

    sender = (
        request.sender
        if request.sender is not None
        else f"{pwd.getpwuid(os.getuid()).pw_name}@{hostname}"
    )
    sender = _qualify(sender, hostname) if sender not in ("", "<>") else ""
    seen: set[str] = set()
    addresses: list[str] = []
    for r in recipients:
        address = _qualify(r, hostname)
        if address.lower() not in seen:
            seen.add(address.lower())
            addresses.append(address)
    if not addresses:
        raise Usage(
            "no recipient addresses found in message header"
            if request.extract
            else "no recipients given (name them, or use -t)"
        )
    return _enqueue(settings.spool_dir, request, sender, addresses, content)


def _enqueue(
    spool_dir: Path, request: Request, sender: str, addresses: list[str], content: bytes
) -> int:
    """Write the message into maildrop/ for the server's pickup (receive/pickup.py)."""
    from pochta.receive.maildrop import MAILDROP_DIR, Drop, encode, write_drop

    drop = Drop(
        sender=sender,
        recipients=addresses,
        notify=list(request.notify),
        ret=request.ret,
        envid=request.envid,
        body=request.body,  # "" : pickup detects it
        uid=os.getuid(),
        size=len(content),
    )
    maildrop = spool_dir / MAILDROP_DIR
    try:
        write_drop(maildrop, encode(drop, content))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _exit(EX_TEMPFAIL, f"message not queued: {maildrop}: {reason}{_hint(exc)}")
    return EX_OK


def _hint(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return " (run `pochta serve` once, or `pochta init`: they create the maildrop)"
    if isinstance(exc, PermissionError):
        return (
            " (maildrop/ must be mode 1733 and the directories above it searchable (o+x) "
            "by local users; `pochta serve` sets maildrop/ at start)"
        )
    return ""


def _qualify(address: str, hostname: str) -> str:
    """Strip <>, check the shape, and append @HOSTNAME to a bare local name (Postfix's
    append_at_myorigin)."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    if address and "@" not in address:
        address = f"{address}@{hostname}"
    problem = address_problem(address)
    if problem:
        raise Usage(problem)
    return address


def read_message(raw: bytes, *, dots_end: bool) -> bytes:
    """The message as stored in the queue: CRLF line ends (RFC 5322 §2.1), input up to a line
    with only "." unless -i, a leading mbox "From " line dropped (as Postfix sendmail does)."""
    lines = raw.splitlines()
    out: list[bytes] = []
    for index, line in enumerate(lines):
        if index == 0 and line.startswith(b"From "):
            continue
        if dots_end and line == b".":
            break
        out.append(line)
    return b"".join(line + b"\r\n" for line in out)


def extract_recipients(headers: SplitMessage) -> list[str]:
    """-t: addresses of To, Cc and Bcc — or of Resent-To, Resent-Cc and Resent-Bcc when the
    message has Resent- headers (RFC 5322 §3.6.6)."""
    resent = ("resent-to", "resent-cc", "resent-bcc")
    wanted = resent if any(headers.has(n) for n in resent) else ("to", "cc", "bcc")
    values = [
        h.text.replace("\r\n", "").replace("\n", "") for h in headers.headers if h.key in wanted
    ]
    return [addr for _, addr in getaddresses(values) if addr]


def drop_headers(message: SplitMessage, names: tuple[str, ...]) -> bytes:
    """The message without the named fields (with their folded lines)."""
    kept = tuple(h for h in message.headers if h.key not in names)
    return SplitMessage(kept, message.separator, message.body).join()
