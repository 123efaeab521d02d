"""The codes and flags of the milter protocol (Sendmail ``include/libmilter/mfdef.h``)."""

from __future__ import annotations

from enum import IntFlag

__all__ = [
    "MILTER_CHUNK_BYTES",
    "MILTER_VERSION",
    "Action",
    "Command",
    "Protocol",
    "ReplyCode",
    "Stage",
]

MILTER_VERSION = 6  # mfdef.h SMFI_PROT_VERSION
MILTER_CHUNK_BYTES = 65535  # mfdef.h MILTER_CHUNK_SIZE: the largest BODY / REPLBODY piece


class Command:
    """SMFIC_*: what the MTA sends (one byte after the length)."""

    ABORT = b"A"
    BODY = b"B"
    CONNECT = b"C"
    MACRO = b"D"
    BODYEOB = b"E"
    HELO = b"H"
    QUIT_NC = b"K"
    HEADER = b"L"
    MAIL = b"M"
    EOH = b"N"
    OPTNEG = b"O"
    QUIT = b"Q"
    RCPT = b"R"
    DATA = b"T"
    UNKNOWN = b"U"


class ReplyCode:
    """SMFIR_*: what a milter answers."""

    ADDRCPT = b"+"
    DELRCPT = b"-"
    ADDRCPT_PAR = b"2"
    SHUTDOWN = b"4"
    ACCEPT = b"a"
    REPLBODY = b"b"
    CONTINUE = b"c"
    DISCARD = b"d"
    CHGFROM = b"e"
    CONN_FAIL = b"f"
    ADDHEADER = b"h"
    INSHEADER = b"i"
    SETSYMLIST = b"l"
    CHGHEADER = b"m"
    PROGRESS = b"p"
    QUARANTINE = b"q"
    REJECT = b"r"
    SKIP = b"s"
    TEMPFAIL = b"t"
    REPLYCODE = b"y"


class Action(IntFlag):
    """SMFIF_*: what a milter may change at end of message (negotiated)."""

    ADDHDRS = 0x001
    CHGBODY = 0x002
    ADDRCPT = 0x004
    DELRCPT = 0x008
    CHGHDRS = 0x010
    QUARANTINE = 0x020
    CHGFROM = 0x040
    ADDRCPT_PAR = 0x080
    SETSYMLIST = 0x100


class Protocol(IntFlag):
    """SMFIP_*: the steps a milter does not want (NO*) or does not answer (NR_*)."""

    NOCONNECT = 0x00000001
    NOHELO = 0x00000002
    NOMAIL = 0x00000004
    NORCPT = 0x00000008
    NOBODY = 0x00000010
    NOHDRS = 0x00000020
    NOEOH = 0x00000040
    NR_HDR = 0x00000080  # SMFIP_NOHREPL
    NOUNKNOWN = 0x00000100
    NODATA = 0x00000200
    SKIP = 0x00000400  # the MTA understands SMFIR_SKIP
    RCPT_REJ = 0x00000800  # the milter wants rejected recipients too
    NR_CONN = 0x00001000
    NR_HELO = 0x00002000
    NR_MAIL = 0x00004000
    NR_RCPT = 0x00008000
    NR_DATA = 0x00010000
    NR_UNKN = 0x00020000
    NR_EOH = 0x00040000
    NR_BODY = 0x00080000
    HDR_LEADSPC = 0x00100000  # header values keep their leading space
    MDS_256K = 0x10000000
    MDS_1M = 0x20000000


class Stage:
    """SMFIM_*: the protocol stages a milter may ask macros for (SETSYMLIST)."""

    CONNECT = 0
    HELO = 1
    ENVFROM = 2
    ENVRCPT = 3
    DATA = 4
    EOM = 5
    EOH = 6
