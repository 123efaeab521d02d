"""cleanup: the only way into the queue (Postfix cleanup(8)).

:class:`Cleanup` takes a received message and its envelope, prepends ``Received:``, adds
``Message-ID:``/``Date:`` to submissions, applies canonical(5) maps, enforces header limits
and the hop count, then runs the mail-authentication and spam filters. Header handling works
on raw bytes (:mod:`pochta.mime.headers`) so that untouched fields and the body stay
exactly as they came.
"""

from pochta.cleanup.canonical import CanonicalMaps, address_spans, rewrite_address_list
from pochta.cleanup.pipeline import (
    HEADER_TOO_LARGE,
    MAX_HOPS,
    TOO_MANY_HOPS,
    Cleanup,
    CleanupInput,
    CleanupResult,
    Filter,
)
from pochta.mime.headers import (
    MAX_HEADER_BLOCK_BYTES,
    MAX_HEADER_FIELD_BYTES,
    HeaderField,
    HeaderLimitError,
    SplitMessage,
    detect_newline,
    make_field,
    split_message,
)

__all__ = [
    "HEADER_TOO_LARGE",
    "MAX_HEADER_BLOCK_BYTES",
    "MAX_HEADER_FIELD_BYTES",
    "MAX_HOPS",
    "TOO_MANY_HOPS",
    "CanonicalMaps",
    "Cleanup",
    "CleanupInput",
    "CleanupResult",
    "Filter",
    "HeaderField",
    "HeaderLimitError",
    "SplitMessage",
    "address_spans",
    "detect_newline",
    "make_field",
    "rewrite_address_list",
    "split_message",
]
