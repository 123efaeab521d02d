"""One line per event: structlog over the stdlib ``logging`` module.

Events are short snake_case names (``listener_bound``, ``privileges_dropped``, ``reload``) and
the details are fields, so a line can be grepped and parsed: Postfix's maillog with keys
(postfix/proto/MAILLOG_README.html). Later the queue id is one of the fields, so an admin can
follow a message through every stage.

Records from the stdlib (asyncio's warnings, libraries) go through the same renderer
(``ProcessorFormatter``), so every line of the log has the same shape:

    timestamp=2025-01-01T12:00:00.000000Z level=info logger=server event=ready listeners=1

Secrets are never logged: callers do not pass them, and ``_redact_secrets`` blanks the usual
suspects should one slip into a field anyway.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["logfmt", "json"]

# logfmt key order: the fixed prefix of every line, then the event's own fields.
KEY_ORDER = ["timestamp", "level", "logger", "event"]

# Field names whose values are never written, whatever a caller passes.
SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "token", "authorization", "auth_data", "private_key"}
)

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _PochtaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Our handler on the root logger; ``configure_logging`` replaces only these."""


class LogFile:
    """``[server] log_file``: lines appended (O_APPEND, so the worker processes can share
    it), each written whole; ``reopen`` opens the same name again, so logrotate can rename
    the file and signal (SIGHUP) and the next lines go to a new file, as syslogd does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = self._open()

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        """Open the name anew; OSError (the old file stays in use) when it cannot be."""
        new = self._open()
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        self._file.close()


# The open log file when [server] log_file is set (one per process).
_log_file: LogFile | None = None


def reopen_log_file() -> str | None:
    """SIGHUP: reopen ``[server] log_file`` under its name (after logrotate moved it); an
    error message when it cannot be (the old file is kept), None otherwise or without one."""
    if _log_file is None:
        return None
    try:
        _log_file.reopen()
    except OSError as exc:
        return (
            f"cannot reopen {_log_file.path}: {exc.strerror}; still writing to the old file "
            "(make its directory writable by server.run_as_user)"
        )
    return None


def _redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in event_dict.keys() & SECRET_KEYS:
        event_dict[key] = "[redacted]"
    return event_dict


def _rename_level(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # structlog calls warnings "warning" already; stdlib records may say "WARNING".
    level = event_dict.get("level")
    if isinstance(level, str):
        event_dict["level"] = level.lower()
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _rename_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _redact_secrets,
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become one field; both renderers escape its newlines (one line per event).
        structlog.processors.format_exc_info,
    ]


def renderer_for(format: LogFormat) -> Processor:
    if format == "json":
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.processors.LogfmtRenderer(
        key_order=KEY_ORDER, drop_missing=True, bool_as_flag=False
    )


def _order_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """JSON lines with the same leading keys as logfmt (timestamp, level, logger, event)."""
    ordered: MutableMapping[str, Any] = {k: event_dict[k] for k in KEY_ORDER if k in event_dict}
    ordered.update((k, v) for k, v in event_dict.items() if k not in ordered)
    return dict(ordered)


def configure_logging(
    format: LogFormat = "logfmt",
    level: str = "info",
    stream: TextIO | None = None,
    file: Path | None = None,
) -> None:
    """Send structlog events and stdlib records to ``stream`` (stderr), or appended to
    ``file`` (``[server] log_file``), one line each. OSError when ``file`` cannot be opened.

    Safe to call again (on reload): our previous handler is replaced, others are kept; the
    log file stays open if it is the same one.
    """
    global _log_file
    if format not in ("logfmt", "json"):
        raise ValueError(f"log format {format!r} is not known; use logfmt or json")
    try:
        numeric_level = _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(
            f"log level {level!r} is not known; use one of {', '.join(_LEVELS)}"
        ) from None
    shared = _shared_processors()
    if file is not None and (_log_file is None or _log_file.path != file):
        opened = LogFile(file)
        if _log_file is not None:
            _log_file.close()
        _log_file = opened
    elif file is None and _log_file is not None:
        _log_file.close()
        _log_file = None
    out: Any = stream if stream is not None else (_log_file or sys.stderr)
    # pochta's own events skip the stdlib logging machinery (a fifth of the event loop's
    # time under SMTP load went there): filter by level, render, write one line.
    # Every processor is a call per event (seven events per message received): no
    # contextvars merge (pochta binds none), no stack-info renderer (PochtaLogger passes no
    # stack_info), and the key order only for JSON (the logfmt renderer orders its keys).
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _redact_secrets,
            structlog.processors.format_exc_info,
            *([_order_keys] if format == "json" else []),
            renderer_for(format),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _order_keys,
            renderer_for(format),
        ],
    )
    handler = _PochtaHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PochtaHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)


class PochtaLogger:
    """A named logger that follows ``configure_logging`` (start-up and every reload) and
    otherwise keeps one bound structlog logger, so an event costs a filter check and a
    render, not a logger construction."""

    __slots__ = ("_bound", "_generation", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._generation = -1
        self._bound: Any = None

    def _logger(self) -> Any:
        # Rebind when structlog was configured anew (our reload, or a test's capture_logs).
        current = id(structlog.get_config()["processors"])
        if self._generation != current:
            self._bound = structlog.get_logger().bind(logger=self._name)
            self._generation = current
        return self._bound

    def debug(self, event: str, **fields: Any) -> None:
        self._logger().debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self._logger().info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._logger().warning(event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._logger().error(event, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._logger().exception(event, **fields)


def get_logger(name: str) -> PochtaLogger:
    """The logger of one part of pochta: ``server``, ``http``, ``smtp``, ..."""
    return PochtaLogger(name)
