"""LIST and LSUB answers (RFC 9051 §6.3.9, RFC 3501 §6.3.8-9, LIST-EXTENDED RFC 5258,
SPECIAL-USE RFC 6154): which folder names match, and with which attributes.

Names are Unicode with ``"."`` as the hierarchy separator (the store's words). A folder whose
parent does not exist (``A.B`` without ``A``) makes the parent appear as ``\\NonExistent``
(RFC 5258 §3.4, which implies ``\\Noselect``) where a ``%`` pattern stops at that level.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from pochta.protocols.imap.commands import ListOptions
from pochta.store import HIERARCHY_SEPARATOR, INBOX, FolderInfo

SEP = HIERARCHY_SEPARATOR


@lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the separator. INBOX is
    matched without regard to case (RFC 3501 §5.1)."""
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append(f"[^{re.escape(SEP)}]*")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    rx = pattern_regex(pattern)
    if rx.fullmatch(name):
        return True
    if name == INBOX or name.startswith(INBOX + SEP):
        # The client may write inbox in any case.
        head, sep, rest = pattern.partition(SEP)
        if head.upper() == INBOX:
            return pattern_regex(INBOX + sep + rest).fullmatch(name) is not None
    return False


def canonical_pattern(reference: str, pattern: str) -> str:
    """RFC 3501 §6.3.8: the pattern is read in the context of the reference, which is
    prefixed to it (our names have no root separator, so no other rule applies)."""
    return reference + pattern


@dataclass(slots=True)
class ListEntry:
    name: str
    attributes: list[str] = field(default_factory=list)
    child_info: bool = False  # RECURSIVEMATCH: ("CHILDINFO" ("SUBSCRIBED"))
    folder: FolderInfo | None = None


def list_entries(
    folders: Iterable[FolderInfo],
    subscriptions: Iterable[str],
    patterns: Iterable[str],
    options: ListOptions,
) -> list[ListEntry]:
    by_name = {f.name: f for f in folders}
    subscribed = set(subscriptions)
    pats = list(patterns)
    # Every name that exists, plus the parents it implies.
    names: set[str] = set(by_name)
    for name in list(by_name):
        parts = name.split(SEP)
        for i in range(1, len(parts)):
            names.add(SEP.join(parts[:i]))
    if options.subscribed or options.lsub:
        names |= subscribed
    children: dict[str, list[str]] = {}
    for name in names:
        if SEP in name:
            children.setdefault(name.rsplit(SEP, 1)[0], []).append(name)

    def has_subscribed_descendant(name: str) -> bool:
        prefix = name + SEP
        return any(s.startswith(prefix) for s in subscribed)

    def has_unlisted_subscribed_descendant(name: str) -> bool:
        # RFC 5258 §3.5: CHILDINFO tells of matching children the reply does not show
        # themselves; a subscribed child that a pattern matches is listed on its own.
        prefix = name + SEP
        return any(
            s.startswith(prefix) and not any(matches(p, s) for p in pats) for s in subscribed
        )

    out: list[ListEntry] = []
    for name in sorted(names, key=_order):
        if not any(matches(p, name) for p in pats):
            continue
        folder = by_name.get(name)
        attrs: list[str] = []
        if options.lsub or options.subscribed:
            if name in subscribed:
                pass
            elif options.recursive_match and has_unlisted_subscribed_descendant(name):
                entry = ListEntry(name, [], child_info=True, folder=folder)
                _fill(entry, folder, name, children, subscribed, options, attrs)
                out.append(entry)
                continue
            elif (
                options.lsub
                and has_subscribed_descendant(name)
                and any(p.endswith("%") for p in pats)
            ):
                attrs.append("\\Noselect")  # RFC 3501 §6.3.9
                out.append(ListEntry(name, attrs, folder=folder))
                continue
            else:
                continue
        if options.special_use and (folder is None or folder.special_use is None):
            continue
        entry = ListEntry(name, [], folder=folder)
        _fill(entry, folder, name, children, subscribed, options, attrs)
        out.append(entry)
    return out


def _fill(
    entry: ListEntry,
    folder: FolderInfo | None,
    name: str,
    children: dict[str, list[str]],
    subscribed: set[str],
    options: ListOptions,
    attrs: list[str],
) -> None:
    if folder is None:
        attrs.append("\\NonExistent" if not options.lsub else "\\Noselect")
    if options.return_children or options.lsub:
        attrs.append("\\HasChildren" if children.get(name) else "\\HasNoChildren")
    if (options.return_subscribed or options.subscribed) and name in subscribed:
        attrs.append("\\Subscribed")
    if options.return_special_use and folder is not None and folder.special_use:
        attrs.append(folder.special_use)
    entry.attributes = attrs


def _order(name: str) -> tuple[int, str]:
    return (0 if name == INBOX else 1, name)
