"""The mailbox agent's trips to a thread (deliver/mailbox.py): a delivery with no Sieve
script takes one, whatever becomes of the folder it picks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pochta.deliver.mailbox import MailboxAgent
from pochta.deliver.sieve_delivery import SieveDelivery
from pochta.directory.base import Directory
from pochta.sieve.repository import StoredScript
from pochta.sieve.state import SieveState
from pochta.store.maildir import MaildirStore

ACCOUNT = "alice@example.test"
MESSAGE = b"From: bob@example.org\r\nSubject: Hi\r\nMessage-ID: <m1@example.org>\r\n\r\nHello.\r\n"


class NoScripts:
    def delivery_scripts(self, account: str) -> list[StoredScript]:
        return []

    def loader(self, account: str) -> Any:
        return None


def agent_for(tmp_path: Path, *, sieve: bool) -> MailboxAgent:
    store = MaildirStore(tmp_path / "mail", hostname="mx.example.test", durable=False)
    directory = SimpleNamespace(get_account=lambda a: SimpleNamespace(quota_bytes=0))
    agent = MailboxAgent(store, cast(Directory, directory))
    if sieve:
        agent.sieve = SieveDelivery(
            NoScripts(),
            SieveState(tmp_path / "sieve.db"),
            lambda: None,
            hostname="mx.example.test",
            mailbox_exists=agent.folder_exists,
        )
    return agent


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function the agent sends to a thread."""
    seen: list[str] = []
    real = asyncio.to_thread

    async def counting(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return seen


async def deliver(agent: MailboxAgent, queue_id: str, folder: str = "") -> str:
    done = await agent.deliver(
        queue_id=queue_id,
        sender="bob@example.org",
        recipient=ACCOUNT,
        account=ACCOUNT,
        content=MESSAGE,
        verdict_folder=folder,
    )
    assert done.reply.code == 250, done.reply
    return done.reply.text


@pytest.mark.parametrize("sieve", [False, True])
async def test_a_delivery_without_scripts_is_one_trip(
    tmp_path: Path, trips: list[str], sieve: bool
) -> None:
    agent = agent_for(tmp_path, sieve=sieve)
    assert "INBOX uid 1" in await deliver(agent, "A1")
    assert "Junk uid 1" in await deliver(agent, "A2", folder="Junk")  # created on the way
    assert trips == ["_choose_and_store", "_choose_and_store"]
    assert len(agent.store.list_messages(ACCOUNT, "INBOX")) == 1
    assert len(agent.store.list_messages(ACCOUNT, "Junk")) == 1


async def test_a_refused_folder_still_lands_in_inbox(tmp_path: Path, trips: list[str]) -> None:
    """The store refuses the verdict's folder name in the thread; the agent logs it and
    stores into INBOX (a second trip, on this rare path only)."""
    agent = agent_for(tmp_path, sieve=False)
    assert "INBOX uid 1" in await deliver(agent, "A1", folder="../escape")
    assert trips == ["_choose_and_store", "deliver"]
    assert len(agent.store.list_messages(ACCOUNT, "INBOX")) == 1


async def test_a_repeated_delivery_finds_the_first_copy(tmp_path: Path) -> None:
    agent = agent_for(tmp_path, sieve=False)
    await deliver(agent, "A1")
    assert "(already delivered)" in await deliver(agent, "A1")
    assert len(agent.store.list_messages(ACCOUNT, "INBOX")) == 1
