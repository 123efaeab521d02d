"""SMTP replies: a code, an enhanced status code and text, with names for the common ones.

RFC 5321 §4.2 (reply codes), RFC 3463 (enhanced status codes), RFC 2034 (their use in replies).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int  # 3 digits, RFC 5321 §4.2
    enhanced: str  # "x.y.z" (RFC 3463), "" when none applies (e.g. 220, 221 greetings)
    text: str  # one or more lines, joined with "\n"; no CR/LF inside a line

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def lines(self, *, enhanced_codes: bool = True) -> list[str]:
        """The reply as text lines without CRLF (RFC 5321 §4.2.1 multi-line form)."""
        parts = self.text.split("\n") or [""]
        prefix = f"{self.enhanced} " if enhanced_codes and self.enhanced else ""
        out = []
        for i, part in enumerate(parts):
            sep = " " if i == len(parts) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{part}")
        return out

    def encode(self, *, enhanced_codes: bool = True) -> bytes:
        return "".join(f"{line}\r\n" for line in self.lines(enhanced_codes=enhanced_codes)).encode(
            "utf-8"
        )

    def __str__(self) -> str:
        return " ".join(
            p for p in (str(self.code), self.enhanced, self.text.replace("\n", " / ")) if p
        )


class ReplyError(Exception):
    """Raised where a rule refuses something; caught at the command boundary and sent."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


# Named replies (mox's smtp/codes.go does the same): the number and what it means.
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
BYE = Reply(221, "2.0.0", "Bye")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
UNKNOWN_USER = Reply(550, "5.1.1", "No such user here")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
SENDER_LOGIN_MISMATCH = Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full")
MAILBOX_FULL_PERMANENT = Reply(552, "5.2.2", "Mailbox full")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
BARE_LINEFEED = Reply(
    550, "5.5.2", "Message contains bare CR or LF; lines must end with CRLF (RFC 5321 §2.3.8)"
)
TEMPORARY_FAILURE = Reply(451, "4.3.0", "Temporary failure, try again later")
SERVICE_CLOSING = Reply(421, "4.3.2", "Service closing transmission channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
