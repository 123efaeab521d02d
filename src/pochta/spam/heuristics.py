"""Header and MIME heuristics: small rules, each one symbol (Rspamd's name where it has one).

Each rule below is a function of the scanned message that returns its symbols; its docstring
says what it finds, why that is a sign of spam or phishing, and the score. Scores are
Rspamd's defaults (``rules/*.lua``, ``scores.d/*``) where Rspamd has the rule; a rule Rspamd
does not have says where its score comes from. Two checks run them:

- :class:`HeaderHeuristics`: Date, Message-ID, the From display name, the Subject, the To
  field. It takes a clock (``Date`` in the future or the past) and a callable giving the
  hosted domains (display names spoofing them), asked per message.
- :class:`MimeHeuristics`: the body: HTML-only, links whose text shows another domain than
  they lead to, executable attachments, charset and transfer-encoding abuse, MIME defects.

Both read only :class:`~pochta.spam.message.ScanMessage` (parsed once, bounded, never
raising), so a rule never does I/O and costs microseconds.
"""

from __future__ import annotations

import email.utils
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from urllib.parse import unquote, urlsplit

from pochta.cleanup.verdict import Symbol
from pochta.mailauth.dmarc import organizational_domain
from pochta.spam.check import ScanInput
from pochta.spam.message import ScanMessage

__all__ = [
    "BAD_EXTENSIONS",
    "HeaderHeuristics",
    "MimeHeuristics",
]

Clock = Callable[[], float]
HostedDomains = Callable[[], Iterable[str]]


def _sym(name: str, score: float, description: str, *options: str) -> Symbol:
    return Symbol(name=name, score=score, description=description, options=options)


# -- Date ------------------------------------------------------------------------------------

FUTURE_SECONDS = 2 * 3600
"""Rspamd's DATE_IN_FUTURE threshold: more than 2 hours ahead."""
PAST_SECONDS = 4 * 86400
"""DATE_IN_PAST threshold: more than 4 days old (SpamAssassin's DATE_IN_PAST_96_XX; Rspamd's
one day also fires on much real mail held in queues, digests and forwards: on the corpus'
training part a day flags 19% of the ham for 57% of the spam, 4 days 10% for 48%)."""


def date_symbols(message: ScanMessage, now: float) -> list[Symbol]:
    """MISSING_DATE (1.0): RFC 5322 §3.6 requires an origination date; only bulk tools and
    bots leave it out (cleanup adds one to submissions, so our own users never miss it).
    INVALID_DATE (1.5): a Date that does not parse as RFC 5322 §3.3 date-time.
    DATE_IN_FUTURE (4.0): more than 2 hours ahead of our clock: spam dated ahead to sort on
    top of the inbox. DATE_IN_PAST (1.0): more than 4 days old (:data:`PAST_SECONDS`): spam
    sent from stale templates or a botnet with wrong clocks (real mail is rarely that late;
    a day or two is a queue retry or a digest)."""
    value = message.header("date")
    if value is None or not value.strip():
        return [_sym("MISSING_DATE", 1.0, "Message date is missing")]
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return [_sym("INVALID_DATE", 1.5, "Malformed date header", value[:64])]
    if when.tzinfo is None:  # RFC 5322 §3.3: "-0000" means UTC with no local offset
        when = when.replace(tzinfo=UTC)
    try:
        difference = now - when.timestamp()
    except (OverflowError, ValueError):
        return [_sym("INVALID_DATE", 1.5, "Malformed date header", value[:64])]
    if difference > PAST_SECONDS:
        hours = str(int(difference // 3600))
        return [_sym("DATE_IN_PAST", 1.0, "Message date is in past", hours)]
    if -difference > FUTURE_SECONDS:
        hours = str(int(-difference // 3600))
        return [_sym("DATE_IN_FUTURE", 4.0, "Message date is in future", hours)]
    return []


# -- Message-ID ------------------------------------------------------------------------------

# RFC 5322 §3.6.4: msg-id = [CFWS] "<" id-left "@" id-right ">" [CFWS]; loosely (obs forms,
# as Rspamd's INVALID_MSGID): one "@" between non-empty parts, no spaces or brackets inside.
_MSG_ID = re.compile(r"\s*<[^<>@\s]+@[^<>@\s]+>\s*")


def message_id_symbols(message: ScanMessage) -> list[Symbol]:
    """MISSING_MID (2.5): RFC 5322 §3.6.4 says every message SHOULD have a Message-ID, and
    every real MTA and client adds one. INVALID_MSGID (1.7): one that is not ``<left@right>``:
    hand-made by a spam tool."""
    value = message.header("message-id")
    if value is None or not value.strip():
        return [_sym("MISSING_MID", 2.5, "Message id is missing")]
    if not _MSG_ID.fullmatch(value):
        return [_sym("INVALID_MSGID", 1.7, "Message id is incorrect", value[:64])]
    return []


# -- From display name -----------------------------------------------------------------------

_NAME_ADDRESS = re.compile(r"[\w.+'-]+@((?:[\w-]+\.)+[\w-]{2,})")


def _in_domain(domain: str, parent: str) -> bool:
    return domain == parent or domain.endswith("." + parent)


def display_name_symbols(message: ScanMessage, hosted: Iterable[str]) -> list[Symbol]:
    """The From display name naming someone the From address is not.

    SPOOF_DISPLAY_NAME (8.0, Rspamd's): the name holds an address in a domain hosted here
    (``"ceo@example.org" <x@evil.example>``) and the From address is outside it: a phisher
    impersonating a colleague; mail clients show only the name. (Rspamd compares with the
    recipients' domains; for mail coming in they are the hosted domains.)
    SPOOF_DISPLAY_NAME_DOMAIN (4.0, ours, half the above: a bare domain is a weaker claim):
    the name mentions a hosted domain as a word (``"example.org IT support"``) and the From
    address is outside it.
    FROM_NEQ_DISPLAY_NAME (4.0, Rspamd's): the name holds an address of another domain than
    the From address, not a hosted one."""
    author = message.author
    if author is None or not author.name or not author.address:
        return []
    from_domain = author.domain
    ours = [d.rstrip(".").lower() for d in hosted if d]
    name = author.name.lower()
    for match in _NAME_ADDRESS.finditer(name):
        domain = match.group(1).rstrip(".")
        if organizational_domain(domain) == organizational_domain(from_domain):
            continue  # the same organisation ("bob@sub.example.net" <bob@example.net>)
        for own in ours:
            if _in_domain(domain, own):
                return [
                    _sym(
                        "SPOOF_DISPLAY_NAME",
                        8.0,
                        "Display name is being used to spoof and trick the recipient",
                        from_domain,
                        domain,
                    )
                ]
        return [
            _sym(
                "FROM_NEQ_DISPLAY_NAME",
                4.0,
                "Display name contains an email address different to the From address",
                from_domain,
                domain,
            )
        ]
    for own in ours:
        if _in_domain(from_domain, own):
            continue
        if re.search(rf"(?<![\w.-]){re.escape(own)}(?![\w-])", name):
            return [
                _sym(
                    "SPOOF_DISPLAY_NAME_DOMAIN",
                    4.0,
                    "Display name names a hosted domain the From address is not in",
                    from_domain,
                    own,
                )
            ]
    return []


# -- Subject ---------------------------------------------------------------------------------

_REPLY_PREFIX = re.compile(r"(?i)^(?:(?:re|fwd?|aw|antwort|sv)\s*:\s*)+")
# Scripts whose letters look alike (homoglyphs: Cyrillic "а" for Latin "a").
_CONFUSABLE_SCRIPTS = frozenset({"LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "CHEROKEE"})


def _scripts(word: str) -> set[str]:
    found: set[str] = set()
    for ch in word:
        if ch.isalpha():
            script = unicodedata.name(ch, "").split(" ", 1)[0]
            if script in _CONFUSABLE_SCRIPTS:
                found.add(script)
    return found


def mixed_script_word(text: str) -> str:
    """The first word that mixes letters of two look-alike scripts, "" when none."""
    for word in text.split():
        if len(_scripts(word)) > 1:
            return word
    return ""


def subject_symbols(message: ScanMessage) -> list[Symbol]:
    """SUBJ_ALL_CAPS (Rspamd: 3.0 × length/40, at most 3.0): a Subject shouting in capitals;
    only for at least two words and 5 letters ("FYI" is fine), reply prefixes left out.
    EMPTY_SUBJECT_WITH_LINK (2.0, ours: Rspamd scores an empty Subject 1.0 alone; a note
    without subject is common, with a link it is the classic "look at this" spam): no or an
    empty Subject and a link in the body.
    SUBJECT_MIXED_SCRIPTS (3.0, ours, Rspamd's R_MIXED_CHARSET is 5.0 for the body): a word
    mixing Latin, Cyrillic or Greek letters ("PаyPal" with a Cyrillic "а"): homoglyphs to pass
    word filters or to impersonate a brand; no real word does that."""
    subject = message.header("subject")
    text = _REPLY_PREFIX.sub("", subject or "").strip()
    out: list[Symbol] = []
    if not text:
        if message.links:
            out.append(_sym("EMPTY_SUBJECT_WITH_LINK", 2.0, "Empty subject and a link in the body"))
        return out
    letters = [c for c in text if c.isalpha()]
    if len(text.split()) >= 2 and len(letters) >= 5 and all(c.isupper() for c in letters):
        score = round(3.0 * min(1.0, len(text) / 40), 2)
        out.append(_sym("SUBJ_ALL_CAPS", score, "All capital letters in subject"))
    word = mixed_script_word(text)
    if word:
        out.append(_sym("SUBJECT_MIXED_SCRIPTS", 3.0, "Subject word mixes scripts", word))
    return out


def from_name_script_symbols(message: ScanMessage) -> list[Symbol]:
    """FROM_NAME_MIXED_SCRIPTS (3.0, ours, as SUBJECT_MIXED_SCRIPTS): a word of the From
    display name mixing look-alike scripts: a brand or colleague spelt with homoglyphs."""
    author = message.author
    word = mixed_script_word(author.name) if author is not None else ""
    if word:
        return [_sym("FROM_NAME_MIXED_SCRIPTS", 3.0, "From name word mixes scripts", word)]
    return []


# -- recipients ------------------------------------------------------------------------------

# Rspamd's R_UNDISC_RCPT: "undisclosed-recipients:;" and its spellings.
_UNDISCLOSED = re.compile(r"(?i)^\s*[<\"]?undisclosed[- ]recipients?\b.*:")
MANY_RECIPIENTS = 50
"""Addresses in To and Cc from which TO_MANY_RECIPIENTS counts."""


def recipient_symbols(message: ScanMessage) -> list[Symbol]:
    """R_UNDISC_RCPT (3.0, Rspamd's): To says "undisclosed-recipients:;": the real list was
    hidden in Bcc, what bulk senders do. TO_MANY_RECIPIENTS (1.0, ours; Rspamd's RCPT_COUNT
    symbols score 0): at least :data:`MANY_RECIPIENTS` addresses shown in To and Cc: a list
    pasted into To rather than sent through a mailing list."""
    out: list[Symbol] = []
    if any(_UNDISCLOSED.match(to) for to in message.headers("to")):
        out.append(_sym("R_UNDISC_RCPT", 3.0, "Recipients are absent or undisclosed"))
    count = message.address_count("to") + message.address_count("cc")
    if count >= MANY_RECIPIENTS:
        out.append(_sym("TO_MANY_RECIPIENTS", 1.0, "Many recipients in To and Cc", str(count)))
    return out


class HeaderHeuristics:
    """The header rules: Date, Message-ID, From display name, Subject, To."""

    name = "header_heuristics"
    waits = False

    def __init__(self, *, hosted_domains: HostedDomains, clock: Clock = time.time) -> None:
        self._hosted = hosted_domains
        self._clock = clock

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        message = scan.message
        return [
            *date_symbols(message, self._clock()),
            *message_id_symbols(message),
            *display_name_symbols(message, self._hosted()),
            *subject_symbols(message),
            *from_name_script_symbols(message),
            *recipient_symbols(message),
        ]


# -- HTML and links --------------------------------------------------------------------------


def html_only_symbols(message: ScanMessage) -> list[Symbol]:
    """MIME_HTML_ONLY (0.2, Rspamd's): HTML and no text/plain alternative: mail clients send
    both, bulk tools often only HTML. Weak alone (some newsletters do it too)."""
    types = {p.content_type for p in message.text_parts}
    if "text/html" in types and "text/plain" not in types:
        return [_sym("MIME_HTML_ONLY", 0.2, "Messages that have only HTML part")]
    return []


# What a link's text must look like to count as showing a place: a URL, or a host name
# with a top-level domain of letters ("www.bank.example", "bank.example/login").
_SHOWN_URL = re.compile(r"(?i)^(?:https?://)?((?:[a-z0-9-]+\.)+[a-z]{2,63})(?::\d+)?(?:[/?#]\S*)?$")


def _host(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https"):
        return ""
    return host.rstrip(".").lower()


OWN_CLICK_SERVER_SCORE = 1.0
"""PHISHING's score when the href leads to the From address' organisation."""


def _redirects_to(url: str, host: str) -> bool:
    """Whether ``url`` carries ``host`` as the place it redirects to, after its own host
    (``http://click.example/r?u=http%3A%2F%2Fwww.shop.example`` for ``www.shop.example``)."""
    rest = unquote(url.strip().lower().split("//", 1)[-1].partition("/")[2])
    return re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", rest) is not None


def phishing_symbols(message: ScanMessage) -> list[Symbol]:
    """PHISHING (4.0, Rspamd's): a link whose text shows one site ("www.bank.example") and
    whose href leads to another organisation (compared by organizational domain, so
    "bank.example" -> "login.bank.example" is fine): the oldest phishing trick. Not when
    the href carries the shown site as where it redirects to (a click-tracking redirector
    that ends at the site shown). Only 1.0 (:data:`OWN_CLICK_SERVER_SCORE`) when the href
    leads to the From address' own organisation: most often a newsletter's click-tracking
    server (the sender hides nothing about itself), though a phisher writing from a
    look-alike domain of its own does that too."""
    author = message.author
    sender_org = organizational_domain(author.domain) if author and author.domain else ""
    own: Symbol | None = None  # a link to the sender's own organisation, if nothing worse
    for link in message.links:
        if link.source != "href" or not link.shown:
            continue
        shown = _SHOWN_URL.match(link.shown.strip())
        if shown is None:
            continue
        target = _host(link.url)
        if not target:
            continue
        shown_host = shown.group(1).lower()
        target_org = organizational_domain(target)
        if organizational_domain(shown_host) == target_org or _redirects_to(link.url, shown_host):
            continue
        if target_org != sender_org:
            return [_sym("PHISHING", 4.0, "Phished URL", shown_host, target)]
        own = own or _sym("PHISHING", OWN_CLICK_SERVER_SCORE, "Phished URL", shown_host, target)
    return [own] if own is not None else []


# -- attachments -----------------------------------------------------------------------------

BAD_EXTENSIONS = frozenset(
    # Rspamd's mime_types bad_extensions (from Gmail's and Outlook's blocked lists), plus
    # ps1 (PowerShell), hta and wsf, which Outlook blocks too.
    {
        *("ade", "adp", "app", "application", "bat", "cab", "chm", "cmd", "com", "cpl"),
        *("exe", "hta", "inf", "ins", "isp", "iso", "jar", "js", "jse", "lib", "lnk"),
        *("mde", "msc", "msi", "msp", "mst", "nsh", "pif", "ps1", "reg", "scr", "sct"),
        *("shb", "shs", "sys", "vb", "vbe", "vbs", "vxd", "wsc", "wsf", "wsh"),
    }
)
# Extensions a double extension hides the bad one behind.
_DECOY = re.compile(r"(?i)\.(?:pdf|docx?|xlsx?|pptx?|rtf|txt|jpe?g|png|gif|zip|html?)\s*$")


def attachment_symbols(message: ScanMessage) -> list[Symbol]:
    """MIME_DOUBLE_BAD_EXTENSION (3.0, Rspamd's): an executable hiding behind a document
    name ("invoice.pdf.exe", also with spaces before the last dot): no legitimate sender
    does that. MIME_BAD_EXTENSION (2.0, Rspamd's base weight): an attachment Windows runs
    when opened (exe, scr, js, vbs, ...): malware, and mail providers refuse them anyway."""
    bad: list[str] = []
    for attachment in message.attachments:
        filename = attachment.filename.strip().rstrip(".").lower()
        stem, dot, extension = filename.rpartition(".")
        if not dot or extension.strip() not in BAD_EXTENSIONS:
            continue
        if _DECOY.search(stem):
            return [
                _sym(
                    "MIME_DOUBLE_BAD_EXTENSION",
                    3.0,
                    "Bad extension cannot be used after a normal one",
                    attachment.filename,
                )
            ]
        bad.append(attachment.filename)
    if bad:
        return [_sym("MIME_BAD_EXTENSION", 2.0, "Bad extension", *bad[:5])]
    return []


# -- charsets and encodings ------------------------------------------------------------------


def encoding_symbols(message: ScanMessage) -> list[Symbol]:
    """R_BAD_CTE_7BIT (Rspamd's: 3.5, times 0.3 for UTF-8 text, which many senders forget
    is 8-bit): a text part whose body has 8-bit octets but whose Content-Transfer-Encoding
    says 7bit (or nothing: RFC 2045 §6.1 default 7bit): broken or hand-made mail.
    CHARSET_DECODE_ERROR (1.0, ours; Rspamd has no direct twin): a text part in an unknown
    charset, or whose bytes are not valid in the declared one: filters are evaded with
    text no decoder reads."""
    out: list[Symbol] = []
    for part in message.text_parts:
        if part.raw_8bit and part.transfer_encoding not in ("8bit", "binary"):
            score = 3.5 * (0.3 if part.charset.lower() in ("utf-8", "utf8") else 1.0)
            encoding = part.transfer_encoding or "7bit"
            out.append(
                _sym(
                    "R_BAD_CTE_7BIT",
                    round(score, 2),
                    "Detects bad content-transfer-encoding for text parts",
                    encoding,
                )
            )
            break
    if message.decode_errors:
        out.append(
            _sym(
                "CHARSET_DECODE_ERROR",
                1.0,
                "Text in an unknown charset or not valid in its charset",
                str(message.decode_errors),
            )
        )
    return out


def defect_symbols(message: ScanMessage) -> list[Symbol]:
    """MIME_BAD_STRUCTURE (1.5, as Rspamd's BROKEN_CONTENT_TYPE): the MIME parser noted
    defects (a missing boundary, a multipart without parts, broken base64): mail clients
    do not write such messages; spam tools that build MIME by hand do."""
    if message.defects:
        return [_sym("MIME_BAD_STRUCTURE", 1.5, "Message has MIME defects", str(message.defects))]
    return []


class MimeHeuristics:
    """The body rules: HTML-only, phishing links, attachments, encodings, MIME defects."""

    name = "mime_heuristics"
    waits = False

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        message = scan.message
        return [
            *html_only_symbols(message),
            *phishing_symbols(message),
            *attachment_symbols(message),
            *encoding_symbols(message),
            *defect_symbols(message),
        ]
