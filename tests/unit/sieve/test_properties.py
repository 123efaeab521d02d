"""Hypothesis: no input makes the Sieve compiler or interpreter raise anything but
SieveError (SieveRuntimeError for runs)."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pochta.sieve.actions import SieveResult
from pochta.sieve.errors import SieveError
from pochta.sieve.lexer import decode_script
from pochta.sieve.limits import SieveLimits
from pochta.sieve.script import compile_script, run_script

from .helpers import context

# Text that looks like Sieve often enough to get past the lexer.
_PIECES = st.sampled_from(
    [
        "if",
        "elsif",
        "else",
        "require",
        "keep",
        "discard",
        "stop",
        "fileinto",
        "redirect",
        "header",
        "address",
        "envelope",
        "exists",
        "size",
        "allof",
        "anyof",
        "not",
        "true",
        "false",
        "set",
        "string",
        "body",
        "ihave",
        "error",
        ":is",
        ":contains",
        ":matches",
        ":regex",
        ":count",
        ":value",
        ":comparator",
        ":over",
        ":under",
        ":copy",
        ":flags",
        ":lower",
        ":domain",
        ":detail",
        '"variables"',
        '"fileinto"',
        '"a@b.example"',
        '"${1}"',
        '"${hex:41}"',
        '"*?\\\\"',
        '"i;ascii-numeric"',
        '"gt"',
        "[",
        "]",
        "{",
        "}",
        "(",
        ")",
        ",",
        ";",
        " ",
        "\n",
        "text:\n",
        "\n.\n",
        "#",
        "/*",
        "*/",
        "1K",
        "99999999999G",
        '"',
        "\\",
    ]
)
SIEVEISH = st.lists(_PIECES | st.text(max_size=5), max_size=60).map("".join)
SMALL = SieveLimits(max_script_bytes=4096, max_actions=8, max_redirects=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300) | SIEVEISH)
@example("if " + "not " * 10000 + "true {}")
@example("[" * 5000)
@example('require "variables"; set "a" "${' + "{" * 1000 + '";')
def test_compile_raises_only_sieve_error(text: str) -> None:
    with contextlib.suppress(SieveError):
        compile_script(text, limits=SMALL)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_bytes_raise_only_sieve_error(data: bytes) -> None:
    with contextlib.suppress(SieveError):
        compile_script(decode_script(data), limits=SMALL)
    with contextlib.suppress(SieveError):
        compile_script(data.decode("utf-8", "surrogateescape"), limits=SMALL)


# -- generated valid scripts -------------------------------------------------------------

REQUIRE = (
    'require ["fileinto", "envelope", "variables", "relational", "regex", "body", "copy",'
    ' "imap4flags", "subaddress", "comparator-i;ascii-numeric", "reject", "mailbox",'
    ' "encoded-character", "environment", "ihave"];\n'
)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


STRINGS = st.text(max_size=12).map(_quote) | st.sampled_from(
    ['"*"', '"${1}"', '"${a}"', '"?*?"', '"\\\\*"', '"a@b.example"', '"${hex:41}"']
)
LISTS = STRINGS | st.lists(STRINGS, min_size=1, max_size=3).map(lambda x: f"[{', '.join(x)}]")
HEADERS = st.sampled_from(['"subject"', '"from"', '["to", "cc"]', '"x-nope"'])
MATCH = st.sampled_from(
    [
        "",
        ":is",
        ":contains",
        ":matches",
        ':count "ge" :comparator "i;ascii-numeric"',
        ':value "lt"',
        ":regex",
    ]
)
PART = st.sampled_from(["", ":all", ":localpart", ":domain", ":user", ":detail"])


def _tests(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children).map(lambda t: f"not {t[0]}"),
        st.lists(children, min_size=1, max_size=3).map(lambda t: f"anyof ({', '.join(t)})"),
        st.lists(children, min_size=1, max_size=3).map(lambda t: f"allof ({', '.join(t)})"),
    )


SIMPLE_TESTS = st.one_of(
    st.just("true"),
    st.just("false"),
    st.builds(lambda m, h, k: f"header {m} {h} {k}", MATCH, HEADERS, LISTS),
    st.builds(lambda m, p, h, k: f"address {m} {p} {h} {k}", MATCH, PART, HEADERS, LISTS),
    st.builds(lambda m, p, k: f'envelope {m} {p} "to" {k}', MATCH, PART, LISTS),
    st.builds(lambda h: f"exists {h}", HEADERS),
    st.builds(lambda n: f"size :over {n}", st.integers(0, 10**6)),
    st.builds(lambda m, s, k: f"string {m} {s} {k}", MATCH, LISTS, LISTS),
    st.builds(lambda m, k: f"body :text {m} {k}", MATCH, LISTS),
    st.builds(lambda k: f"hasflag {k}", LISTS),
)
TESTS = st.recursive(SIMPLE_TESTS, _tests, max_leaves=6)
SIMPLE_COMMANDS = st.one_of(
    st.just("keep;"),
    st.just("discard;"),
    st.builds(lambda s: f"fileinto :copy {s};", STRINGS),
    st.builds(lambda s: f'fileinto :create "box{s[1:-1][:3]}";', STRINGS),
    st.just('redirect "x@example.com";'),
    st.builds(lambda s: f'set :lower "a" {s};', STRINGS),
    st.builds(lambda s: f"addflag {s};", LISTS),
    st.just('reject "no";'),
    st.just("stop;"),
)


def _blocks(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    block = st.lists(children, max_size=3).map(" ".join)
    return st.builds(lambda t, b, e: f"if {t} {{ {b} }} else {{ {e} }}", TESTS, block, block)


COMMANDS = st.recursive(SIMPLE_COMMANDS, _blocks, max_leaves=8)
MESSAGES = st.sampled_from(
    [
        b"From: a@example.com\r\nTo: b+x@example.org\r\nSubject: hi *\r\n\r\nbody\r\n",
        b"Subject: =?utf-8?b?w6k=?=\r\nTo: group: a@b.example;\r\n\r\n",
        b"",
        b"\r\n\r\n",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n',
    ]
) | st.binary(max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(COMMANDS, max_size=6).map(" ".join), MESSAGES)
def test_generated_scripts_run_or_raise_sieve_error(body: str, message: bytes) -> None:
    try:
        script = compile_script(REQUIRE + body, limits=SMALL)
    except SieveError:
        return
    try:
        result = run_script(script, context(message), limits=SMALL)
    except SieveError:
        return
    assert isinstance(result, SieveResult)
