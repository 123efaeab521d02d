"""LIST-EXTENDED selection (RFC 5258): RECURSIVEMATCH and CHILDINFO."""

from __future__ import annotations

from pochta.access.imap_list import list_entries
from pochta.protocols.imap.commands import ListOptions
from pochta.store import FolderInfo

NAMES = ["t", "t.a", "t.a.x", "t.b", "t.b.b", "t.b.c", "t.c", "t.c.c"]
SUBSCRIBED = ["t.a.x", "t.b.b", "t.b.c", "t.c.c"]


def folder(name: str) -> FolderInfo:
    return FolderInfo(name, None, 1, 1, 0, 0, 1, name in SUBSCRIBED, 0)


def listed(*patterns: str) -> dict[str, bool]:
    """name -> CHILDINFO, for LIST (SUBSCRIBED RECURSIVEMATCH) "" (patterns)."""
    options = ListOptions(subscribed=True, recursive_match=True)
    entries = list_entries([folder(n) for n in NAMES], SUBSCRIBED, patterns, options)
    return {e.name: e.child_info for e in entries}


def test_a_parent_gets_childinfo_for_children_the_patterns_miss() -> None:
    assert listed("t.a") == {"t.a": True}
    assert listed("t.%") == {"t.a": True, "t.b": True, "t.c": True}


def test_no_childinfo_when_the_subscribed_children_are_listed_themselves() -> None:
    # RFC 5258 §3.5: CHILDINFO reports matches the reply does not show.
    assert listed("t.a", "t.a.x") == {"t.a.x": False}
    assert listed("t*c") == {"t.b.c": False, "t.c.c": False}
    # "t*b" lists t.b.b itself, but not t.b's other subscribed child t.b.c: CHILDINFO.
    assert listed("t*b") == {"t.b": True, "t.b.b": False}
    assert listed("t.b", "t.b.b", "t.b.c") == {"t.b.b": False, "t.b.c": False}
