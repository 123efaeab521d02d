"""`cli.queue.reroute`, the envelope side of `pochta queue requeue` (postsuper -r): the
pending recipients resolved again from their original address, with stand-in canonical
and expansion functions."""

from __future__ import annotations

from pochta.cli.queue import Expand, reroute
from pochta.queue.envelope import Envelope, Recipient

LIST = "team@example.org"


def expand_team(
    members: dict[str, list[str]], refused: dict[str, str] | None = None
) -> tuple[Expand, list[str]]:
    """An ``expand`` that knows aliases ``members`` (address -> mailbox accounts) and
    refuses the addresses of ``refused`` with their reply."""
    calls: list[str] = []

    def expand(
        recipients: list[Recipient],
    ) -> tuple[list[Recipient], list[tuple[str, str]]]:
        out: list[Recipient] = []
        failed: list[tuple[str, str]] = []
        for rcpt in recipients:
            calls.append(rcpt.address)
            if refused and rcpt.address in refused:
                failed.append((rcpt.address, refused[rcpt.address]))
                continue
            for member in members.get(rcpt.address, [rcpt.address]):
                out.append(
                    Recipient(
                        address=member,
                        original=rcpt.address,
                        orcpt=rcpt.orcpt,
                        notify=rcpt.notify,
                        destination=f"mailbox:{member}",
                    )
                )
        return out, failed

    return expand, calls


def branch(address: str, status: str = "deferred") -> Recipient:
    return Recipient(
        address=address,
        original=LIST,
        orcpt=f"rfc822;{LIST}",
        notify=("FAILURE",),
        status=status,  # type: ignore[arg-type]
        attempts=3,
        reply="451 4.3.0 temporary failure",
        destination=f"mailbox:{address}",
    )


def envelope(*recipients: Recipient) -> Envelope:
    return Envelope(
        queue_id="08EAQwWkaaIaQfZ",
        sender="carol@example.net",
        recipients=list(recipients),
        arrival=1.0,
        size=10,
    )


def test_an_alias_is_expanded_once_and_delivered_branches_are_not_repeated() -> None:
    done = branch("a@example.org", "delivered")
    env = envelope(done, branch("b@example.org"), branch("c@example.org"))
    expand, calls = expand_team({LIST: ["a@example.org", "b@example.org", "d@example.org"]})
    reroute(env, lambda a: a, expand)
    assert calls == [LIST]  # the list once, not once per queued branch
    assert env.recipients[0] is done
    fresh = env.recipients[1:]
    assert [r.address for r in fresh] == ["b@example.org", "d@example.org"]
    for r in fresh:
        assert (r.status, r.attempts, r.original) == ("pending", 0, LIST)
        assert (r.orcpt, r.notify) == (f"rfc822;{LIST}", ("FAILURE",))


def test_the_canonical_maps_apply_before_expansion() -> None:
    env = envelope(branch("b@example.org"))
    expand, calls = expand_team({"crew@example.org": ["e@example.org"]})
    reroute(env, lambda a: "crew@example.org" if a == LIST else a, expand)
    assert calls == ["crew@example.org"]
    assert [r.address for r in env.recipients] == ["e@example.org"]


def test_a_refused_address_is_bounced_with_its_original_recipient() -> None:
    env = envelope(branch("b@example.org"))
    expand, _ = expand_team({}, refused={LIST: "550 5.1.1 No such user here"})
    reroute(env, lambda a: a, expand)
    (bounced,) = env.recipients
    assert (bounced.address, bounced.status) == (LIST, "bounced")
    assert bounced.reply == "550 5.1.1 No such user here"
    assert (bounced.orcpt, bounced.notify, bounced.notified) == (
        f"rfc822;{LIST}",
        ("FAILURE",),
        False,  # the queue manager owes the DSN
    )


def test_a_recipient_with_no_original_is_resolved_from_its_address() -> None:
    plain = Recipient(address="x@example.org", status="deferred")
    env = envelope(plain)
    expand, calls = expand_team({"x@example.org": ["y@example.org"]})
    reroute(env, lambda a: a, expand)
    assert calls == ["x@example.org"]
    assert [r.address for r in env.recipients] == ["y@example.org"]


def test_nothing_pending_changes_nothing() -> None:
    done = branch("a@example.org", "delivered")
    env = envelope(done)
    expand, calls = expand_team({})
    reroute(env, lambda a: a, expand)
    assert calls == []
    assert env.recipients == [done]
