"""POP3: the sans-IO server core (``server.py``), its events (``events.py``), the session's
view of the maildrop (``maildrop.py``), command syntax and response framing (``parse.py``)
and responses (``responses.py``). RFC 1939, with CAPA and response codes (RFC 2449, RFC
3206), STLS (RFC 2595) and AUTH (RFC 5034)."""

from pochta.protocols.pop3.events import (
    AuthResponse,
    AuthStart,
    Event,
    Login,
    Quit,
    Retrieve,
    StartTLS,
    Update,
)
from pochta.protocols.pop3.maildrop import Maildrop, MaildropMessage, unique_id
from pochta.protocols.pop3.responses import Response, ResponseError
from pochta.protocols.pop3.server import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    POP3ServerConnection,
    State,
)

__all__ = [
    "NEED_DATA",
    "AuthResponse",
    "AuthStart",
    "Event",
    "LocalProtocolError",
    "Login",
    "Maildrop",
    "MaildropMessage",
    "NeedData",
    "POP3ServerConnection",
    "Quit",
    "Response",
    "ResponseError",
    "Retrieve",
    "StartTLS",
    "State",
    "Update",
    "unique_id",
]
