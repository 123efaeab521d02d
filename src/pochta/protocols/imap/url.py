"""IMAP URLs (RFC 5092) naming one message or part of one, as CATENATE (RFC 4469) and
URLAUTH (RFC 4467) use them; pure: text in, ``ImapUrl`` out (``access/imap_urlauth.py``
reads what one names from the store).

Only the ``imessagepart`` form is read (RFC 5092 §11: a mailbox, a UID, an optional section
and partial range, and for URLAUTH the rump and its verifier); search and list URLs name no
single message and are refused. A URL is absolute (``imap://user@host/...``) or, inside
CATENATE, relative to the session's server (``/mailbox/;UID=1``, RFC 4469 §5).

Who owns the mailbox: the URL's user, percent-decoded; a user without "@" is taken with the
URL's host as its domain (``imap://user1@example.test/`` names ``user1@example.test``).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from dataclasses import dataclass

from pochta.protocols.imap.commands import BadArgs, fetch_item, mailbox
from pochta.protocols.imap.fetch_items import FetchItem

__all__ = [
    "ACCESS_WORDS",
    "ImapUrl",
    "UrlError",
    "format_url",
    "genurlauth_args",
    "parse_url",
    "resetkey_args",
    "urlfetch_args",
]

# RFC 5092 §11: access = ("submit+" enc-user) / ("user+" enc-user) / "authuser" / "anonymous"
ACCESS_WORDS = ("submit+", "user+", "authuser", "anonymous")
MAX_URL_OCTETS = 8192


class UrlError(ValueError):
    """A URL that is not an IMAP URL naming one message (CATENATE answers NO [BADURL],
    URLFETCH NIL, GENURLAUTH BAD)."""


@dataclass(frozen=True, slots=True)
class ImapUrl:
    mailbox: str  # percent-decoded (UTF-8), "INBOX" in any case made "INBOX"
    uid: int
    user: str | None = None  # percent-decoded; None in a relative URL
    host: str | None = None
    port: int | None = None
    uidvalidity: int | None = None
    section: str | None = None  # percent-decoded, e.g. "1.2.MIME", "HEADER"
    partial: tuple[int, int | None] | None = None  # RFC 5092 §11 partial-range
    expire: dt.datetime | None = None  # aware, RFC 4467 §3 ";EXPIRE="
    access: str | None = None  # "authuser", "anonymous", "user+NAME", "submit+NAME"
    mechanism: str | None = None  # upper case, e.g. "INTERNAL"
    token: str | None = None  # hex, lower case
    rump: str | None = None  # the URL as given up to and including ";URLAUTH=access"

    @property
    def owner(self) -> str | None:
        """The account whose mailbox the URL names (None for a relative URL)."""
        if self.user is None:
            return None
        if "@" in self.user or not self.host:
            return self.user
        return f"{self.user}@{self.host}"

    @property
    def access_user(self) -> str | None:
        """The user named by ``user+`` / ``submit+`` access, else None."""
        if self.access is None:
            return None
        for word in ("user+", "submit+"):
            if self.access.lower().startswith(word):
                return self.access[len(word) :]
        return None

    @property
    def fetch_item(self) -> FetchItem:
        """The FETCH item the section stands for (BODY[] without a section)."""
        return _section_item(self.section)


# RFC 5092 §11 imessagepart [iurlauth], after the server (absolute) or from the first "/".
# enc-mailbox and enc-section are 1*bchar: no ";" or "?", "/" allowed (backtracking finds
# the "/;UID=" that ends the mailbox).
_PATH = re.compile(
    r"/(?P<mailbox>[^;?]+?)"
    r"(?:;UIDVALIDITY=(?P<uidvalidity>[1-9][0-9]{0,9}))?"
    r"/;UID=(?P<uid>[1-9][0-9]{0,9})"
    r"(?:/;SECTION=(?P<section>[^;?]+))?"
    r"(?:/;PARTIAL=(?P<origin>[0-9]{1,10})(?:\.(?P<length>[1-9][0-9]{0,9}))?)?"
    r"(?P<auth>(?:;EXPIRE=(?P<expire>[^;]+))?;URLAUTH=(?P<access>[^:;/?]+))?"
    r"(?::(?P<mechanism>[A-Za-z0-9.-]+):(?P<token>[0-9A-Fa-f]{32,}))?",
    re.IGNORECASE,
)
# RFC 5092 §11 iserver = [iuserinfo "@"] host [":" port]; iuserinfo = enc-user [iauth]
_SERVER = re.compile(
    r"(?:(?P<user>[^/?#]*?)(?:;AUTH=(?:\*|[^@/]+))?@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/?#@\[\]]+)(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)


def _decode(text: str, what: str) -> str:
    try:
        return urllib.parse.unquote(text, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise UrlError(f"The URL's {what} is not UTF-8 once percent-decoded") from None


def _section_item(section: str | None) -> FetchItem:
    try:
        return fetch_item(f"BODY.PEEK[{section or ''}]")
    except BadArgs as exc:
        raise UrlError(f"Bad section {section!r}: {exc}") from None


def parse_url(text: str, *, relative: bool = False) -> ImapUrl:
    """``text`` as an IMAP URL naming a message (RFC 5092 §11); ``relative``: a URL that
    starts with "/" is taken as relative to this server (RFC 4469 §5)."""
    if len(text) > MAX_URL_OCTETS:
        raise UrlError("URL too long")
    if any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in text):
        # RFC 5092 §11 (RFC 3986 §2): octets other than printable ASCII are %-encoded.
        raise UrlError("Spaces and 8-bit characters in a URL must be percent-encoded")
    user = host = None
    port = None
    start = 0
    if text[:7].lower() == "imap://":
        m = _SERVER.match(text, 7)
        if m is None:
            raise UrlError("An IMAP URL needs a host: imap://user@host/mailbox/;UID=n")
        if m.group("user") is not None:
            user = _decode(m.group("user"), "user")
        host = m.group("host").lower()
        port = int(m.group("port")) if m.group("port") else None
        start = m.end()
    elif not (relative and text.startswith("/")):
        raise UrlError("Not an IMAP URL: use imap://user@host/mailbox/;UID=n")
    m = _PATH.fullmatch(text, start)
    if m is None:
        raise UrlError("The URL must name one message: /mailbox/;UID=n[/;SECTION=s]")
    mailbox = _decode(m.group("mailbox"), "mailbox")
    if mailbox.upper() == "INBOX":
        mailbox = "INBOX"
    section = _decode(m.group("section"), "section") if m.group("section") else None
    _section_item(section)  # RFC 5092 §11 enc-section is a FETCH section-spec
    partial = None
    if m.group("origin") is not None:
        length = m.group("length")
        partial = (int(m.group("origin")), int(length) if length else None)
    expire = None
    if m.group("expire") is not None:
        expire = _expire(_decode(m.group("expire"), "expiry"))
    access = None
    rump = None
    if m.group("access") is not None:
        access = _access(_decode(m.group("access"), "access"))
        rump = text[: m.end("auth")]
    mechanism = token = None
    if m.group("mechanism") is not None:
        if access is None:
            raise UrlError("A URLAUTH verifier needs ;URLAUTH=access before it")
        mechanism = m.group("mechanism").upper()
        token = m.group("token").lower()
    return ImapUrl(
        mailbox=mailbox,
        uid=int(m.group("uid")),
        user=user,
        host=host,
        port=port,
        uidvalidity=int(m.group("uidvalidity")) if m.group("uidvalidity") else None,
        section=section,
        partial=partial,
        expire=expire,
        access=access,
        mechanism=mechanism,
        token=token,
        rump=rump,
    )


def _expire(text: str) -> dt.datetime:
    # RFC 4467 §3: ";EXPIRE=" RFC 3339 date-time, with its offset.
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UrlError(f"Bad EXPIRE {text!r}: use 2030-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        raise UrlError(f"EXPIRE {text!r} needs a time zone (Z or +hh:mm)")
    return when


def _access(text: str) -> str:
    lower = text.lower()
    if lower in ("authuser", "anonymous"):
        return lower
    for word in ("user+", "submit+"):
        if lower.startswith(word) and len(text) > len(word):
            return word + text[len(word) :]
    raise UrlError(f"Unknown URLAUTH access {text!r}: use user+NAME, submit+NAME, authuser")


_SAFE_MAILBOX = "!$'()*+,&=:@/"  # RFC 5092 §11 bchar, less what is kept literally anyway
_SAFE_USER = "!$'()*+,&="  # achar


def format_url(url: ImapUrl) -> str:
    """The URL as text (percent-encoding what needs it); ``parse_url`` reads it back."""
    out = ""
    if url.host is not None:
        out = "imap://"
        if url.user is not None:
            out += urllib.parse.quote(url.user, safe=_SAFE_USER) + "@"
        out += url.host
        if url.port is not None:
            out += f":{url.port}"
    out += "/" + urllib.parse.quote(url.mailbox, safe=_SAFE_MAILBOX)
    if url.uidvalidity is not None:
        out += f";UIDVALIDITY={url.uidvalidity}"
    out += f"/;UID={url.uid}"
    if url.section is not None:
        out += "/;SECTION=" + urllib.parse.quote(url.section, safe=_SAFE_MAILBOX)
    if url.partial is not None:
        origin, length = url.partial
        out += f"/;PARTIAL={origin}" + (f".{length}" if length is not None else "")
    if url.access is not None:
        if url.expire is not None:
            out += ";EXPIRE=" + urllib.parse.quote(url.expire.isoformat(), safe=":")
        out += ";URLAUTH=" + urllib.parse.quote(url.access, safe=_SAFE_USER)
    if url.mechanism is not None and url.token is not None:
        out += f":{url.mechanism}:{url.token}"
    return out


# -- the commands' arguments (RFC 4467 §9, RFC 5524 §4) --------------------------------------


def _url_arg(token: object) -> str:
    if isinstance(token, bytes):
        try:
            return token.decode("ascii")
        except UnicodeDecodeError:
            raise BadArgs("A URL is ASCII; percent-encode other characters") from None
    if isinstance(token, str):
        return str(token)
    raise BadArgs("Expected a URL")


def genurlauth_args(args: list[object]) -> list[tuple[str, str]]:
    """RFC 4467 §9: genurlauth = "GENURLAUTH" 1*(SP url-rump SP mechanism)."""
    if not args or len(args) % 2:
        raise BadArgs("GENURLAUTH needs pairs of URL and mechanism: GENURLAUTH url INTERNAL")
    return [
        (_url_arg(url), _mechanism(mech)) for url, mech in zip(args[::2], args[1::2], strict=True)
    ]


def _mechanism(token: object) -> str:
    if isinstance(token, str) and re.fullmatch(r"[A-Za-z0-9.-]+", token):
        return token.upper()
    raise BadArgs("Expected a URLAUTH mechanism, such as INTERNAL")


def resetkey_args(args: list[object]) -> tuple[str | None, list[str]]:
    """RFC 4467 §9: resetkey = "RESETKEY" [SP mailbox *(SP mechanism)]."""
    if not args:
        return None, []
    return mailbox(args[0]), [_mechanism(m) for m in args[1:]]


URLFETCH_PARAMS = ("BODYPARTSTRUCTURE", "BINARY", "BODY")


def urlfetch_args(args: list[object]) -> list[tuple[str, tuple[str, ...] | None]]:
    """RFC 4467 §9: urlfetch = "URLFETCH" 1*(SP url); RFC 5524 §4: or
    "(" url *(SP url-fetch-param) ")", params BODYPARTSTRUCTURE / BINARY / BODY. Each
    URL with its parameters (None: the plain form)."""
    if not args:
        raise BadArgs("URLFETCH needs a URL")
    out: list[tuple[str, tuple[str, ...] | None]] = []
    for token in args:
        if isinstance(token, list):
            if not token:
                raise BadArgs("URLFETCH (url param ...) needs a URL")
            params: list[str] = []
            for p in token[1:]:
                word = p.upper() if isinstance(p, str) else ""
                if word not in URLFETCH_PARAMS:
                    raise BadArgs("URLFETCH parameters are BODYPARTSTRUCTURE, BINARY and BODY")
                if word not in params:
                    params.append(word)
            out.append((_url_arg(token[0]), tuple(params)))
        else:
            out.append((_url_arg(token), None))
    return out
