"""Log lines: one per event, logfmt or JSON, and both parse back."""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
from collections.abc import Iterator

import pytest
import structlog

from pochta.logs import configure_logging, get_logger


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def parse_logfmt(line: str) -> dict[str, str]:
    """A small logfmt reader: key=value, values quoted with \"...\" when needed."""
    out: dict[str, str] = {}
    for token in shlex.split(line, posix=True):
        key, _, value = token.partition("=")
        out[key] = value
    return out


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_logfmt_line_parses_back_in_key_order() -> None:
    stream = io.StringIO()
    configure_logging("logfmt", "info", stream)
    get_logger("server").info("listener_bound", listener="http", address="0.0.0.0:80", tls="no")
    [line] = _lines(stream)
    assert list(parse_logfmt(line))[:4] == ["timestamp", "level", "logger", "event"]
    fields = parse_logfmt(line)
    assert fields["level"] == "info"
    assert fields["logger"] == "server"
    assert fields["event"] == "listener_bound"
    assert fields["address"] == "0.0.0.0:80"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", fields["timestamp"])


def test_logfmt_quotes_spaces_and_keeps_one_line() -> None:
    stream = io.StringIO()
    configure_logging("logfmt", "info", stream)
    get_logger("server").error("reload_failed", problems='a b; "c"\nsecond line')
    [line] = _lines(stream)
    assert parse_logfmt(line)["problems"] == 'a b; "c"\\nsecond line'


def test_json_line_parses_back() -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    get_logger("http").debug("http_request", method="GET", status=200)
    [line] = _lines(stream)
    record = json.loads(line)
    assert list(record)[:4] == ["timestamp", "level", "logger", "event"]
    assert record["event"] == "http_request"
    assert record["status"] == 200
    assert record["logger"] == "http"


def test_level_filters() -> None:
    stream = io.StringIO()
    configure_logging("logfmt", "warning", stream)
    log = get_logger("server")
    log.info("not_shown")
    log.warning("shown")
    assert [parse_logfmt(x)["event"] for x in _lines(stream)] == ["shown"]


def test_stdlib_records_use_the_same_renderer() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    logging.getLogger("asyncio").warning("Executing %s took %.3f seconds", "<Task>", 0.2)
    record = json.loads(_lines(stream)[0])
    assert record["logger"] == "asyncio"
    assert record["level"] == "warning"
    assert record["event"] == "Executing <Task> took 0.200 seconds"


def test_exceptions_stay_on_one_line() -> None:
    stream = io.StringIO()
    configure_logging("logfmt", "info", stream)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("server").exception("connection_failed", listener="http")
    [line] = _lines(stream)
    assert "RuntimeError: boom" in parse_logfmt(line)["exception"]


def test_secrets_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    get_logger("smtp").info("auth", user="a@b.example", password="hunter2")
    assert "hunter2" not in stream.getvalue()
    assert json.loads(_lines(stream)[0])["password"] == "[redacted]"


def test_reconfigure_replaces_only_our_handler() -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    first, second = io.StringIO(), io.StringIO()
    configure_logging("logfmt", "info", first)
    configure_logging("json", "info", second)
    get_logger("server").info("reload")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["event"] == "reload"
    assert other in logging.getLogger().handlers


def test_bad_format_or_level() -> None:
    with pytest.raises(ValueError, match="use logfmt or json"):
        configure_logging("xml", "info")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="use one of"):
        configure_logging("json", "loud")
