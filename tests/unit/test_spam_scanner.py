"""The scanner (spam/scanner.py), GTUBE (spam/gtube.py), the cleanup spam filter
(cleanup/spam_filter.py) and the [spam] settings they read.

Sans-IO where it can be: checks are small fakes; no test reads a clock (a check that never
finishes is cut by the timeout, and the test looks at the result, not at the time).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence

import msgspec
import pytest
from structlog.testing import capture_logs

from pochta.cleanup.pipeline import Cleanup, CleanupInput, CleanupResult
from pochta.cleanup.spam_filter import SpamFilter
from pochta.cleanup.verdict import Symbol
from pochta.config.load import walk_settings
from pochta.config.sample import render_config
from pochta.config.settings import SpamSettings
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.spam.check import ScanInput
from pochta.spam.gtube import GTUBE, Gtube
from pochta.spam.message import ScanMessage
from pochta.spam.scanner import Scanner, action_for, spam_headers

MESSAGE = b"From: <a@client.test>\r\nTo: <bob@example.test>\r\nSubject: hi\r\n\r\nhello\r\n"


class Fixed:
    """A check that finds the symbols it was given."""

    def __init__(self, name: str, *symbols: Symbol) -> None:
        self.name = name
        self.symbols = symbols
        self.calls = 0

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        self.calls += 1
        return self.symbols


class Raises:
    name = "broken"

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        raise RuntimeError("the check broke")


class Never:
    """A check that waits for ever (a DNS list that never answers)."""

    name = "silent"

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        await asyncio.Event().wait()
        return ()


class Rendezvous:
    """Two of these finish only if both run at the same time: each sets its own event and
    waits for the other's. Run one after the other, the first never returns."""

    def __init__(self, name: str, mine: asyncio.Event, other: asyncio.Event) -> None:
        self.name = name
        self._mine = mine
        self._other = other

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        self._mine.set()
        await self._other.wait()
        return (Symbol(name=self.name.upper(), score=1.0),)


class InPlace:
    """A check that never waits (``waits = False``): it notes the task it ran in and what
    had happened before it ran."""

    waits = False

    def __init__(self, name: str, events: list[str], fail: bool = False) -> None:
        self.name = name
        self.events = events
        self.fail = fail
        self.task: asyncio.Task[object] | None = None

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        self.task = asyncio.current_task()
        self.events.append(self.name)
        if self.fail:
            raise ValueError("bad input")
        return (Symbol(name=self.name.upper(), score=0.5),)


class Lookup:
    """A waiting check (a DNS list): notes when its lookup went out, answers after a turn
    of the loop."""

    def __init__(self, events: list[str]) -> None:
        self.name = "dns"
        self.events = events
        self.task: asyncio.Task[object] | None = None

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        self.task = asyncio.current_task()
        self.events.append("lookup sent")
        await asyncio.sleep(0)
        self.events.append("lookup answered")
        return (Symbol(name="RBL", score=2.0),)


def sym(name: str, score: float) -> Symbol:
    return Symbol(name=name, score=score, description=f"{name} found")


def scan_input(content: bytes = MESSAGE) -> ScanInput:
    return ScanInput(message=ScanMessage(content), sender="a@client.test", recipients=["b@x"])


def spam_settings(**values: object) -> SpamSettings:
    return msgspec.convert(values, SpamSettings)


# -- the scanner ---------------------------------------------------------------------------


async def test_checks_run_concurrently() -> None:
    a, b = asyncio.Event(), asyncio.Event()
    scanner = Scanner(
        [Rendezvous("one", a, b), Rendezvous("two", b, a)], spam_settings(check_timeout_seconds=5)
    )
    result = await scanner.scan(scan_input())
    assert [s.name for s in result.symbols] == ["ONE", "TWO"]
    assert result.failed == ()


async def test_checks_that_never_wait_run_in_place_while_the_lookups_are_out() -> None:
    events: list[str] = []
    heuristics, lookup, broken = (
        InPlace("heur", events),
        Lookup(events),
        InPlace("broken", events, fail=True),
    )
    scanner = Scanner([heuristics, lookup, broken], spam_settings(check_timeout_seconds=5))
    with capture_logs() as logs:
        result = await scanner.scan(scan_input())
    # The lookup went out first; the in-place checks ran in the scanning task itself.
    assert events[0] == "lookup sent"
    assert events.index("heur") < events.index("broken")
    assert heuristics.task is asyncio.current_task()
    assert broken.task is asyncio.current_task()
    assert lookup.task is not asyncio.current_task()
    # Symbols keep the order of the checks; the broken one is logged and scores nothing.
    assert [s.name for s in result.symbols] == ["HEUR", "RBL"]
    assert result.score == 2.5
    assert result.failed == ("broken",)
    [failed] = [r for r in logs if r["event"] == "spam_check_failed"]
    assert failed == {
        "logger": "spam",
        "event": "spam_check_failed",
        "log_level": "warning",
        "queue_id": "",
        "check": "broken",
        "error": "ValueError: bad input",
    }


async def test_a_check_that_times_out_is_logged_and_gives_nothing() -> None:
    found = Fixed("heuristics", sym("MISSING_DATE", 1.5))
    scanner = Scanner([Never(), found], spam_settings(check_timeout_seconds=0.05))
    with capture_logs() as logs:
        result = await scanner.scan(scan_input())
    assert [s.name for s in result.symbols] == ["MISSING_DATE"]
    assert result.score == 1.5
    assert result.failed == ("silent",)
    [failed] = [r for r in logs if r["event"] == "spam_check_failed"]
    assert failed["check"] == "silent"
    assert "spam.check_timeout_seconds" in failed["error"]


async def test_a_check_that_raises_is_logged_and_the_scan_goes_on() -> None:
    scanner = Scanner([Raises(), Fixed("gtube", sym("GTUBE", 1000))], spam_settings())
    with capture_logs() as logs:
        result = await scanner.scan(scan_input())
    assert result.score == 1000
    assert result.failed == ("broken",)
    [failed] = [r for r in logs if r["event"] == "spam_check_failed"]
    assert failed["check"] == "broken"
    assert failed["error"] == "RuntimeError: the check broke"


async def test_score_overrides_replace_the_checks_scores() -> None:
    check = Fixed("c", sym("BAYES_SPAM", 3.0), sym("MISSING_DATE", 1.0))
    scanner = Scanner([check], spam_settings(scores={"BAYES_SPAM": 5.5, "OTHER": 9.0}))
    result = await scanner.scan(scan_input())
    bayes = next(s for s in result.symbols if s.name == "BAYES_SPAM")
    assert bayes.score == 5.5
    assert bayes.description == "BAYES_SPAM found"  # the rest of the symbol is kept
    assert result.score == 6.5
    assert result.action == "junk"


async def test_a_symbol_name_counts_once() -> None:
    scanner = Scanner([Fixed("a", sym("DUP", 2.0)), Fixed("b", sym("DUP", 3.0))], spam_settings())
    result = await scanner.scan(scan_input())
    assert [(s.name, s.score) for s in result.symbols] == [("DUP", 3.0)]


@pytest.mark.parametrize(
    ("score", "settings", "action"),
    [
        (0.0, {}, "no action"),
        (3.99, {}, "no action"),
        (4.0, {}, "greylist"),
        (5.99, {}, "greylist"),
        (6.0, {}, "junk"),
        (14.99, {}, "junk"),
        (15.0, {}, "quarantine"),
        (1000.0, {"reject_action": "reject"}, "reject"),
        (1000.0, {"reject_action": "junk"}, "junk"),
        (4.5, {"greylist_score": 0}, "no action"),  # 0 switches a threshold off
        (7.0, {"junk_score": 0}, "greylist"),
        (20.0, {"reject_score": 0}, "junk"),
        (-3.0, {}, "no action"),
    ],
)
def test_actions_by_score(score: float, settings: dict[str, object], action: str) -> None:
    assert action_for(score, spam_settings(**settings)) == action


async def test_spam_headers_say_the_score_status_and_symbols() -> None:
    check = Fixed("c", sym("BAYES_SPAM", 5.1), sym("MISSING_DATE", 2.1))
    result = await Scanner([check], spam_settings()).scan(scan_input())
    assert spam_headers(result) == [
        ("X-Spam-Score", "7.20"),
        ("X-Spam-Status", "Yes, score=7.20 required=6.00"),
        ("X-Spam-Symbols", "BAYES_SPAM(5.10), MISSING_DATE(2.10)"),
    ]
    ham = await Scanner([Fixed("c", sym("R_SPF_ALLOW", -0.2))], spam_settings()).scan(scan_input())
    assert spam_headers(ham)[1] == ("X-Spam-Status", "No, score=-0.20 required=6.00")


async def test_the_symbols_field_is_folded_at_78_characters() -> None:
    names = [f"SOME_LONG_SYMBOL_NAME_{i}" for i in range(12)]
    check = Fixed("c", *(sym(n, 1.0) for n in names))
    result = await Scanner([check], spam_settings()).scan(scan_input())
    value = spam_headers(result)[2][1]
    lines = f"X-Spam-Symbols: {value}".split("\n")
    assert len(lines) > 3
    assert all(len(line) <= 78 for line in lines), lines
    assert all(line.startswith(" ") for line in lines[1:])
    # unfolded, it is every symbol once, comma-separated
    assert " ".join(line.strip() for line in lines).removeprefix("X-Spam-Symbols: ").split(
        ", "
    ) == [f"{n}(1.00)" for n in sorted(names)]


# -- GTUBE ---------------------------------------------------------------------------------


async def test_gtube_in_the_body_scores_1000() -> None:
    content = MESSAGE + GTUBE.encode() + b"\r\n"
    assert [(s.name, s.score) for s in await Gtube()(scan_input(content))] == [("GTUBE", 1000.0)]
    assert await Gtube()(scan_input(MESSAGE)) == ()


async def test_gtube_in_a_base64_part_is_found_decoded() -> None:
    encoded = base64.encodebytes(f"see: {GTUBE}\n".encode())
    content = (
        b"From: <a@client.test>\r\nSubject: b64\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded.replace(b"\n", b"\r\n")
    )
    assert GTUBE.encode() not in content
    assert [s.name for s in await Gtube()(scan_input(content))] == ["GTUBE"]


async def test_gtube_only_in_the_header_is_not_the_body() -> None:
    content = f"Subject: {GTUBE}\r\n\r\nhello\r\n".encode()
    assert await Gtube()(scan_input(content)) == ()


# -- the cleanup filter --------------------------------------------------------------------


def mx_input(**kw: object) -> CleanupInput:
    values: dict[str, object] = {
        "sender": "a@client.test",
        "recipients": ["bob@example.test"],
        "client_ip": "192.0.2.7",
        "helo": "client.test",
        "queue_id": "Q1",
        "from_mx": True,
    }
    values.update(kw)
    return CleanupInput(**values)  # type: ignore[arg-type]


def result_of(content: bytes) -> CleanupResult:
    return CleanupResult(content, "a@client.test", ["bob@example.test"])


class Gate:
    def __init__(self, admit: bool) -> None:
        self._admit = admit
        self.asked: list[tuple[str, str, list[str]]] = []

    async def admit(self, client_ip: str, sender: str, recipients: Sequence[str]) -> bool:
        self.asked.append((client_ip, sender, list(recipients)))
        return self._admit


def spam_filter(score: float, gate: Gate | None = None, **settings: object) -> SpamFilter:
    scanner = Scanner([Fixed("c", sym("TEST_SCORE", score))], spam_settings(**settings))
    return SpamFilter(scanner, greylist=gate)


async def test_forged_spam_fields_are_removed_and_ours_prepended() -> None:
    forged = (
        b"X-Spam-Status: No, score=-100\r\nX-Spam-Flag: NO\r\nX-Spam: no\r\nX-Spamish: kept\r\n"
        + MESSAGE
    )
    with capture_logs() as logs:
        out = await spam_filter(7.2)(result_of(forged), mx_input())
    assert isinstance(out, CleanupResult)
    head = split_message(out.content)
    assert [h.name for h in head.headers[:4]] == [
        "X-Spam-Score",
        "X-Spam-Status",
        "X-Spam-Symbols",
        "X-Spamish",
    ]
    assert [h.text for h in head.get_all("x-spam-status")] == ["Yes, score=7.20 required=6.00"]
    assert list(head.get_all("x-spam-flag")) == []
    assert list(head.get_all("x-spam")) == []
    assert out.verdict.symbol("TEST_SCORE") is not None
    assert (out.verdict.action, out.verdict.folder) == ("folder", "Junk")
    assert [r["fields"] for r in logs if r["event"] == "spam_fields_removed"] == [3]


async def test_submissions_authenticated_and_local_mail_are_not_scanned() -> None:
    f = spam_filter(1000)
    for info in (
        mx_input(from_mx=False),
        mx_input(submission=True),
        mx_input(auth_user="alice@example.test"),
    ):
        out = await f(result_of(MESSAGE), info)
        assert isinstance(out, CleanupResult)
        assert out.content == MESSAGE
        assert out.verdict.action == "accept"


async def test_disabled_filter_leaves_mail_alone() -> None:
    scanner = Scanner([Fixed("c", sym("GTUBE", 1000))], spam_settings())
    out = await SpamFilter(scanner, enabled=False)(result_of(MESSAGE), mx_input())
    assert isinstance(out, CleanupResult)
    assert out.content == MESSAGE


async def test_over_reject_score_is_quarantined_by_default_and_logged() -> None:
    out = await spam_filter(1000)(result_of(MESSAGE), mx_input())
    assert isinstance(out, CleanupResult)
    assert out.verdict.action == "quarantine"
    assert out.accepted  # the door keeps it; the client gets 250


async def test_reject_action_reject_refuses_with_550_and_logs_score_and_symbols() -> None:
    with capture_logs() as logs:
        out = await spam_filter(1000, reject_action="reject")(result_of(MESSAGE), mx_input())
    assert isinstance(out, CleanupResult)
    assert out.verdict.action == "reject"
    [line] = [r for r in logs if r["event"] == "spam_rejected"]
    assert (line["queue_id"], line["score"], line["symbols"]) == (
        "Q1",
        "1000.00",
        "TEST_SCORE(1000.00)",
    )


async def test_cleanup_answers_the_spam_reject_with_550_5_7_1() -> None:
    from pochta.config.load import settings_from_dict
    from pochta.tables.configured import ConfiguredTables

    settings = settings_from_dict({"server": {"hostname": "mail.example.test"}})
    cleanup = Cleanup(
        settings,
        ConfiguredTables.open(settings.tables),
        filters=[spam_filter(1000, reject_action="reject")],
    )
    out = await cleanup.process(MESSAGE, mx_input())
    assert out.reply == Reply(550, "5.7.1", "Spam message rejected")


async def test_greylist_score_asks_the_gate() -> None:
    gate = Gate(admit=False)
    out = await spam_filter(4.5, gate)(result_of(MESSAGE), mx_input())
    assert isinstance(out, CleanupResult)
    assert (out.verdict.action, out.verdict.reason) == ("tempfail", "Greylisted, try again later")
    assert gate.asked == [("192.0.2.7", "a@client.test", ["bob@example.test"])]
    passing = Gate(admit=True)
    out = await spam_filter(4.5, passing)(result_of(MESSAGE), mx_input())
    assert isinstance(out, CleanupResult)
    assert out.verdict.action == "accept"
    assert split_message(out.content).get_all("x-spam-score")[0].text == "4.50"
    # below greylist_score, the gate is not asked
    quiet = Gate(admit=False)
    await spam_filter(3.0, quiet)(result_of(MESSAGE), mx_input())
    assert quiet.asked == []


async def test_an_earlier_refusal_is_not_scanned_and_junk_is_not_weakened() -> None:
    refused = result_of(MESSAGE).decide("reject", "DMARC")
    out = await spam_filter(1000)(refused, mx_input())
    assert isinstance(out, CleanupResult)
    assert out.verdict.action == "reject"
    assert out.content == MESSAGE
    junk = result_of(MESSAGE).decide("folder", "DMARC quarantine", folder="Junk")
    out = await spam_filter(0.5)(junk, mx_input())
    assert isinstance(out, CleanupResult)
    assert (out.verdict.action, out.verdict.folder) == ("folder", "Junk")


# -- the [spam] settings -------------------------------------------------------------------


def walked(spam: dict[str, object]) -> list[str]:
    found = walk_settings({"server": {"hostname": "mail.example.test"}, "spam": spam})
    return [str(p) for p in found.problems]


def test_scores_table_is_read_and_checked_with_its_key() -> None:
    found = walk_settings(
        {"server": {"hostname": "mail.example.test"}, "spam": {"scores": {"BAYES_SPAM": 5}}}
    )
    assert found.problems == []
    assert found.settings is not None
    assert found.settings.spam.scores == {"BAYES_SPAM": 5.0}
    assert walked({"scores": {"BAYES_SPAM": "high"}}) == [
        'spam.scores.BAYES_SPAM: "high" is not a number'
    ]
    assert walked({"scores": {"GTUBE": 1e6}}) == [
        "spam.scores.GTUBE: 1000000.0 is out of range; use a number from -10000 to 10000"
    ]
    assert walked({"scores": ["GTUBE=1"]}) == [
        "spam.scores: a list is not a table; write { NAME = value, ... }"
    ]
    assert walked({"reject_action": "bounce"}) == [
        'spam.reject_action: "bounce" is not allowed; use one of "junk", "quarantine", "reject"'
    ]


def test_sample_config_writes_the_scores_table() -> None:
    import tomllib

    text = render_config(
        {"server": {"hostname": "h.test"}, "spam": {"scores": {"BAYES_SPAM": 5.0}}}
    )
    assert 'scores = { "BAYES_SPAM" = 5.0 }' in text
    assert tomllib.loads(text)["spam"]["scores"] == {"BAYES_SPAM": 5.0}
    empty = render_config({"server": {"hostname": "h.test"}})
    assert tomllib.loads(empty)["spam"]["scores"] == {}
