"""RFC 5260 §6 ``index``: ``:index N`` and ``:last`` on ``header``, ``address`` and ``date``
(and on editheader's ``deleteheader``, see ``editheader.py``): only the Nth field of each
named header, counted from the top or, with ``:last``, from the bottom.

The core tests know nothing of the index: this module registers the two tags on them and
wraps their handlers and validators; a call without ``:index`` runs the core handler as it is.
"""

from __future__ import annotations

import dataclasses

from pochta.sieve.address import header_addresses
from pochta.sieve.compiler import Call, CompileState
from pochta.sieve.extensions.core import extract_parts
from pochta.sieve.extensions.date import select_index
from pochta.sieve.interpreter import Run, decode_words
from pochta.sieve.registry import (
    REGISTRY,
    Capability,
    ParsedAddress,
    TagSpec,
    TestHandler,
    Validator,
)

__all__ = ["INDEX_TAGS", "check_index"]

INDEX_TAGS = (TagSpec("index", arg="number", capability="index"), TagSpec("last", capability="index"))


def check_index(call: Call) -> None:
    """RFC 5260 §6: ``:last`` only with ``:index``; the index counts from 1."""
    if "last" in call.tags and "index" not in call.tags:
        raise call.error("':last' needs ':index' (RFC 5260 §6)")
    index = call.tags.get("index")
    if isinstance(index, int) and index < 1:
        raise call.error("':index' counts from 1 (RFC 5260 §6)")


def _header(run: Run, call: Call) -> bool:
    values: list[str] = []
    for name in run.expand_all(call.strings(0)):
        raw = select_index(run, call, run.raw_header_values(name))
        values.extend(decode_words(v) for v in raw)
    return run.match(call, values, call.strings(1))


def _address(run: Run, call: Call) -> bool:
    addresses: list[ParsedAddress] = []
    for name in run.expand_all(call.strings(0)):
        for raw in select_index(run, call, run.raw_header_values(name)):
            addresses.extend(header_addresses(raw))
    return run.match(call, extract_parts(run, call, addresses), call.strings(1))


def _wrap(name: str, indexed: TestHandler | None) -> None:
    spec = REGISTRY.tests[name]
    plain = spec.handler
    validate = spec.validate

    def handler(run: Run, call: Call) -> bool:
        if indexed is not None and "index" in call.tags:
            return indexed(run, call)
        return plain(run, call)

    def validator(call: Call, state: CompileState) -> Call | None:
        check_index(call)
        return validate(call, state) if validate is not None else None

    checked: Validator = validator
    REGISTRY.add_test(dataclasses.replace(spec, handler=handler, validate=checked))
    for tag in INDEX_TAGS:
        REGISTRY.add_tag("test", name, tag)


REGISTRY.add_capability(Capability("index"))
_wrap("header", _header)
_wrap("address", _address)
_wrap("date", None)  # date.py applies the index itself (header_dates)
