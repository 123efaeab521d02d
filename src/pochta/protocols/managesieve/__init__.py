"""ManageSieve (RFC 5804): the sans-IO server core (``server.py``), its events
(``events.py``), command syntax (``parse.py``) and responses (``responses.py``).
``access/managesieve.py`` is its asyncio service over the script store."""

from pochta.protocols.managesieve.events import (
    Authenticate,
    AuthResponse,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    Logout,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticate,
)
from pochta.protocols.managesieve.responses import Response, ResponseError
from pochta.protocols.managesieve.server import (
    NEED_DATA,
    Capabilities,
    LocalProtocolError,
    ManageSieveServerConnection,
    NeedData,
    State,
)

__all__ = [
    "NEED_DATA",
    "AuthResponse",
    "Authenticate",
    "Capabilities",
    "CheckScript",
    "DeleteScript",
    "Event",
    "GetScript",
    "HaveSpace",
    "ListScripts",
    "LocalProtocolError",
    "Logout",
    "ManageSieveServerConnection",
    "NeedData",
    "PutScript",
    "RenameScript",
    "Response",
    "ResponseError",
    "SetActive",
    "StartTLS",
    "State",
    "Unauthenticate",
]
