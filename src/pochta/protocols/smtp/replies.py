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
# RFC 5321 §4.2.3 452 "insufficient system storage"; RFC 3463 §3.4 X.3.1 "mail system full".
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
SERVICE_CLOSING = Reply(421, "4.3.2", "Service closing transmission channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")

# -- Replies the sans-IO server core sends itself (protocols/smtp/server.py) --
SERVICE_READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 §4
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")  # RFC 3207 §4
HELP = Reply(214, "2.0.0", "pochta: see RFC 5321")  # RFC 5321 §4.1.1.8
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")  # RFC 5321 §4.2.4
BARE_NEWLINE_COMMAND = Reply(
    500, "5.5.2", "Bare CR or LF in command; lines must end with CRLF (RFC 5321 §2.3.8)"
)
NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NEED_LHLO = Reply(503, "5.5.1", "Send LHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 2920 §3.1
NO_VALID_RECIPIENTS_LMTP = Reply(503, "5.5.1", "No valid recipients")  # RFC 2033 §4.2
TRANSACTION_IN_PROGRESS = Reply(503, "5.5.1", "Not allowed during a mail transaction")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA and BDAT cannot be mixed in one transaction")
BINARYMIME_NEEDS_BDAT = Reply(503, "5.5.1", "BODY=BINARYMIME requires BDAT")  # RFC 3030 §3
NO_SERVICE = Reply(503, "5.5.1", "No SMTP service here, send QUIT")  # RFC 5321 §3.1
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")  # RFC 3207 §4.2
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")  # RFC 4954 §4
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")  # RFC 4954 §4
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode base64")  # RFC 4954 §4
AUTH_ENCRYPTION_REQUIRED = Reply(  # RFC 4954 §6
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")  # RFC 3463 §3.2
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")  # RFC 3463 §3.2
NON_ASCII_ADDRESS = Reply(  # RFC 6531 §3.5
    553, "5.6.7", "Non-ASCII addresses not permitted without SMTPUTF8"
)
UNKNOWN_PARAMETER = Reply(  # RFC 5321 §4.1.1.11
    555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not implemented"
)
TOO_MANY_COMMANDS = Reply(
    421, "4.7.0", "Too many commands without a transaction, closing connection"
)
