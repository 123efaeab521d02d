"""Sieve at local delivery (deliver/sieve_delivery.py, deliver/mailbox.py): the executor
with hand-made results from a fake interpreter, a real Maildir store and a fake door."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, cast

import pytest

from pochta.cleanup.verdict import Verdict
from pochta.deliver import sieve_delivery
from pochta.deliver.mailbox import MailboxAgent
from pochta.deliver.sieve_delivery import SieveDelivery, plan_results
from pochta.directory.base import Directory
from pochta.queue.envelope import Envelope as QueueEnvelope
from pochta.sieve.actions import (
    Discard,
    FileInto,
    Keep,
    Redirect,
    Reject,
    SieveResult,
    Vacation,
)
from pochta.sieve.context import MessageContext
from pochta.sieve.errors import SieveError, SieveRuntimeError
from pochta.sieve.limits import SieveLimits
from pochta.sieve.repository import StoredScript
from pochta.sieve.state import SieveState
from pochta.store.maildir import MaildirStore

HOST = "mx.example.test"
ACCOUNT = "alice@example.test"
SENDER = "bob@example.org"
MESSAGE = (
    b"From: Bob <bob@example.org>\r\nTo: alice@example.test\r\nSubject: Hi\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\nHello.\r\n"
)


class FakeSource:
    def __init__(self, scripts: list[StoredScript]) -> None:
        self.scripts = scripts

    def delivery_scripts(self, account: str) -> list[StoredScript]:
        return list(self.scripts)

    def loader(self, account: str) -> Any:
        return None


class FakeDoor:
    """The queue as the door shows it: ids and their states; a message submitted with
    ``hold`` is in "hold" until released."""

    def __init__(self) -> None:
        self.submitted: list[tuple[QueueEnvelope, bytes]] = []
        self.states: dict[str, str] = {}
        self.fail = False

    def derived_queue_id(self, origin: str, salt: str) -> str:
        from pochta.queue.envelope import derived_queue_id

        return derived_queue_id(origin, salt)

    async def locate(self, queue_id: str) -> str | None:
        return self.states.get(queue_id)

    async def release(self, queue_id: str) -> None:
        assert self.states[queue_id] == "hold"
        self.states[queue_id] = "incoming"

    async def submit(self, envelope: QueueEnvelope, content: bytes, *, hold: bool = False) -> str:
        if self.fail:
            raise OSError("no space left on device")
        assert envelope.queue_id not in self.states, "queued twice"
        self.states[envelope.queue_id] = "hold" if hold else "incoming"
        self.submitted.append((envelope, content))
        return envelope.queue_id


class FakeInterpreter:
    """compile: the script's text names a result in ``results`` ("error" does not compile);
    run: returns it ("runtime" raises SieveRuntimeError)."""

    def __init__(self, results: dict[str, SieveResult]) -> None:
        self.results = results
        self.compiled: list[str] = []
        self.contexts: list[MessageContext] = []

    def compile(self, text: str, **_: Any) -> str:
        self.compiled.append(text)
        if text == "error":
            raise SieveError("unknown command 'frop'", 3, 1)
        return text

    def run(self, script: str, context: MessageContext, **_: Any) -> SieveResult:
        self.contexts.append(context)
        if script == "runtime":
            raise SieveRuntimeError("out of time")
        return self.results[script]


def script(text: str, scope: Literal["before", "personal", "after"] = "personal") -> StoredScript:
    return StoredScript(name=f"s-{text}", text=text, scope=scope, version="v1")


class Rig:
    def __init__(
        self, tmp_path: Path, scripts: list[StoredScript], results: dict[str, SieveResult]
    ):
        self.store = MaildirStore(tmp_path / "mail", hostname=HOST, durable=False)
        directory = SimpleNamespace(get_account=lambda a: SimpleNamespace(quota_bytes=0))
        self.door = FakeDoor()
        self.interp = FakeInterpreter(results)
        self.state = SieveState(tmp_path / "sieve.db")
        self.agent = MailboxAgent(self.store, cast(Directory, directory))
        self.agent.sieve = SieveDelivery(
            FakeSource(scripts),
            self.state,
            lambda: self.door,
            hostname=HOST,
            limits=SieveLimits(max_redirects=2),
            mailbox_exists=self.agent.folder_exists,
            compile_script=self.interp.compile,
            run_script=self.interp.run,
        )

    async def deliver(self, queue_id: str = "A1", lmtp: bool = False, **kw: Any) -> Any:
        return await self.agent.deliver(
            queue_id=queue_id,
            sender=kw.pop("sender", SENDER),
            recipient=ACCOUNT,
            account=ACCOUNT,
            content=kw.pop("content", MESSAGE),
            lmtp=lmtp,
            **kw,
        )

    def folder(self, name: str) -> list[Any]:
        try:
            return self.store.list_messages(ACCOUNT, name)
        except Exception:
            return []


def test_plan_collapses_same_folder_and_keeps_first_reject() -> None:
    results = [
        SieveResult(actions=(FileInto(mailbox="INBOX"),), implicit_keep=False),
        SieveResult(actions=(Keep(flags=frozenset({"\\Flagged"})),), implicit_keep=False),
    ]
    plan = plan_results(results, "INBOX")
    assert [(c.folder, c.flags) for c in plan.copies] == [("INBOX", frozenset({"\\Flagged"}))]
    rejects = [
        SieveResult(actions=(Reject(reason="no"),), implicit_keep=False),
        SieveResult(actions=(Reject(reason="again"),), implicit_keep=False),
    ]
    plan = plan_results(rejects, "INBOX")
    assert plan.reject is not None
    assert plan.reject.reason == "no"


async def test_fileinto_with_flags_and_keep(tmp_path: Path) -> None:
    result = SieveResult(
        actions=(
            FileInto(mailbox="Lists", flags=frozenset({"\\Seen", "$Work"}), create=True),
            Keep(),
        ),
        implicit_keep=False,
    )
    rig = Rig(tmp_path, [script("a")], {"a": result})
    done = await rig.deliver()
    assert done.reply.code == 250, done.reply
    [msg] = rig.folder("Lists")
    assert "\\Seen" in msg.flags
    assert "$Work" in msg.keywords
    assert len(rig.folder("INBOX")) == 1
    # A retry (same queue id) finds both copies: nothing new is written.
    await rig.deliver()
    assert len(rig.folder("Lists")) == 1
    assert len(rig.folder("INBOX")) == 1


async def test_fileinto_missing_folder_without_create_goes_to_inbox(tmp_path: Path) -> None:
    result = SieveResult(actions=(FileInto(mailbox="Nowhere"),), implicit_keep=False)
    rig = Rig(tmp_path, [script("a")], {"a": result})
    done = await rig.deliver()
    assert done.reply.code == 250
    assert len(rig.folder("INBOX")) == 1
    assert all(f.name != "Nowhere" for f in rig.store.list_folders(ACCOUNT))


async def test_implicit_keep_uses_verdict_folder_and_keep_flags(tmp_path: Path) -> None:
    result = SieveResult(keep_flags=frozenset({"\\Flagged"}))
    rig = Rig(tmp_path, [script("a")], {"a": result})
    verdict = Verdict().with_action("folder", folder="Junk")
    done = await rig.deliver(verdict_folder="Junk", verdict=verdict)
    assert done.reply.code == 250
    [msg] = rig.folder("Junk")
    assert "\\Flagged" in msg.flags
    assert rig.interp.contexts[0].default_mailbox == "Junk"
    env = rig.interp.contexts[0].environment
    assert env["location"] == "MDA"
    assert env["phase"] == "during"
    assert env["host"] == HOST


async def test_discard_stores_nothing(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path, [script("a")], {"a": SieveResult(actions=(Discard(),), implicit_keep=False)}
    )
    done = await rig.deliver()
    assert done.outcome == "delivered"
    assert "discarded" in done.reply.text
    assert rig.folder("INBOX") == []


@pytest.mark.parametrize("lmtp", [False, True])
async def test_reject_and_ereject_bounce_with_reason(tmp_path: Path, lmtp: bool) -> None:
    result = SieveResult(
        actions=(Reject(reason="I do not\r\nwant this", extended=lmtp),), implicit_keep=False
    )
    rig = Rig(tmp_path, [script("a")], {"a": result})
    done = await rig.deliver(lmtp=lmtp)
    assert (done.reply.code, done.reply.enhanced) == (550, "5.7.1")
    assert done.reply.text == "I do not want this"
    assert done.outcome == "bounced"
    assert rig.folder("INBOX") == []


async def test_compile_error_and_runtime_error_keep_in_inbox(tmp_path: Path) -> None:
    for text in ("error", "runtime"):
        rig = Rig(tmp_path / text, [script(text)], {})
        done = await rig.deliver()
        assert done.reply.code == 250
        assert len(rig.folder("INBOX")) == 1


async def test_a_run_past_its_time_is_kept_in_inbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backstop when the interpreter's own clock did not stop a run: the message is
    kept; the thread is left to end."""
    release = threading.Event()
    rig = Rig(tmp_path, [script("a")], {})

    def stuck(*_: Any, **__: Any) -> SieveResult:
        release.wait(10)
        return SieveResult(actions=(Discard(),), implicit_keep=False)

    assert rig.agent.sieve is not None
    rig.agent.sieve._run = stuck
    rig.agent.sieve.limits = SieveLimits(max_run_seconds=0.01)
    monkeypatch.setattr(sieve_delivery, "RUN_GRACE_SECONDS", 0.0)
    try:
        done = await rig.deliver()
    finally:
        release.set()
    assert done.reply.code == 250
    assert len(rig.folder("INBOX")) == 1


async def test_compiled_once_per_version(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [script("a")], {"a": SieveResult()})
    await rig.deliver("A1")
    await rig.deliver("A2")
    assert rig.interp.compiled == ["a"]
    assert len(rig.folder("INBOX")) == 2


async def test_next_script_only_while_keep_in_force(tmp_path: Path) -> None:
    before = SieveResult(actions=(FileInto(mailbox="Seen", create=True),), implicit_keep=False)
    rig = Rig(tmp_path, [script("b", "before"), script("p")], {"b": before, "p": SieveResult()})
    await rig.deliver()
    assert rig.interp.compiled == ["b"]  # the personal script did not run
    assert len(rig.folder("Seen")) == 1
    assert rig.folder("INBOX") == []
    # With the keep in force, both run and their actions add up.
    keep_before = SieveResult(actions=(Keep(),), implicit_keep=False)
    personal = SieveResult(actions=(FileInto(mailbox="Work", create=True),), implicit_keep=False)
    rig = Rig(
        tmp_path / "2", [script("b", "before"), script("p")], {"b": keep_before, "p": personal}
    )
    await rig.deliver()
    assert len(rig.folder("INBOX")) == 1
    assert len(rig.folder("Work")) == 1


async def test_redirect_through_door_once_limited_not_to_self(tmp_path: Path) -> None:
    result = SieveResult(
        actions=(
            Redirect(address="carol@example.net"),
            Redirect(address=ACCOUNT),  # the recipient itself: never
            Redirect(address="dave@example.net"),
            Redirect(address="erin@example.net"),  # past max_redirects = 2
        ),
        implicit_keep=False,
    )
    rig = Rig(tmp_path, [script("a")], {"a": result})
    verdict = Verdict(reason="checked")
    done = await rig.deliver(verdict=verdict)
    assert done.reply.code == 250
    assert "redirected" in done.reply.text
    sent = [(e.sender, [r.address for r in e.recipients], e.verdict) for e, _ in rig.door.submitted]
    assert sent == [
        (SENDER, ["carol@example.net"], verdict),
        (SENDER, ["dave@example.net"], verdict),
    ]
    assert rig.door.submitted[0][1].startswith(b"Delivered-To: alice@example.test\r\n")
    assert rig.folder("INBOX") == []
    # Retried after a crash: the redirects are not sent again.
    await rig.deliver()
    assert len(rig.door.submitted) == 2


async def test_side_effect_failure_defers_then_retry_sends_once(tmp_path: Path) -> None:
    result = SieveResult(
        actions=(Redirect(address="carol@example.net"), Keep()), implicit_keep=False
    )
    rig = Rig(tmp_path, [script("a")], {"a": result})
    rig.door.fail = True
    done = await rig.deliver()
    assert done.outcome == "deferred"
    rig.door.fail = False
    done = await rig.deliver()
    assert done.reply.code == 250
    assert len(rig.door.submitted) == 1
    assert len(rig.folder("INBOX")) == 1


def vacation(handle: str = "h1") -> Vacation:
    return Vacation(
        to=SENDER,
        reason="I am away.",
        subject="Auto: Hi",
        handle=handle,
        period_seconds=86400,
        in_reply_to="<m1@example.org>",
    )


async def test_vacation_once_per_period_from_null_sender(tmp_path: Path) -> None:
    result = SieveResult(actions=(vacation(),))
    rig = Rig(tmp_path, [script("a")], {"a": result})
    await rig.deliver("A1")
    await rig.deliver("A2")  # a second message from the same sender: no reply
    assert len(rig.door.submitted) == 1
    envelope, reply = rig.door.submitted[0]
    assert envelope.sender == ""  # RFC 3834 §3.3
    assert [r.address for r in envelope.recipients] == [SENDER]
    assert b"Auto-Submitted: auto-replied" in reply
    assert b"In-Reply-To: <m1@example.org>" in reply
    assert len(rig.folder("INBOX")) == 2
    # After the period the sender is answered again (the state's clock moved on).
    rig.state.clock = lambda: time.time() + 2 * 86400
    await rig.deliver("A3")
    assert len(rig.door.submitted) == 2


async def test_vacation_two_messages_at_once_get_one_reply(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [script("a")], {"a": SieveResult(actions=(vacation(),))})
    await asyncio.gather(*(rig.deliver(f"A{n}") for n in range(4)))
    assert len(rig.door.submitted) == 1
    assert len(rig.folder("INBOX")) == 4


async def test_vacation_not_to_bulk_or_null_sender(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [script("a")], {"a": SieveResult(actions=(vacation(),))})
    bulk = b"Precedence: bulk\r\n" + MESSAGE
    await rig.deliver("A1", content=bulk)
    await rig.deliver("A2", sender="")
    assert rig.door.submitted == []
    assert len(rig.folder("INBOX")) == 2


async def test_duplicate_ids_recorded_after_delivery(tmp_path: Path) -> None:
    result = SieveResult(duplicate_ids=(("<m1@example.org>", 3600),))
    rig = Rig(tmp_path, [script("a")], {"a": result})
    assert not rig.state.duplicate_seen(ACCOUNT, "<m1@example.org>")
    await rig.deliver()
    assert rig.state.duplicate_seen(ACCOUNT, "<m1@example.org>")
    assert rig.interp.contexts[0].duplicates is not None


async def test_no_scripts_delivers_as_before(tmp_path: Path) -> None:
    rig = Rig(tmp_path, [], {})
    done = await rig.deliver()
    assert done.reply.code == 250
    assert "Sieve" not in done.reply.text
    assert len(rig.folder("INBOX")) == 1


def test_state_purges_expired_rows(tmp_path: Path) -> None:
    now = [1000.0]
    state = SieveState(tmp_path / "s.db", clock=lambda: now[0])
    state.record_vacation(ACCOUNT, "h", SENDER, 10)
    state.record_duplicate(ACCOUNT, "id", 10)
    assert state.vacation_answered(ACCOUNT, "h", SENDER.upper())
    now[0] = 1011.0
    assert not state.vacation_answered(ACCOUNT, "h", SENDER)
    state.purge()
    conn = state._connect()
    assert conn.execute("SELECT COUNT(*) FROM vacation").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM duplicates").fetchone()[0] == 0


async def test_cache_compiles_again_when_an_included_script_changes(tmp_path: Path) -> None:
    """The real interpreter and ScriptStore: the main script is unchanged between the two
    deliveries, the script it includes is not; the second delivery follows the new one."""
    from pochta.sieve.scripts import ScriptStore

    scripts = ScriptStore(tmp_path / "sieve", tmp_path / "sieve-global")
    scripts.put(ACCOUNT, "main", 'require ["include"];\ninclude :personal "rules";\n')
    scripts.set_active(ACCOUNT, "main")
    scripts.put(ACCOUNT, "rules", 'require ["fileinto", "mailbox"];\nfileinto :create "One";\n')
    store = MaildirStore(tmp_path / "mail", hostname=HOST, durable=False)
    directory = SimpleNamespace(get_account=lambda a: SimpleNamespace(quota_bytes=0))
    agent = MailboxAgent(store, cast(Directory, directory))
    sieve = SieveDelivery(
        scripts,
        SieveState(tmp_path / "sieve.db"),
        FakeDoor,
        hostname=HOST,
        mailbox_exists=agent.folder_exists,
    )
    agent.sieve = sieve

    async def deliver(queue_id: str) -> None:
        done = await agent.deliver(
            queue_id=queue_id, sender=SENDER, recipient=ACCOUNT, account=ACCOUNT, content=MESSAGE
        )
        assert done.reply.code == 250, done.reply

    await deliver("A1")
    await deliver("A2")  # nothing changed: the cached script
    assert sieve.cache.compiles == 1
    scripts.put(ACCOUNT, "rules", 'require ["fileinto", "mailbox"];\nfileinto :create "Two";\n')
    await deliver("A3")
    assert sieve.cache.compiles == 2
    assert len(store.list_messages(ACCOUNT, "One")) == 2
    assert len(store.list_messages(ACCOUNT, "Two")) == 1


def test_queue_envelope_without_client_hostname_still_reads() -> None:
    """An envelope written before ``client_hostname`` existed loads with "" (the Sieve
    remote-host of its delivery is then empty, not the HELO name)."""
    from pochta.queue.envelope import decode_envelope, encode_envelope, new_queue_id

    new = QueueEnvelope(
        queue_id=new_queue_id(),
        sender=SENDER,
        recipients=[],
        arrival=0.0,
        size=1,
        client_helo="helo.test",
    )
    data = encode_envelope(new).replace(b',"client_hostname":""', b"")
    assert b"client_hostname" not in data
    old = decode_envelope(data)
    assert old.client_helo == "helo.test"
    assert old.client_hostname == ""


async def test_quota_counts_every_copy(tmp_path: Path) -> None:
    """fileinto + keep stores two copies: both must fit. The quota leaves room for one copy
    and not two: 452 4.2.2 (try later), and nothing is stored."""
    result = SieveResult(actions=(FileInto(mailbox="Lists", create=True), Keep()))
    rig = Rig(tmp_path, [script("a")], {"a": result})
    copy = len(b"Return-Path: <" + SENDER.encode() + b">\r\nDelivered-To: " + ACCOUNT.encode())
    copy += len(b"\r\n\r\n") + len(MESSAGE)
    filler = b"Subject: filler\r\n\r\n" + b"x" * copy
    rig.store.deliver(ACCOUNT, filler)
    used = rig.store.quota_usage(ACCOUNT).bytes
    quota = used + copy + copy // 2  # one copy fits, two do not
    rig.agent.directory = cast(
        Directory, SimpleNamespace(get_account=lambda a: SimpleNamespace(quota_bytes=quota))
    )
    done = await rig.deliver()
    assert (done.reply.code, done.reply.enhanced) == (452, "4.2.2"), done.reply
    assert rig.folder("Lists") == []
    assert len(rig.folder("INBOX")) == 1  # the filler only


class _RemoteResolver:
    def resolve(self, address: str) -> Any:
        from pochta.resolve.classes import RemoteDest, Resolution

        return Resolution(address, (RemoteDest(address, "smtp:example.net"),))


class _Crash(Exception):
    """The process dying at that point (the delivery is tried again)."""


@pytest.mark.parametrize("where", ["record", "release"])
@pytest.mark.parametrize("action", ["redirect", "vacation"])
async def test_side_effect_queued_once_across_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str, action: str
) -> None:
    """A real spool behind a real door. The delivery dies once after the redirect or reply
    is queued and before it is recorded in sieve.db ("record"), or after recording and
    before its release from hold/ ("release"); the retry queues nothing more, and exactly
    one message is left to deliver, none held."""
    from pochta.cleanup.door import Door
    from pochta.queue.envelope import new_queue_id
    from pochta.queue.spool import Spool

    act = Redirect(address="carol@example.net") if action == "redirect" else vacation()
    rig = Rig(tmp_path, [script("a")], {"a": SieveResult(actions=(act,))})
    spool = Spool(tmp_path / "queue")
    door = Door(spool, lambda: None, _RemoteResolver)  # type: ignore[arg-type, return-value]
    assert rig.agent.sieve is not None
    rig.agent.sieve._door = lambda: door
    crashes = [where]
    real_record, real_release = rig.state.record_side_effect, getattr(door, "release", None)

    def record(*args: Any) -> None:
        if "record" in crashes:
            crashes.remove("record")
            raise _Crash
        real_record(*args)

    async def release(queue_id: str) -> None:
        if "release" in crashes:
            crashes.remove("release")
            raise _Crash
        assert real_release is not None
        await real_release(queue_id)

    monkeypatch.setattr(rig.state, "record_side_effect", record)
    monkeypatch.setattr(door, "release", release, raising=False)
    origin = new_queue_id()
    try:
        first = await rig.deliver(origin)
        assert first.reply.code == 451, first.reply  # the crash: tried again later
        assert crashes == []
        again = await rig.deliver(origin)
        assert again.reply.code == 250, again.reply
        assert await spool.ids("hold") == []
        [queued] = await spool.ids("incoming")
        envelope = await spool.load(queued)
        assert [r.address for r in envelope.recipients] == [
            "carol@example.net" if action == "redirect" else SENDER
        ]
        assert len(rig.folder("INBOX")) == 1  # the keep, once
        await rig.deliver(origin)  # and once more: still one
        assert await spool.ids("incoming") == [queued]
        if action == "vacation":
            # The period holds after the crash: the sender's next message gets no reply.
            await rig.deliver(new_queue_id())
            assert await spool.ids("incoming") == [queued]
            assert len(rig.folder("INBOX")) == 2
    finally:
        spool.close()


def test_derived_queue_id_is_stable_valid_and_in_the_shard() -> None:
    from pochta.queue.envelope import derived_queue_id, is_queue_id, new_queue_id, queue_shard

    origin = new_queue_id()
    one = derived_queue_id(origin, "alice@example.test\0redirect:carol@example.net")
    assert one == derived_queue_id(origin, "alice@example.test\0redirect:carol@example.net")
    assert one != derived_queue_id(origin, "alice@example.test\0vacation:h1")
    assert one != origin
    assert is_queue_id(one)
    assert one[:10] == origin[:10]
    for index in range(3):
        assert queue_shard(derived_queue_id(origin, f"x{index}", (index, 3)), 3) == index


async def test_a_script_sees_the_edits_and_flags_of_the_script_before(tmp_path: Path) -> None:
    """Dovecot's multi-script rule (Pigeonhole multiscript tests): the domain's before
    script adds a field and a flag; the personal script sees the field and files the message,
    which is stored with both."""
    from pochta.sieve.scripts import ScriptStore

    scripts = ScriptStore(tmp_path / "sieve", tmp_path / "sieve-global")
    scripts.put_global(
        ACCOUNT.rpartition("@")[2],
        "before",
        'require ["editheader", "imap4flags"];\naddheader "X-Checked" "by-admin";\n'
        'addflag "$Seen-By-Admin";\n',
    )
    scripts.put(
        ACCOUNT,
        "main",
        'require ["fileinto", "mailbox"];\n'
        'if header :is "X-Checked" "by-admin" { fileinto :create "Checked"; }\n',
    )
    scripts.set_active(ACCOUNT, "main")
    store = MaildirStore(tmp_path / "mail", hostname=HOST, durable=False)
    directory = SimpleNamespace(get_account=lambda a: SimpleNamespace(quota_bytes=0))
    agent = MailboxAgent(store, cast(Directory, directory))
    agent.sieve = SieveDelivery(
        scripts,
        SieveState(tmp_path / "sieve.db"),
        FakeDoor,
        hostname=HOST,
        mailbox_exists=agent.folder_exists,
    )
    done = await agent.deliver(
        queue_id="B1", sender=SENDER, recipient=ACCOUNT, account=ACCOUNT, content=MESSAGE
    )
    assert done.reply.code == 250, done.reply
    [stored] = store.list_messages(ACCOUNT, "Checked")
    assert b"X-Checked: by-admin" in store.fetch_message(ACCOUNT, "Checked", stored.uid)
    assert "$Seen-By-Admin" in stored.keywords
    assert store.list_messages(ACCOUNT, "INBOX") == []
