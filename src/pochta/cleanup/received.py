"""The trace fields cleanup adds: ``Received:``, and for submissions ``Message-ID:``/``Date:``.

``Received:`` (RFC 5321 §4.4 Time-stamp-line, RFC 5322 §3.6.7), written the way Postfix
writes it, one clause per line::

    Received: from HELO (RDNS [IP])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
    \tby HOSTNAME (pochta) with ESMTPS id QUEUEID
    \tfor <rcpt@example.org>; Mon, 1 Jan 2024 12:00:00 +0000

- ``from`` names the EHLO argument, then the reverse DNS name (``unknown`` when there is
  none) and the IP as an address literal (RFC 5321 §4.1.3; ``[IPv6:...]`` for IPv6), as the
  TCP-info of RFC 5321 §4.4. Client-chosen text is reduced to safe characters.
- the TLS comment sits where RFC 5321 allows CFWS, before ``by`` (Postfix does the same).
- ``with`` is the RFC 3848 / RFC 6531 §3.7.3 protocol keyword (ESMTPSA for an authenticated
  session); mail made on this host (protocol ``local``: ``pochta sendmail`` through pickup,
  notices) has none, and names the local user instead: ``by HOST (pochta, from userid
  1000)``, as Postfix writes it. The login name is never written (Postfix
  smtpd_sasl_authenticated_header = no).
- ``for`` appears only with exactly one recipient: naming one of several would disclose
  Bcc recipients to the others.
- the date is the arrival time in local time with its numeric offset (RFC 5322 §3.3).

Decision (privacy of submissions): by default the client IP and EHLO name of an
authenticated submission are kept, like Postfix does, because they are the trace an admin
needs for abuse reports. ``hide_client=True`` (``Cleanup(..., hide_submission_client=True)``)
drops the ``from`` clause and the TLS comment for submissions only; ``with ESMTPSA`` and the
queue id still trace the message to our log.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from email.utils import formatdate

__all__ = ["date_value", "message_id_value", "received_value"]

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\\;\"<>]")  # not visible ASCII, or specials
_WORD = re.compile(r"[^A-Za-z0-9]")
_MAX_CLIENT_TEXT = 255


def _clean(text: str, limit: int = _MAX_CLIENT_TEXT) -> str:
    """Client-chosen text made safe inside a Received field: visible ASCII without the
    characters that would end a comment or a clause; others become ``?``."""
    return _UNSAFE.sub("?", text[:limit])


def _address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    try:
        parsed = ipaddress.ip_address(ip.strip().strip("[]"))
    except ValueError:
        return f"[{_clean(ip, 64)}]"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return f"[{parsed.ipv4_mapped}]"
        return f"[IPv6:{parsed.compressed}]"
    return f"[{parsed}]"


def received_value(
    *,
    hostname: str,
    arrival: float,
    protocol: str,
    queue_id: str = "",
    helo: str = "",
    client_ip: str = "",
    client_hostname: str = "",
    tls_version: str = "",
    tls_cipher: str = "",
    local_uid: int | None = None,
    recipients: tuple[str, ...] | list[str] = (),
    hide_client: bool = False,
    newline: str = "\r\n",
) -> str:
    """The value of a ``Received:`` field (after ``Received: ``), folded with ``newline``."""
    fold = newline + "\t"
    clauses: list[str] = []
    if client_ip and not hide_client:
        rdns = _clean(client_hostname.rstrip(".")) or "unknown"
        name = _clean(helo) or rdns
        clauses.append(f"from {name} ({rdns} {_address_literal(client_ip)})")
        if tls_version:
            cipher = f" with cipher {_clean(tls_cipher, 100)}" if tls_cipher else ""
            clauses.append(f"(using {_clean(tls_version, 32)}{cipher})")
    keyword = _WORD.sub("", protocol)[:16] or "ESMTP"
    comment = "pochta"
    if local_uid is not None and not client_ip:
        # Mail from a local user (pickup), as Postfix writes it: "by HOST (Postfix, from
        # userid UID)"; the uid is the writer's, checked against the maildrop file's owner.
        comment = f"pochta, from userid {int(local_uid)}"
    by = f"by {hostname} ({comment})"
    if keyword != "local":
        # RFC 5321 §4.4: "with" is optional; mail made on this host (pickup, notices) has
        # no protocol to name, and Postfix leaves it out there too.
        by += f" with {keyword}"
    queue = _WORD.sub("", queue_id)[:64]
    if queue:
        by += f" id {queue}"
    clauses.append(by)
    date = formatdate(arrival, localtime=True)
    if len(recipients) == 1:
        rcpt = "".join(c for c in recipients[0] if c not in "<>" and c.isprintable())
        clauses.append(f"for <{rcpt}>; {date}")
    else:
        clauses[-1] += ";"
        clauses.append(date)
    return fold.join(clauses)


def message_id_value(hostname: str, arrival: float, queue_id: str = "") -> str:
    """A new ``<unique@hostname>`` (RFC 5322 §3.6.4): time, queue id and 48 random bits."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(arrival))
    queue = _WORD.sub("", queue_id)[:64]
    left = ".".join(p for p in (stamp, queue, secrets.token_hex(6)) if p)
    return f"<{left}@{hostname}>"


def date_value(arrival: float) -> str:
    """RFC 5322 §3.3 date-time of ``arrival``, local time with numeric offset."""
    return formatdate(arrival, localtime=True)
