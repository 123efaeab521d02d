"""The file agent: ``/file`` alias targets and Unix accounts, as Postfix local(8) delivers
them ("EXTERNAL FILE DELIVERY", "UNIX MAILBOX DELIVERY" with ``home_mailbox = Maildir/``).

The queue gives a recipient whose destination is

- ``file:USER:PATH`` (an alias_maps ``/file`` target; USER by local(8)'s rule, chosen by the
  resolver: the owner of the alias file, ``nobody`` when root owns it): the message is
  appended to PATH in mbox format under a dotlock and an fcntl lock, or, when PATH ends in
  ``/``, written into the Maildir PATH (local(8): "a destination that ends in / is a
  Maildir");
- ``unix:USER`` (``[local] deliver_to_unix_accounts``): the message goes into USER's
  ``~/Maildir/``.

Who writes: when the server is root, the write runs in a process of its own as USER (uid,
gid, supplementary groups: ``pipe.run_as``, the mechanism of the pipe agent; never root,
uid 0 becomes ``nobody``), so the kernel checks USER's rights as local(8) "DELIVERY RIGHTS"
asks. That process is a Python running ``deliver/local_write.py`` isolated (``-I -S``): it
needs no package of ours, so our interpreter when every user can reach it, else the
system's ``python3`` (``writer_python``). A server that is not root writes as itself, in a
thread.

Return-Path and Delivered-To are added first (``mailbox.delivery_headers``); a message that
already carries our Delivered-To for the recipient is a loop (5.4.6). The reply never
names the path (it reaches outside senders in DSNs); the log line does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import stat
import sys
import time
from pathlib import Path

from pochta.config.settings import Settings
from pochta.deliver import local_write
from pochta.deliver.local_write import WriteError
from pochta.deliver.mailbox import delivered_to_loop, delivery_headers
from pochta.deliver.pipe import DEFAULT_PATH, PipeUserError, RunAs, run_as
from pochta.logs import get_logger
from pochta.protocols.smtp.replies import Reply
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.scheduler import Attempt

__all__ = ["UNIX_MAILDIR", "FileAgent", "write_reply"]

log = get_logger("deliver.file")

UNIX_MAILDIR = "Maildir/"  # Postfix home_mailbox = Maildir/ (the trailing / means Maildir)
_SOURCE = Path(local_write.__file__).read_text(encoding="utf-8")


def write_reply(status: str, text: str) -> Reply:
    """The reply for an RFC 3463 ``status`` of a failed write (class 4: try again)."""
    if status.startswith("4."):
        return Reply(451, status, text)
    if status.startswith(("5.1.", "5.2.", "5.7.")):
        return Reply(550, status, text)  # RFC 5321 §4.2.3: mailbox unavailable
    return Reply(554, status, text)


def _reachable_by_all(path: str) -> bool:
    """Whether any user may run ``path``: it and every directory above it have the
    execute bit for others (a pyenv or venv under /root does not)."""
    try:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        while parent and parent != "/":
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(parent)
    except OSError:
        return False
    return True


def writer_python() -> str:
    """The interpreter that runs local_write.py as another user: ours when every user can
    reach it, else the system's ``python3`` (the writer needs only the standard library)."""
    ours = os.path.realpath(sys.executable)
    if _reachable_by_all(ours):
        return ours
    system = shutil.which("python3", path=DEFAULT_PATH)
    return os.path.realpath(system) if system is not None else ours


class FileAgent:
    """Deliver one recipient to a file, a Maildir or a Unix account (module docstring)."""

    def __init__(self, *, hostname: str = "localhost", timeout_seconds: float = 1000.0) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.hostname = hostname
        self.timeout_seconds = timeout_seconds
        self._told_not_switching: set[str] = set()
        self._python = writer_python()

    @classmethod
    def from_settings(cls, settings: Settings) -> FileAgent:
        return cls(
            hostname=settings.server.hostname,
            timeout_seconds=settings.delivery.pipe_timeout_seconds,
        )

    async def deliver_file(
        self, envelope: Envelope, recipient: Recipient, content: bytes, path: str, user: str
    ) -> Attempt:
        """``file:USER:PATH``: mbox append, or Maildir when PATH ends in ``/``."""
        if not os.path.isabs(path):
            # aliases(5): a file target is an absolute path; the resolver never makes others.
            reply = Reply(554, "5.3.5", "local configuration error: file target is not absolute")
            return Attempt(recipient.address, "bounced", str(reply))
        mode = "maildir" if path.endswith("/") else "mbox"
        return await self._deliver(envelope, recipient, content, mode, path, user, "file")

    async def deliver_unix(
        self, envelope: Envelope, recipient: Recipient, content: bytes, user: str
    ) -> Attempt:
        """``unix:USER``: the account's ``~/Maildir/``, written as the account."""
        try:
            home = pwd.getpwnam(user).pw_dir
        except (KeyError, UnicodeEncodeError, ValueError):
            # Gone since RCPT: local(8) bounces an unknown user.
            reply = Reply(550, "5.1.1", f"<{recipient.address}>: no such user here")
            return Attempt(recipient.address, "bounced", str(reply))
        if not home or not os.path.isabs(home):
            reply = Reply(451, "4.3.5", "local configuration error: the account has no home")
            return Attempt(recipient.address, "deferred", str(reply))
        path = os.path.join(home, UNIX_MAILDIR)
        return await self._deliver(envelope, recipient, content, "maildir", path, user, "unix")

    async def _deliver(
        self,
        envelope: Envelope,
        recipient: Recipient,
        content: bytes,
        mode: str,
        path: str,
        user: str,
        kind: str,
    ) -> Attempt:
        address = recipient.address
        if delivered_to_loop(content, address):
            reply = Reply(554, "5.4.6", f"<{address}>: mail forwarding loop (Delivered-To)")
            return Attempt(address, "bounced", str(reply))
        try:
            who = run_as(user, self._told_not_switching)
        except PipeUserError as exc:
            log.error("file_user_unusable", queue_id=envelope.queue_id, user=user, error=str(exc))
            reply = Reply(451, "4.3.5", "local configuration error: delivery user unusable")
            return Attempt(address, "deferred", str(reply))
        message = delivery_headers(envelope.sender, address) + content
        data = local_write.format_mbox(envelope.sender, message) if mode == "mbox" else message
        started = time.monotonic()
        failure = await self._write(mode, path, data, who)
        if failure is None:
            where = "mailbox" if kind == "unix" else "file"
            reply = Reply(250, "2.0.0", f"delivered to {where}")
            outcome = "delivered"
        else:
            reply = write_reply(failure.status, failure.text)
            outcome = "deferred" if failure.temporary else "bounced"
        log.info(
            "file_delivery_done" if kind == "file" else "unix_delivery_done",
            queue_id=envelope.queue_id,
            to=address,
            path=path,
            format=mode,
            user=who.name,
            seconds=round(time.monotonic() - started, 3),
            outcome=outcome,
            reply=str(reply),
        )
        return Attempt(address, outcome, str(reply))  # type: ignore[arg-type]

    async def _write(self, mode: str, path: str, data: bytes, who: RunAs) -> WriteError | None:
        if not who.switch:
            try:
                if mode == "mbox":
                    await asyncio.to_thread(local_write.append_mbox, path, data)
                else:
                    await asyncio.to_thread(local_write.write_maildir, path, data, self.hostname)
            except WriteError as exc:
                return exc
            return None
        return await self._write_as(mode, path, data, who)

    async def _write_as(self, mode: str, path: str, data: bytes, who: RunAs) -> WriteError | None:
        """The write in a process of its own, as ``who`` (see the module docstring)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-S",
                "-c",
                _SOURCE,
                mode,
                path,
                self.hostname,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": DEFAULT_PATH},
                cwd=who.workdir,
                start_new_session=True,
                umask=0o077,
                **who.subprocess_args(),
            )
        except (OSError, ValueError) as exc:
            return WriteError("4.3.0", f"cannot start the writer: {exc}")
        try:
            async with asyncio.timeout(self.timeout_seconds):
                _, err = await proc.communicate(data)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return WriteError("4.3.0", "the write took too long")
        except BaseException:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            raise
        if proc.returncode == 0:
            return None
        line = err.decode("utf-8", "replace").strip().splitlines()
        status, _, text = (line[-1] if line else "").partition(" ")
        if not (len(status) >= 5 and status[0] in "45" and status[1] == "."):
            return WriteError("4.3.0", f"the writer ended with status {proc.returncode}")
        return WriteError(status, text or "write failed")
