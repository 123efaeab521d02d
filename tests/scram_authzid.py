"""A SCRAM-SHA-256 client that names an authorisation identity, as isync/mbsync does.

scramp's ScramClient always sends the GS2 header ``n,,``; this one is scramp's client with
the header ``n,a=AUTHZID,`` (RFC 5802 §7, "," and "=" escaped as "=2C" and "=3D"), which
scramp then also puts, base64-encoded, in client-final's ``c=``, as RFC 5802 §7 requires.
"""

from __future__ import annotations

from scramp import ScramClient
from scramp.core import Gs2Header


class _Gs2HeaderWithAuthzid(Gs2Header):  # type: ignore[misc]  # scramp is untyped
    def __init__(self, header: str) -> None:
        super().__init__("n", None)
        self._header = header

    def __str__(self) -> str:
        return self._header

    def __bytes__(self) -> bytes:
        return self._header.encode("utf-8")  # RFC 5802 §7: saslname is UTF-8


def escape_saslname(name: str) -> str:
    """RFC 5802 §7 saslname: "=" is sent as "=3D" and "," as "=2C"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_client(username: str, password: str, authzid: str) -> ScramClient:
    """scramp's SCRAM-SHA-256 client, sending ``a=AUTHZID`` in its GS2 header."""
    client = ScramClient(["SCRAM-SHA-256"], username, password)
    client.gs2_header = _Gs2HeaderWithAuthzid(f"n,a={escape_saslname(authzid)},")
    return client
