"""The Rspamd connector's pure parts: the /checkv2 request headers, the reply parser, the
client over a mock HTTP transport, and the filter's decisions over a fake client."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx
import pytest

from pochta.cleanup.pipeline import CleanupInput, CleanupResult
from pochta.cleanup.rspamd_filter import RspamdFilter, spam_fields
from pochta.cleanup.verdict import Symbol
from pochta.mime.headers import split_message
from pochta.protocols.smtp.replies import Reply
from pochta.spam.rspamd import (
    RspamdClient,
    RspamdError,
    RspamdReply,
    parse_reply,
    request_headers,
)

# A /checkv2 reply as Rspamd 3.4 writes it.
REPLY = {
    "is_skipped": False,
    "score": 7.2,
    "required_score": 15.0,
    "action": "add header",
    "symbols": {
        "MISSING_DATE": {
            "name": "MISSING_DATE",
            "score": 1.0,
            "metric_score": 1.0,
            "description": "Message date is missing",
        },
        "R_SPF_FAIL": {
            "name": "R_SPF_FAIL",
            "score": 6.2,
            "metric_score": 1.0,
            "options": ["-all"],
        },
    },
    "messages": {"smtp_message": "Spam here"},
    "message-id": "undef",
}


def test_reply_is_parsed() -> None:
    found = parse_reply(json.dumps(REPLY).encode())
    assert found.action == "add header"
    assert found.score == 7.2
    assert found.required_score == 15.0
    assert found.symbols == (
        Symbol(name="MISSING_DATE", score=1.0, description="Message date is missing"),
        Symbol(name="R_SPF_FAIL", score=6.2, options=("-all",)),
    )
    assert found.smtp_message == "Spam here"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"error": "bad request"}', "Rspamd says: bad request"),
        (b'{"action": "explode", "score": 1}', "no known action"),
        (b'{"action": "reject", "score": "high"}', "score is not a number"),
        (b'{"action": "reject", "score": 1, "symbols": 3}', "neither an object"),
        (b'{"action": "reject", "score": 1, "symbols": {"A": {"score": 1}}}', "without a name"),
        (b'{"action": "reject", "score": 1e999}', "not finite"),
    ],
)
def test_bad_replies_raise_the_client_error(raw: bytes, why: str) -> None:
    with pytest.raises(RspamdError, match=why):
        parse_reply(raw)


def test_request_headers_carry_the_transaction() -> None:
    headers = request_headers(
        client_ip="192.0.2.1",
        helo="client.test",
        client_hostname="client.test",
        sender="a@b.test",
        recipients=["c@d.test", "e@d.test"],
        queue_id="Q1",
        auth_user="",
        mta_name="mx.d.test",
    )
    assert headers == [
        ("IP", "192.0.2.1"),
        ("Helo", "client.test"),
        ("Hostname", "client.test"),
        ("From", "a@b.test"),
        ("Rcpt", "c@d.test"),
        ("Rcpt", "e@d.test"),
        ("Queue-Id", "Q1"),
        ("MTA-Name", "mx.d.test"),
    ]
    one = dict(request_headers(sender="", recipients=["x@d.test"], auth_user="bob\r\nX: y"))
    assert one["From"] == "<>"
    assert one["Deliver-To"] == "x@d.test"
    assert one["User"] == "bob  X: y"  # no header injection
    assert "Pass" not in one


async def test_client_posts_to_checkv2_and_reads_the_reply() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=REPLY)

    client = RspamdClient(
        "http://127.0.0.1:11333/", timeout_seconds=5, transport=httpx.MockTransport(answer)
    )
    found = await client.check(b"Subject: x\r\n\r\nbody\r\n", [("IP", "192.0.2.1")])
    assert found.action == "add header"
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:11333/checkv2"
    assert request.headers["IP"] == "192.0.2.1"
    assert request.content == b"Subject: x\r\n\r\nbody\r\n"


async def test_client_errors_say_what_to_check() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="internal")

    client = RspamdClient("http://r", timeout_seconds=5, transport=httpx.MockTransport(broken))
    with pytest.raises(RspamdError, match="answered HTTP 500: internal"):
        await client.check(b"x", [])

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client = RspamdClient("http://r", timeout_seconds=5, transport=httpx.MockTransport(refused))
    with pytest.raises(RspamdError, match=r"cannot be reached.*\[rspamd\] url"):
        await client.check(b"x", [])

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    client = RspamdClient("http://r", timeout_seconds=5, transport=httpx.MockTransport(slow))
    with pytest.raises(RspamdError, match="within 5 s"):
        await client.check(b"x", [])


# -- the filter -----------------------------------------------------------------------------


class FakeRspamd:
    def __init__(self, reply: RspamdReply | RspamdError) -> None:
        self.reply = reply
        self.calls: list[tuple[bytes, list[tuple[str, str]]]] = []

    async def check(self, content: bytes, headers: Sequence[tuple[str, str]]) -> RspamdReply:
        self.calls.append((content, list(headers)))
        if isinstance(self.reply, RspamdError):
            raise self.reply
        return self.reply


CONTENT = b"X-Spam-Status: No, forged\r\nSubject: hi\r\n\r\nbody\r\n"
MX = CleanupInput(sender="a@b.test", recipients=["c@d.test"], client_ip="192.0.2.1", from_mx=True)


def reply(action: str, score: float = 7.2, symbols: tuple[Symbol, ...] = ()) -> RspamdReply:
    return RspamdReply(action, score, 6.0, symbols, {"smtp_message": "Go away"})


async def run(fake: FakeRspamd, info: CleanupInput = MX, **options: str) -> CleanupResult | Reply:
    result = CleanupResult(CONTENT, info.sender, list(info.recipients))
    return await RspamdFilter(fake, hostname="mx.d.test", **options)(result, info)


@pytest.mark.parametrize(
    ("action", "verdict", "folder"),
    [
        ("reject", "reject", ""),
        ("soft reject", "tempfail", ""),
        ("greylist", "tempfail", ""),
        ("add header", "folder", "Junk"),
        ("rewrite subject", "folder", "Junk"),
        ("no action", "accept", ""),
    ],
)
async def test_rspamd_action_decides(action: str, verdict: str, folder: str) -> None:
    done = await run(FakeRspamd(reply(action)))
    assert isinstance(done, CleanupResult)
    assert done.verdict.action == verdict
    assert done.verdict.folder == folder


async def test_reject_can_go_to_junk_instead() -> None:
    done = await run(FakeRspamd(reply("reject")), reject_action="junk")
    assert isinstance(done, CleanupResult)
    assert done.verdict.delivery_folder == "Junk"


async def test_symbols_and_headers_are_rspamds() -> None:
    symbols = (Symbol(name="A_SYM", score=5.0), Symbol(name="B_SYM", score=2.2))
    done = await run(FakeRspamd(reply("add header", 7.2, symbols)))
    assert isinstance(done, CleanupResult)
    assert [s.name for s in done.verdict.symbols] == ["A_SYM", "B_SYM"]
    assert done.verdict.score == pytest.approx(7.2)
    head = split_message(done.content)
    # The forged field is gone; ours are on top.
    assert [h.text for h in head.get_all("x-spam-status")] == ["Yes, score=7.20 required=6.00"]
    assert [h.key for h in head.headers[:3]] == ["x-spam-score", "x-spam-status", "x-spam-symbols"]
    assert head.get_all("x-spam-score")[0].text == "7.20"
    assert head.get_all("x-spam-symbols")[0].text == "A_SYM(5.00),\r\n\tB_SYM(2.20)"


async def test_a_pre_result_score_is_kept_in_the_verdict() -> None:
    # GTUBE: Rspamd answers score 15 with one symbol of score 0.
    done = await run(FakeRspamd(reply("reject", 15.0, (Symbol(name="GTUBE"),))))
    assert isinstance(done, CleanupResult)
    assert done.verdict.score == pytest.approx(15.0)
    assert done.verdict.reason == "Go away"


def test_ham_status_says_no() -> None:
    assert spam_fields(RspamdReply("no action", 1.5, 15.0))[1] == (
        "X-Spam-Status",
        "No, score=1.50 required=15.00",
    )


async def test_unreachable_rspamd_accepts_or_tempfails() -> None:
    failing = FakeRspamd(RspamdError("cannot be reached"))
    done = await run(failing)
    assert isinstance(done, CleanupResult)
    assert done.verdict.action == "accept"
    assert done.verdict.symbol("RSPAMD_UNAVAILABLE") is not None
    refused = await run(failing, failure_action="tempfail")
    assert refused == Reply(451, "4.7.1", "Spam filter unavailable, try again later")


async def test_only_mx_mail_is_scanned() -> None:
    fake = FakeRspamd(reply("reject"))
    submission = CleanupInput(sender="a@d.test", recipients=["x@y.test"], submission=True)
    done = await run(fake, submission)
    assert isinstance(done, CleanupResult)
    assert done.verdict.action == "accept"
    assert fake.calls == []
