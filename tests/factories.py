"""The one way a test makes an envelope, a settings object or a test message.

make_envelope("bob@example.test", sender="alice@example.org", content=CONTENT)
make_settings({"server.hostname": HOST, "delivery.tls_security_level": "dane"})
make_message("alice@example.test", "hello")
make_rsa_dkim_key()  # (private PEM, the DKIM TXT record)
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pochta.config.settings import Settings
from pochta.queue.envelope import Envelope, Recipient, new_queue_id

# -- envelopes ----------------------------------------------------------------------------


def make_envelope(
    *recipients: str | Recipient,
    sender: str = "alice@example.org",
    queue_id: str | None = "",
    arrival: float | None = None,
    content: bytes | None = None,
    **fields: Any,
) -> Envelope:
    """An envelope for ``recipients`` (addresses or ``Recipient``s; or ``recipients=[...]``).

    ``queue_id``: "" leaves it to the spool to fill at enqueue, None draws a new one
    (``new_queue_id()``). ``arrival``: None is now. ``size`` is ``len(content)`` when
    ``content`` is given, else 0 (the spool sets it at enqueue) unless ``size=`` says.
    Every other ``Envelope`` field may be given by name (``ret=``, ``client_ip=``, ...).
    """
    if recipients:
        if "recipients" in fields:
            raise TypeError("give recipients either as arguments or as recipients=, not both")
        fields["recipients"] = [r if isinstance(r, Recipient) else Recipient(r) for r in recipients]
    fields.setdefault("recipients", [])
    fields.setdefault("size", len(content) if content is not None else 0)
    return Envelope(
        queue_id=new_queue_id() if queue_id is None else queue_id,
        sender=sender,
        arrival=time.time() if arrival is None else arrival,
        **fields,
    )


# -- settings -----------------------------------------------------------------------------

DEFAULT_HOSTNAME = "mail.example.test"


def make_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """``Settings`` from the defaults, with ``overrides`` by dotted key::

        make_settings({"server.hostname": "mx.example.org", "dns.timeout_seconds": 2})

    A key may also name a whole table ("tables": TablesSettings(...) or a dict). The result
    is converted (and so validated) by msgspec as the loader does, without the loader's
    semantic checks. ``server.hostname`` defaults to mail.example.test.
    """
    raw: dict[str, Any] = {"server": {"hostname": DEFAULT_HOSTNAME}}
    for dotted, value in (overrides or {}).items():
        *tables, key = dotted.split(".")
        node = raw
        for table in tables:
            child = node.setdefault(table, {})
            if isinstance(child, msgspec.Struct):
                child = node[table] = msgspec.to_builtins(child)
            node = child
        node[key] = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
    return msgspec.convert(raw, Settings)


# -- messages -----------------------------------------------------------------------------


def make_message(
    to: str, subject: str, body: str = "Hello there.\n", *, sender: str = "carol@example.org"
) -> EmailMessage:
    """A plain-text message from ``sender`` to ``to`` with a unique Message-ID."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '.')}.{time.time_ns()}@example.org>"
    msg.set_content(body)
    return msg


# -- DKIM keys ------------------------------------------------------------------------------


def make_rsa_dkim_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """A new RSA key: (its private key in PEM, the DKIM key record to publish for it,
    ``v=DKIM1; k=rsa; p=...`` with the SubjectPublicKeyInfo, RFC 6376 §3.6.1)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
