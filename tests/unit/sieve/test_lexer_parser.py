"""The Sieve lexer and parser (RFC 5228 §2, §8): tokens, strings, errors with positions."""

from __future__ import annotations

import pytest

from pochta.sieve.errors import SieveError
from pochta.sieve.lexer import decode_script, tokenize
from pochta.sieve.parser import MAX_LIST_ITEMS, MAX_NESTING, parse
from pochta.sieve.syntax import NumberArg, StringListArg, TagArg


def values(text: str) -> list[object]:
    return [t.value for t in tokenize(text)[:-1]]


def test_tokens_carry_line_and_column() -> None:
    tokens = tokenize("if true {\n  keep;\n}")
    assert [(t.kind, t.value, t.line, t.column) for t in tokens] == [
        ("identifier", "if", 1, 1),
        ("identifier", "true", 1, 4),
        ("punct", "{", 1, 9),
        ("identifier", "keep", 2, 3),
        ("punct", ";", 2, 7),
        ("punct", "}", 3, 1),
        ("eof", "", 3, 2),
    ]


def test_numbers_with_quantifiers() -> None:
    # RFC 5228 §2.4.1
    assert values("1 2K 3m 4G") == [1, 2048, 3 * 1024**2, 4 * 1024**3]


def test_number_too_large() -> None:
    with pytest.raises(SieveError, match="too large"):
        tokenize("99999999999999999999G")


def test_quoted_string_escapes() -> None:
    # RFC 5228 §2.4.2: \\ and \" stand for themselves, other backslashes are dropped
    assert values(r'"a\\b\"c\d"') == ['a\\b"cd']


def test_multiline_string_dot_stuffing_and_comment() -> None:
    text = "text: # a comment\r\nline one\r\n..dotted\r\n.\r\n;"
    tokens = tokenize(text)
    assert tokens[0].value == "line one\r\n.dotted\r\n"
    assert tokens[0].multiline
    assert tokens[1].value == ";"
    assert tokens[1].line == 5


def test_multiline_needs_end_of_line() -> None:
    with pytest.raises(SieveError) as e:
        tokenize("text: junk\n.\n")
    assert "after 'text:'" in e.value.message
    assert (e.value.line, e.value.column) == (1, 7)


def test_comments_are_dropped() -> None:
    assert values("keep; # hash\n/* bracket\n comment */ stop;") == ["keep", ";", "stop", ";"]


def test_unterminated_things() -> None:
    for text, what in (
        ('"abc', "unterminated string"),
        ("/* abc", "unterminated comment"),
        ("text:\nabc\n", "unterminated multi-line"),
    ):
        with pytest.raises(SieveError, match=what):
            tokenize(text)


def test_bad_utf8() -> None:
    with pytest.raises(SieveError) as e:
        decode_script(b'keep;\n"\xff"')
    assert (e.value.line, e.value.column) == (2, 2)


def test_identifiers_and_tags_are_case_insensitive() -> None:
    assert values("KeeP :DOMAIN") == ["keep", "domain"]


def test_parse_tree() -> None:
    (node,) = parse('if header :is ["a", "b"] "c" { keep; }')
    assert node.name == "if"
    (test,) = node.tests
    assert test.arguments == (
        TagArg("is", 1, 11),
        StringListArg(("a", "b"), True, 1, 15),
        StringListArg(("c",), False, 1, 26),
    )
    assert node.block is not None
    assert node.block[0].name == "keep"
    (size,) = parse("if size :over 10K {}")[0].tests
    assert size.arguments[1] == NumberArg(10240, 1, 15)


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        ("keep", "expected ';' after command 'keep', found the end of the script", (1, 5)),
        ("keep;\nif true { stop; ", "expected '}' to close the block of 'if'", (2, 17)),
        ("if anyof (true; false) {}", "expected ',' or ')' in the test list of 'anyof'", (1, 15)),
        ('x ["a" "b"];', "expected ',' or ']' in the string list", (1, 8)),
        ("keep; }", "'}' without a matching '{'", (1, 7)),
        ("if anyof ( {}", "expected a test, found '{'", (1, 12)),
    ],
)
def test_parse_errors_say_what_was_expected(
    text: str, message: str, where: tuple[int, int]
) -> None:
    with pytest.raises(SieveError) as e:
        parse(text)
    assert e.value.message.startswith(message)
    assert (e.value.line, e.value.column) == where


def test_nesting_limit() -> None:
    deep = "if true {" * (MAX_NESTING + 1) + "}" * (MAX_NESTING + 1)
    with pytest.raises(SieveError, match="nested more than"):
        parse(deep)
    ok = "if true {" * MAX_NESTING + "}" * MAX_NESTING
    parse(ok)
    tests = "if " + "not " * (MAX_NESTING + 5) + "true {}"
    with pytest.raises(SieveError, match="nested more than"):
        parse(tests)


def test_string_list_limit() -> None:
    items = ", ".join(['"a"'] * (MAX_LIST_ITEMS + 1))
    with pytest.raises(SieveError, match="at most"):
        parse(f"x [{items}];")


def test_script_size_limit() -> None:
    with pytest.raises(SieveError, match="max_script_bytes"):
        parse("keep;" * 100, max_bytes=100)
