"""The pipe agent: hand a message to a command, as Postfix local(8) does for ``|command``
alias targets (and pipe(8) for its transports).

One recipient, one run. The queue gives a recipient whose destination is
``pipe:USER:COMMAND`` (``parse_pipe_destination``); the resolver chose USER by local(8)'s
rule: the owner of the alias file, or ``nobody`` when root owns it.

How the command runs:

- ``/bin/sh -c COMMAND``, like local(8), in a new session (so it leads its own process
  group), umask 077, working directory the user's home (``/`` when there is none).
- **As USER, never as root.** When the server runs as root the child takes USER's uid, gid
  and supplementary groups (``create_subprocess_exec(user=, group=, extra_groups=)``: no
  ``preexec_fn``); a USER that maps to uid 0 runs as ``nobody`` instead. When the server is
  not root (the usual case, after ``server.run_as_user``) it cannot switch: the command runs
  as the server's own user, and that is logged once per USER.
- **Input**: Return-Path and Delivered-To (``deliver.mailbox.delivery_headers``), then the
  message, with LF line ends as Unix commands expect (local(8) does the same).
- **Environment**: only what local(8) ENVIRONMENT lists (SENDER, RECIPIENT,
  ORIGINAL_RECIPIENT, USER, EXTENSION, DOMAIN, LOCAL, HOME, SHELL, LOGNAME, PATH, CLIENT_*,
  SASL_USERNAME, ENVID) plus pipe(8)'s QUEUE_ID and SIZE, and POCHTA_CONFIG, TZ and LANG
  exported from the server (Postfix's export_environment exports MAIL_CONFIG so that
  ``sendmail`` in the command finds the same instance). Control characters in the values,
  which a peer may have put in the envelope, become ``_``.
- **Output**: stdout and stderr share one pipe; the first ``MAX_OUTPUT_BYTES`` are kept and the
  rest is read and dropped, so a chatty command never blocks on a full pipe. The reply
  carries at most ``MAX_REPLY_OUTPUT_CHARS`` printable ASCII characters of it.
- **Time limit** (``delivery.pipe_timeout_seconds``): the whole process group is killed
  (SIGKILL), so children of the shell die too. Once the shell has exited, children that keep
  its output open get ``OUTPUT_GRACE_SECONDS`` and are then killed the same way.

The exit status decides (``exit_status_reply``, a pure function): 0 delivered; sysexits.h
codes as Postfix maps them (``SYSEXITS``: only EX_OSERR and EX_TEMPFAIL are temporary);
any other status bounces; a signal defers. Our own troubles (no such user, cannot start
the shell) defer.

The reply text never contains the command itself (it reaches outside senders in DSNs);
the log line has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import signal as signals
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pochta.config.settings import Settings
from pochta.deliver.mailbox import delivered_to_loop, delivery_headers
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt, Outcome
from pochta.tables.postfix_text import split_extension

__all__ = [
    "MAX_OUTPUT_BYTES",
    "MAX_REPLY_OUTPUT_CHARS",
    "OUTPUT_GRACE_SECONDS",
    "SHELL",
    "SYSEXITS",
    "PipeAgent",
    "PipeUserError",
    "RunAs",
    "exit_status_reply",
    "parse_pipe_destination",
    "run_as",
    "sanitize_output",
]

log = get_logger("deliver.pipe")

SHELL = "/bin/sh"
DEFAULT_PATH = "/usr/bin:/bin"  # local(8) ENVIRONMENT: PATH is _PATH_DEFPATH
FALLBACK_USER = "nobody"  # Postfix default_privs
MAX_OUTPUT_BYTES = 4096  # output kept for the reply (Postfix keeps one VSTREAM buffer)
MAX_REPLY_OUTPUT_CHARS = 200  # output characters in the reply text
OUTPUT_GRACE_SECONDS = 2.0  # after the shell exits, how long its children may hold the output
EXPORTED_FROM_SERVER = ("TZ", "LANG")  # Postfix export_environment (MAIL_CONFIG: ours below)
CONFIG_ENV = "POCHTA_CONFIG"

# sysexits.h, with the RFC 3463 code and text Postfix gives each
# (vdukhovni/postfix postfix/src/global/sys_exits.c, sys_exits_table). A code whose status
# starts with 4 is temporary (sys_exits_softerror); Postfix's pipe_command.c defers those and
# bounces the rest. We keep Postfix's choices so mail behaves as admins coming from it expect:
#   69 EX_UNAVAILABLE -> 5.3.0 (RFC 3463 §3.4 "other or undefined mail system status"; the
#      service behind the command is down, which is not an SMTP protocol error, 5.5.0);
#   77 EX_NOPERM -> 5.7.0 (§3.8 "other or undefined security status"; 5.7.1 would claim a
#      policy refusal by the recipient, which the exit code does not say);
#   73 EX_CANTCREAT, 74 EX_IOERR -> permanent, as in Postfix: a command that wants a retry
#      exits 75 (procmail, maildrop and dovecot-lda do);
#   71 EX_OSERR -> 4.3.0, temporary: fork or memory trouble on this host passes.
SYSEXITS: Mapping[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),  # EX_USAGE
    65: ("5.6.0", "data format error"),  # EX_DATAERR
    66: ("5.3.0", "cannot open input"),  # EX_NOINPUT
    67: ("5.1.1", "user unknown"),  # EX_NOUSER
    68: ("5.1.2", "host name unknown"),  # EX_NOHOST
    69: ("5.3.0", "service unavailable"),  # EX_UNAVAILABLE
    70: ("5.3.0", "internal software error"),  # EX_SOFTWARE
    71: ("4.3.0", "system resource problem"),  # EX_OSERR
    72: ("5.3.0", "critical OS file missing"),  # EX_OSFILE
    73: ("5.2.0", "can't create user output file"),  # EX_CANTCREAT
    74: ("5.3.0", "input/output error"),  # EX_IOERR
    75: ("4.3.0", "temporary failure"),  # EX_TEMPFAIL
    76: ("5.5.0", "remote error in protocol"),  # EX_PROTOCOL
    77: ("5.7.0", "permission denied"),  # EX_NOPERM
    78: ("5.3.5", "local configuration error"),  # EX_CONFIG
}

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_pipe_destination(destination: str) -> tuple[str, str]:
    """``pipe:USER:COMMAND`` (router.destination_string) -> (USER, COMMAND).

    A Unix user name has no colon, so the first colon after USER ends it; the command may
    contain any number of colons. ValueError when the text is not of that shape.
    """
    kind, _, rest = destination.partition(":")
    user, sep, command = rest.partition(":")
    if kind != "pipe" or not sep or not user or not command.strip():
        raise ValueError(f"not a pipe destination: {destination!r}")
    return user, command


def sanitize_output(output: str) -> str:
    """The command's output as reply text: printable ASCII only (tabs and line ends become
    spaces, anything else ``_``, as Postfix's pipe_command does), runs of spaces squeezed,
    at most ``MAX_REPLY_OUTPUT_CHARS`` characters."""
    text = " ".join(output.replace("\r", " ").replace("\t", " ").split())
    text = _NOT_PRINTABLE.sub("_", text)
    if len(text) > MAX_REPLY_OUTPUT_CHARS:
        text = text[: MAX_REPLY_OUTPUT_CHARS - 3].rstrip() + "..."
    return text


def _smtp_code(enhanced: str) -> int:
    """The basic code to go with an enhanced status (RFC 3463 §2: the class must agree)."""
    if enhanced.startswith("2."):
        return 250
    if enhanced.startswith("4."):
        return 451  # RFC 5321 §4.2.3: local error in processing
    if enhanced.startswith(("5.1.", "5.2.", "5.7.")):
        return 550  # RFC 5321 §4.2.3: mailbox unavailable / not taken
    return 554


def exit_status_reply(
    code: int | None, signal: int | None, output: str, *, timed_out: bool = False
) -> tuple[Outcome, Reply]:
    """What a command's end means for the recipient: (outcome, reply).

    ``code`` is the exit status (None when the command did not exit normally), ``signal``
    the signal that ended it, ``output`` its raw output (sanitised here). ``timed_out`` says
    we killed it at the time limit.
    """
    shown = sanitize_output(output)
    detail = f". Command output: {shown}" if shown else ""
    if timed_out:
        # Deviation from Postfix: pipe_command.c bounces at the time limit. A command that is
        # slow today (a locked mailbox, a busy database) usually works later, and a retry
        # loses nothing; the queue lifetime still bounces it in the end.
        return "deferred", Reply(451, "4.3.0", f"command time limit exceeded{detail}")
    if signal is not None:
        # Postfix pipe_command.c: "Command died with signal" defers.
        return "deferred", Reply(451, "4.3.0", f"command died with signal {signal}{detail}")
    if code is None:
        return "deferred", Reply(451, "4.3.0", f"command ended without a status{detail}")
    if code == 0:
        return "delivered", Reply(250, "2.0.0", "delivered to command")
    if code in SYSEXITS:
        enhanced, text = SYSEXITS[code]
        outcome: Outcome = "deferred" if enhanced.startswith("4.") else "bounced"
        return outcome, Reply(_smtp_code(enhanced), enhanced, f"{text}{detail}")
    # Postfix pipe_command.c: a status outside sysexits.h bounces ("Command died with
    # status N"), with sys_exits.c's default 5.3.0.
    return "bounced", Reply(554, "5.3.0", f"command died with status {code}{detail}")


@dataclass(frozen=True, slots=True)
class RunAs:
    """Who a command runs as. ``switch`` is False when the server is not root and the
    command simply inherits the server's identity."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str
    switch: bool
    workdir: str = "/"

    def subprocess_args(self) -> dict[str, Any]:
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


class PipeUserError(Exception):
    """The user a command should run as cannot be used; the text says why."""


def _passwd(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        raise PipeUserError(f"no such Unix user {user!r}") from None


def _run_as_entry(entry: pwd.struct_passwd, *, switch: bool) -> RunAs:
    groups = (
        tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)) if switch else tuple(os.getgroups())
    )
    home = entry.pw_dir or "/"
    return RunAs(
        name=entry.pw_name,
        uid=entry.pw_uid,
        gid=entry.pw_gid if switch else os.getegid(),
        groups=groups,
        home=home,
        shell=entry.pw_shell or SHELL,
        switch=switch,
        workdir=home if os.path.isdir(home) else "/",
    )


def _server_user() -> RunAs:
    """The server's own identity (a container may run it under a uid with no passwd entry)."""
    euid = os.geteuid()
    try:
        return _run_as_entry(pwd.getpwuid(euid), switch=False)
    except KeyError:
        home = os.environ.get("HOME") or "/"
        return RunAs(
            name=str(euid),
            uid=euid,
            gid=os.getegid(),
            groups=tuple(os.getgroups()),
            home=home,
            shell=SHELL,
            switch=False,
            workdir=home if os.path.isdir(home) else "/",
        )


def _env_value(value: str) -> str:
    # Peers control the envelope (HELO name, ENVID, addresses): no control characters, and
    # no NUL, which an environment cannot hold.
    return _CONTROL.sub("_", value)


def run_as(user: str, told_not_switching: set[str]) -> RunAs:
    """Whom a delivery for ``user`` runs as (commands here, files and Unix accounts in
    deliver/file.py); PipeUserError when nobody suitable exists. Never root: uid 0 becomes
    ``nobody`` (local(8) SECURITY). A server that is not root runs it as itself, logged once
    per USER (``told_not_switching`` remembers them)."""
    if os.geteuid() != 0:
        me = _server_user()
        if user != me.name and user not in told_not_switching:
            told_not_switching.add(user)
            log.info(
                "pipe_runs_as_server_user",
                requested=user,
                running_as=me.name,
                reason="the server is not root, so it cannot switch users",
            )
        return me
    entry = _passwd(user)
    if entry.pw_uid == 0:
        # local(8) SECURITY: commands never run as root; fall back to default_privs.
        log.warning("pipe_refuses_root", requested=user, running_as=FALLBACK_USER)
        entry = _passwd(FALLBACK_USER)
        if entry.pw_uid == 0:
            raise PipeUserError(f"{FALLBACK_USER!r} is uid 0; refusing to run as root")
    return _run_as_entry(entry, switch=True)


class PipeAgent:
    """Deliver one recipient to one command (see the module docstring)."""

    def __init__(
        self,
        *,
        timeout_seconds: float = 1000.0,
        recipient_delimiter: str = "+",
        config_path: str = "",
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.timeout_seconds = timeout_seconds
        self.recipient_delimiter = recipient_delimiter
        self.config_path = os.path.abspath(config_path) if config_path else ""
        self._told_not_switching: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> PipeAgent:
        return cls(
            timeout_seconds=settings.delivery.pipe_timeout_seconds,
            recipient_delimiter=settings.directory.recipient_delimiter,
            config_path=settings.config_path,
        )

    # -- identity ----------------------------------------------------------------------------

    def run_as(self, user: str) -> RunAs:
        """Whom the command for ``user`` runs as; PipeUserError when nobody suitable exists."""
        return run_as(user, self._told_not_switching)

    # -- environment -------------------------------------------------------------------------

    def environment(self, envelope: Envelope, recipient: Recipient, who: RunAs) -> dict[str, str]:
        """local(8) ENVIRONMENT, plus pipe(8)'s QUEUE_ID and SIZE."""
        address = recipient.address
        local, at, domain = address.rpartition("@")
        if not at:
            local, domain = address, ""
        user, extension = split_extension(local, self.recipient_delimiter)
        env = {
            "PATH": DEFAULT_PATH,
            "HOME": who.home,
            "SHELL": who.shell,
            "LOGNAME": who.name,
            "USER": user,
            "EXTENSION": (extension or "")[1:],  # without its delimiter
            "DOMAIN": domain,
            "LOCAL": local,
            "RECIPIENT": address,
            "ORIGINAL_RECIPIENT": recipient.original or address,
            "SENDER": envelope.sender,
            "QUEUE_ID": envelope.queue_id,
            "SIZE": str(envelope.size),
            "CLIENT_ADDRESS": envelope.client_ip,
            "CLIENT_HELO": envelope.client_helo,
            "CLIENT_PROTOCOL": envelope.protocol,
            "SASL_USERNAME": envelope.auth_user,
            "ENVID": envelope.envid,
        }
        for name in EXPORTED_FROM_SERVER:
            if name in os.environ:
                env[name] = os.environ[name]
        if self.config_path:
            env[CONFIG_ENV] = self.config_path
        return {k: _env_value(v) for k, v in env.items()}

    # -- delivery ----------------------------------------------------------------------------

    async def deliver(
        self, envelope: Envelope, recipient: Recipient, content: bytes, command: str, user: str
    ) -> Attempt:
        """Run ``command`` as ``user`` with the message on stdin; one Attempt."""
        queue_id = envelope.queue_id
        if delivered_to_loop(content, recipient.address):
            reply = Reply(554, "5.4.6", f"<{recipient.address}>: mail forwarding loop")
            return Attempt(recipient.address, "bounced", str(reply))
        try:
            who = self.run_as(user)
        except PipeUserError as exc:
            log.error("pipe_user_unusable", queue_id=queue_id, user=user, error=str(exc))
            reply = Reply(451, "4.3.5", "local configuration error: command user unusable")
            return Attempt(recipient.address, "deferred", str(reply))
        message = delivery_headers(envelope.sender, recipient.address) + content
        stdin = message.replace(b"\r\n", b"\n")
        env = self.environment(envelope, recipient, who)
        started = time.monotonic()
        try:
            result = await self._run(command, stdin, env, who)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.error(
                "pipe_start_failed", queue_id=queue_id, command=command, user=who.name, error=exc
            )
            reply = Reply(451, "4.3.0", "cannot start the command")
            return Attempt(recipient.address, "deferred", str(reply))
        output = result.output.decode("latin-1")
        outcome, reply = exit_status_reply(
            result.code, result.signal, output, timed_out=result.timed_out
        )
        log.info(
            "pipe_command_done",
            queue_id=queue_id,
            to=recipient.address,
            command=command,
            user=who.name,
            exit=result.code,
            signal=result.signal,
            timed_out=result.timed_out,
            seconds=round(time.monotonic() - started, 3),
            outcome=outcome,
            reply=str(reply),
        )
        return Attempt(recipient.address, outcome, str(reply))

    async def _run(self, command: str, stdin: bytes, env: dict[str, str], who: RunAs) -> _Result:
        loop = asyncio.get_running_loop()
        # Our own pipes, not asyncio's PIPE: Process.wait() then returns when the shell
        # exits, even while a child of it still holds the output open.
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                SHELL,
                "-c",
                command,
                stdin=in_read,
                stdout=out_write,
                stderr=out_write,
                env=env,
                cwd=who.workdir,
                start_new_session=True,  # its own process group, killed as a whole
                umask=0o077,
                **who.subprocess_args(),
            )
        except BaseException:
            os.close(in_write)
            os.close(out_read)
            raise
        finally:
            os.close(in_read)
            os.close(out_write)
        done: asyncio.Future[None] = loop.create_future()
        collector = _OutputCollector(MAX_OUTPUT_BYTES, done)
        output_file = os.fdopen(out_read, "rb", buffering=0)
        input_file = os.fdopen(in_write, "wb", buffering=0)
        reading: asyncio.BaseTransport | None = None
        writing: asyncio.WriteTransport | None = None
        try:
            reading, _ = await loop.connect_read_pipe(lambda: collector, output_file)
            writing, _ = await loop.connect_write_pipe(asyncio.BaseProtocol, input_file)
            # The command may stop reading early: not an error (Postfix ignores EPIPE too).
            writing.write(stdin)
            writing.write_eof()
            timed_out = False
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    status = await proc.wait()
            except TimeoutError:
                timed_out = True
                _kill_group(proc.pid)
                status = await proc.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(OUTPUT_GRACE_SECONDS):
                        await asyncio.shield(done)
                if not done.done():
                    _kill_group(proc.pid)  # children that kept the output open
        except BaseException:
            # Cancelled (the server stops): a command left running could still deliver
            # after the message has been put back in the queue.
            if proc.returncode is None:
                _kill_group(proc.pid)
            raise
        finally:
            if writing is not None:
                if writing.get_write_buffer_size():  # input the command never read
                    writing.abort()
            else:
                input_file.close()
            if reading is not None:
                reading.close()
            else:
                output_file.close()
        code = status if status >= 0 else None
        signal = -status if status < 0 else None
        return _Result(code, signal, bytes(collector.data), timed_out)


@dataclass(frozen=True, slots=True)
class _Result:
    code: int | None
    signal: int | None
    output: bytes
    timed_out: bool


class _OutputCollector(asyncio.Protocol):
    """Keeps the first ``limit`` bytes of the command's output and drops the rest."""

    def __init__(self, limit: int, done: asyncio.Future[None]) -> None:
        self.limit = limit
        self.data = bytearray()
        self.done = done

    def data_received(self, data: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += data[:room]

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _kill_group(pgid: int) -> None:
    """SIGKILL the command's process group (Postfix pipe_command: ``kill(-pid, SIGKILL)``).

    The group outlives the shell while any member is alive, and Linux does not reuse a
    process id that still names a group, so this reaches only the command's offspring.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signals.SIGKILL)
