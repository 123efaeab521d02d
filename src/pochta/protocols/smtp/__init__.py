"""SMTP and LMTP: the sans-IO server core (``server.py``), its events (``events.py``), command
parsing (``parse.py``), message framing (``data.py``) and replies (``replies.py``)."""

from pochta.protocols.smtp.events import (
    AuthResponse,
    AuthStart,
    Event,
    Helo,
    MailFrom,
    MessageData,
    Noop,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
    Vrfy,
)
from pochta.protocols.smtp.replies import Reply, ReplyError
from pochta.protocols.smtp.server import (
    NEED_DATA,
    LocalProtocolError,
    NeedData,
    SMTPServerConnection,
    State,
)

__all__ = [
    "NEED_DATA",
    "AuthResponse",
    "AuthStart",
    "Event",
    "Helo",
    "LocalProtocolError",
    "MailFrom",
    "MessageData",
    "NeedData",
    "Noop",
    "Quit",
    "RcptTo",
    "Reply",
    "ReplyError",
    "Reset",
    "SMTPServerConnection",
    "StartTLS",
    "State",
    "Vrfy",
]
