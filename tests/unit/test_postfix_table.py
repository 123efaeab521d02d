"""Postfix text tables (postmap(1) syntax), table specs, TableSet, and the virtual(5) and
transport(5) search orders."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.tables import (
    AddressMatch,
    PostfixTable,
    TableError,
    TableSet,
    load_postfix_table,
    lookup_address,
    lookup_domain,
    match_address,
    open_table,
    open_table_set,
    parse_postfix_table,
    parse_table_spec,
    render_postfix_table,
)
from pochta.tables import source as source_module
from pochta.tables.postfix_text import address_lookup_keys, domain_lookup_keys, split_extension


def parse(text: str) -> PostfixTable:
    return parse_postfix_table(text, "virtual")


# -- format -----------------------------------------------------------------------------------


def test_key_whitespace_value() -> None:
    table = parse("alice@example.com\talice@mail.example.com\n")
    assert table.entries == {"alice@example.com": "alice@mail.example.com"}
    assert table.get("alice@example.com") == "alice@mail.example.com"
    assert table.path == "virtual"
    assert table.warnings == ()


def test_value_keeps_inner_whitespace_and_is_trimmed() -> None:
    table = parse("key   a,  b \t c   \r\n")
    assert table.get("key") == "a,  b \t c"


def test_comments_and_blank_lines_are_ignored() -> None:
    table = parse("# a comment\n\n   \n\t# indented comment\nkey value\n")
    assert table.entries == {"key": "value"}


def test_hash_inside_a_line_is_text() -> None:
    # postmap(1): only a line whose first non-whitespace character is '#' is a comment.
    table = parse("key value # not a comment\nk2 #v\n")
    assert table.get("key") == "value # not a comment"
    assert table.get("k2") == "#v"


def test_continuation_lines_join_with_their_whitespace() -> None:
    table = parse("key a,\n    b,\n\tc\nother x\n")
    assert table.get("key") == "a,    b,\tc"
    assert table.get("other") == "x"


def test_comments_and_blank_lines_do_not_end_a_logical_line() -> None:
    # readlline(3) skips them and keeps collecting continuation text.
    table = parse("key a,\n# comment\n\n   b\n")
    assert table.get("key") == "a,   b"


def test_value_on_a_continuation_line() -> None:
    assert parse("key\n  value\n").get("key") == "value"


def test_continuation_without_a_line_to_continue_is_ignored_with_warning() -> None:
    table = parse("  orphan text\n  more\nkey value\n")
    assert table.entries == {"key": "value"}
    assert table.warnings == (
        "virtual:1: continuation line without a line to continue, ignored; "
        "remove the leading whitespace",
    )


def test_keys_are_case_folded_values_are_not() -> None:
    table = parse("Alice@EXAMPLE.com Alice@Mail.Example.COM\n")
    assert table.entries == {"alice@example.com": "Alice@Mail.Example.COM"}
    assert table.get("ALICE@example.COM") == "Alice@Mail.Example.COM"
    assert "Alice@Example.Com" in table
    assert 42 not in table
    assert len(table) == 1


def test_duplicate_keeps_first_and_warns() -> None:
    table = parse("a@x one\nb@x two\nA@X three\n")
    assert table.get("a@x") == "one"
    assert table.warnings == (
        "virtual:3: duplicate entry 'a@x', ignored; the entry on line 1 is used",
    )
    assert table.lines == {"a@x": 1, "b@x": 2}


def test_key_without_value_is_an_error() -> None:
    with pytest.raises(TableError) as info:
        parse("ok value\n\nlonely@example.com   \n")
    assert str(info.value) == (
        "virtual:3: key 'lonely@example.com' has no value; write 'key whitespace value' "
        "on one line, e.g. 'lonely@example.com VALUE'"
    )


def test_error_line_is_the_first_line_of_the_logical_line() -> None:
    with pytest.raises(TableError, match=r"^virtual:2: key 'k' has no value"):
        parse("a b\nk\n# c\n   \n")


def test_alias_style_record_warns() -> None:
    table = parse("postmaster: root\n")
    assert table.get("postmaster:") == "root"
    assert table.warnings == (
        "virtual:1: record is in 'key: value' format; is this an aliases file? Drop the ':' "
        "or open it as an aliases table",
    )


def test_crlf_line_ends() -> None:
    table = parse("a@x b@y\r\n#c\r\nc@x  d@y\r\n")
    assert table.entries == {"a@x": "b@y", "c@x": "d@y"}


def test_no_final_newline() -> None:
    assert parse("a b").entries == {"a": "b"}


def test_empty_text() -> None:
    assert parse("").entries == {}


def test_non_utf8_line_is_skipped_with_warning() -> None:
    table = parse_postfix_table(b"good value\nbad\xff value\nalso ok\n", "t")
    assert table.entries == {"good": "value", "also": "ok"}
    assert table.warnings == ("t:2: non-UTF-8 input, ignored; save the file as UTF-8",)


def test_utf8_keys_and_values() -> None:
    table = parse_postfix_table("Почта@Пример.рф ящик@пример.рф\n".encode(), "t")
    assert table.get("почта@пример.рф") == "ящик@пример.рф"


def test_nul_is_an_error() -> None:
    with pytest.raises(TableError) as info:
        parse("a b\nc\0 d\n")
    assert str(info.value) == (
        "virtual:2: line contains a NUL character; remove it (if this is a binary "
        ".db/.lmdb/.cdb file, name the text source file instead)"
    )


def test_unicode_line_separators_are_not_line_ends() -> None:
    # Postfix splits only at "\n"; U+2028 and U+0085 are ordinary characters to it.
    table = parse("a b\u2028c\x85d\n")
    assert table.get("a") == "b\u2028c\x85d"


def test_long_physical_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "MAX_LINE_CHARS", 10)
    with pytest.raises(TableError) as info:
        parse("a b\nkey 12345678901\n")
    assert str(info.value) == (
        "virtual:2: line is longer than 1 MiB; split the entry or use an SQL table"
    )


def test_long_logical_line_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "MAX_LINE_CHARS", 10)
    with pytest.raises(TableError) as info:
        parse("key 12345\n 6789\n 0123\n")
    assert str(info.value) == (
        "virtual:1: logical line is longer than 1 MiB; split the entry or use an SQL table"
    )


def test_big_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "MAX_FILE_BYTES", 8)
    with pytest.raises(TableError) as info:
        parse("key value-that-is-long\n")
    assert str(info.value).startswith("virtual: file is 23 bytes, over the ")


def test_real_limits_are_64_mib_and_1_mib() -> None:
    assert source_module.MAX_FILE_BYTES == 64 * 1024 * 1024
    assert source_module.MAX_LINE_CHARS == 1024 * 1024
    with pytest.raises(TableError, match="line is longer than 1 MiB"):
        parse("k " + "v" * (1024 * 1024))


# -- files ------------------------------------------------------------------------------------


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "virtual"
    path.write_text("a@x b@y\nlonely\n")
    with pytest.raises(TableError, match=rf"^{path}:2: key 'lonely' has no value"):
        load_postfix_table(path)
    path.write_text("a@x b@y\n")
    table = load_postfix_table(path)
    assert table.path == str(path)
    assert table.get("a@x") == "b@y"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(TableError) as info:
        load_postfix_table(path)
    assert str(info.value) == (
        f"{path}: cannot read: No such file or directory; check the path and permissions"
    )


def test_big_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge"
    with path.open("wb") as stream:
        stream.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(TableError) as info:
        load_postfix_table(path)
    assert str(info.value) == (
        f"{path}: file is {64 * 1024 * 1024 + 1} bytes, over the 64 MiB limit; "
        "split it into several tables"
    )


# -- rendering and properties ---------------------------------------------------------------


def test_render() -> None:
    assert render_postfix_table({"a@x": "b@y, c@z", "@x": "d"}) == "a@x b@y, c@z\n@x d\n"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("", "v"),
        ("a b", "v"),
        ("#a", "v"),
        ("Upper", "v"),
        ("k", ""),
        ("k", " v"),
        ("k", "v\nw"),
        ("k\0", "v"),
    ],
)
def test_render_refuses_what_would_not_read_back(key: str, value: str) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        render_postfix_table({key: value})


KEY_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-_+@=[]:/*"
VALUE_CHARS = KEY_CHARS + "ABCXYZ ,;#|\"'\\!$%&()"

keys = st.text(KEY_CHARS, min_size=1, max_size=30).filter(lambda k: not k.startswith("#"))
values = st.text(VALUE_CHARS, min_size=1, max_size=60).map(str.strip).filter(bool)


@given(st.dictionaries(keys, values, max_size=20))
@example({"a:": "b"})
@example({"k": "#v"})
def test_render_then_parse_round_trips(entries: dict[str, str]) -> None:
    assert parse(render_postfix_table(entries)).entries == entries


@given(st.text())
@example("\x00")
@example(" ")
@example("\n a")
@example("k\x85")
@example("a\u2028")
def test_any_text_parses_or_raises_table_error(text: str) -> None:
    try:
        table = parse(text)
    except TableError:
        return
    for key, value in table.entries.items():
        assert key
        assert value
        assert table.get(key) == value


@given(st.binary())
@example(b"\xff\xfe")
@example(b"k \xc3")
def test_any_bytes_parse_or_raise_table_error(data: bytes) -> None:
    with contextlib.suppress(TableError):
        parse_postfix_table(data, "t")


# -- virtual(5) lookup order ------------------------------------------------------------------

VIRTUAL = """\
# virtual(5) example: every lookup form in one table
user+foo@example.com    full-with-extension
user@example.com        full-without-extension
user+foo                local-with-extension
user                    local-without-extension
@example.com            catch-all
"""


def remove(table: PostfixTable, *keys: str) -> PostfixTable:
    entries = {k: v for k, v in table.entries.items() if k not in keys}
    return PostfixTable(table.path, entries)


def test_virtual_lookup_order_step_by_step() -> None:
    table = parse(VIRTUAL)
    address = "user+foo@example.com"
    order = [
        ("user+foo@example.com", "full-with-extension"),
        ("user@example.com", "full-without-extension"),
        ("user+foo", "local-with-extension"),
        ("user", "local-without-extension"),
        ("@example.com", "catch-all"),
    ]
    for index, (key, expected) in enumerate(order):
        current = remove(table, *(k for k, _ in order[:index]))
        assert lookup_address(current, address, local_part_lookup=True) == expected, key
    assert lookup_address(remove(table, *(k for k, _ in order)), address) is None


def test_virtual_lookup_skips_local_forms_for_remote_domains() -> None:
    table = remove(parse(VIRTUAL), "user+foo@example.com", "user@example.com")
    assert lookup_address(table, "user+foo@example.com") == "catch-all"
    assert lookup_address(table, "user+foo@example.com", local_part_lookup=True) == (
        "local-with-extension"
    )


def test_address_lookup_keys() -> None:
    assert list(address_lookup_keys("user+foo@example.com", local_part_lookup=True)) == [
        ("user+foo@example.com", None),
        ("user@example.com", "+foo"),
        ("user+foo", None),
        ("user", "+foo"),
        ("@example.com", None),
    ]
    assert list(address_lookup_keys("user@example.com")) == [
        ("user@example.com", None),
        ("@example.com", None),
    ]
    assert list(address_lookup_keys("user+foo")) == [("user+foo", None), ("user", "+foo")]
    assert list(address_lookup_keys("user+foo@x", "")) == [("user+foo@x", None), ("@x", None)]


def test_lookup_is_case_insensitive() -> None:
    table = parse(VIRTUAL)
    assert lookup_address(table, "USER+FOO@Example.COM") == "full-with-extension"


def test_match_address_reports_key_and_extension() -> None:
    table = parse("user@example.com mailbox\n")
    assert match_address(table, "user+news@example.com") == AddressMatch(
        "user@example.com", "mailbox", "+news"
    )
    assert match_address(table, "user@example.com") == AddressMatch(
        "user@example.com", "mailbox", None
    )
    assert match_address(table, "other@example.com") is None


def test_several_delimiters_split_at_the_first() -> None:
    table = parse("user@x found\n")
    assert lookup_address(table, "user-a+b@x", "+-") == "found"
    assert split_extension("user-a+b", "+-") == ("user", "-a+b")


@pytest.mark.parametrize(
    ("local", "delimiters", "expected"),
    [
        ("user+ext", "+", ("user", "+ext")),
        ("user+", "+", ("user", "+")),
        ("+ext", "+", ("+ext", None)),
        ("user", "+", ("user", None)),
        ("postmaster+x", "+", ("postmaster", "+x")),
        ("Postmaster", "+", ("Postmaster", None)),
        ("mailer-daemon", "-", ("mailer-daemon", None)),
        ("double-bounce", "-", ("double-bounce", None)),
        ("owner-list", "-", ("owner-list", None)),
        ("list-request", "-", ("list-request", None)),
        ("-request", "-", ("-request", None)),
        ("owner+x", "+", ("owner", "+x")),
        ("user-ext", "-", ("user", "-ext")),
        ("user+ext", "", ("user+ext", None)),
    ],
)
def test_split_extension_like_split_addr(
    local: str, delimiters: str, expected: tuple[str, str | None]
) -> None:
    assert split_extension(local, delimiters) == expected


def test_address_without_at_is_looked_up_as_itself() -> None:
    table = parse("root admin@example.com\n")
    assert lookup_address(table, "root+cron") == "admin@example.com"
    assert lookup_address(table, "root@") is None


def test_duplicate_keys_are_not_tried_twice() -> None:
    assert list(address_lookup_keys("@example.com")) == [("@example.com", None)]


# -- transport(5) domain order ---------------------------------------------------------------

TRANSPORT = """\
example.com       lmtp:unix:private/dovecot-lmtp
.example.com      relay:[inner.example.com]
.org              smtp:[relay.example.net]
*                 smtp:[fallback.example.net]
"""


def test_domain_lookup_order() -> None:
    table = parse(TRANSPORT)
    assert lookup_domain(table, "example.com") == "lmtp:unix:private/dovecot-lmtp"
    assert lookup_domain(table, "a.b.Example.com") == "relay:[inner.example.com]"
    assert lookup_domain(table, "lists.example.org") == "smtp:[relay.example.net]"
    assert lookup_domain(table, "example.net") is None
    assert lookup_domain(table, "example.net", wildcard=True) == "smtp:[fallback.example.net]"


def test_domain_lookup_keys() -> None:
    assert list(domain_lookup_keys("a.b.example.com")) == [
        "a.b.example.com",
        ".b.example.com",
        ".example.com",
        ".com",
    ]
    assert list(domain_lookup_keys("a.b.example.com", parent_matches_subdomains=True)) == [
        "a.b.example.com",
        "b.example.com",
        "example.com",
        "com",
    ]
    assert list(domain_lookup_keys("localhost")) == ["localhost"]
    assert list(domain_lookup_keys("")) == []


def test_parent_style_matches_subdomains_without_dot() -> None:
    table = parse("example.com relay:[a]\n")
    assert lookup_domain(table, "mx.example.com") is None
    assert lookup_domain(table, "mx.example.com", parent_matches_subdomains=True) == "relay:[a]"


# -- specs ------------------------------------------------------------------------------------


def test_spec_types(tmp_path: Path) -> None:
    assert parse_table_spec("/etc/postfix/virtual").type == "texthash"
    spec = parse_table_spec("hash:/etc/postfix/virtual")
    assert (spec.type, spec.path, spec.text_path) == (
        "hash",
        "/etc/postfix/virtual",
        "/etc/postfix/virtual",
    )
    assert parse_table_spec("LMDB:/x").type == "lmdb"
    assert parse_table_spec("./odd:name").type == "texthash"


def test_spec_db_suffix_reads_the_text_source(tmp_path: Path) -> None:
    source = tmp_path / "virtual"
    source.write_text("a@x b@y\n")
    assert parse_table_spec(f"hash:{source}.db").text_path == str(source)
    assert open_table(f"hash:{source}.db", kind="map").get("a@x") == "b@y"
    assert open_table(f"lmdb:{source}.lmdb", kind="map").get("a@x") == "b@y"
    # texthash has no binary form: the name is used as given.
    assert parse_table_spec(f"texthash:{source}.db").text_path == f"{source}.db"


def test_spec_db_suffix_kept_when_only_that_file_exists(tmp_path: Path) -> None:
    path = tmp_path / "table.db"
    path.write_text("a b\n")
    assert parse_table_spec(f"hash:{path}").text_path == str(path)


def test_unknown_type() -> None:
    with pytest.raises(TableError) as info:
        parse_table_spec("mysql:/etc/postfix/mysql-virtual.cf")
    assert str(info.value) == (
        "mysql:/etc/postfix/mysql-virtual.cf: unsupported table type 'mysql'; use one of "
        "texthash, hash, btree, lmdb, cdb, regexp, pcre followed by ':' and the path of the "
        "text file, or a bare path"
    )


def test_empty_path() -> None:
    with pytest.raises(TableError) as info:
        parse_table_spec("hash:")
    assert str(info.value) == "hash:: no file named; write 'hash:/path/to/file'"


def test_open_table_bare_path(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("k v\n")
    table = open_table(str(path), kind="map")
    assert isinstance(table, PostfixTable)
    assert table.get("K") == "v"


# -- TableSet ---------------------------------------------------------------------------------


def test_table_set_answers_from_first_table_that_has_the_key(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("a@x first\n")
    second.write_text("a@x second\nb@x second\n@x catchall\n")
    tables = open_table_set([f"hash:{first}", str(second)], kind="map")
    assert tables.lookup("a@x") == "first"
    assert tables.lookup("b@x") == "second"
    assert tables.lookup("c@x") is None
    # Each key pattern is tried in every table before the next one, as Postfix does.
    assert lookup_address(tables, "b+z@x") == "second"


def test_table_set_reload_keeps_old_contents_on_error(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.write_text("a@x one\n")
    second.write_text("b@x two\n")
    tables = open_table_set([str(first), str(second)], kind="map")
    first.write_text("a@x changed\n")
    second.write_text("b@x\n")
    errors = tables.reload()
    assert errors == [
        f"{second}:1: key 'b@x' has no value; write 'key whitespace value' on one line, "
        "e.g. 'b@x VALUE'; keeping the previous contents"
    ]
    assert tables.lookup("a@x") == "changed"
    assert tables.lookup("b@x") == "two"
    os.unlink(first)
    second.write_text("b@x fixed\n")
    errors = tables.reload()
    assert len(errors) == 1
    assert errors[0].startswith(f"{first}: cannot read: No such file or directory")
    assert tables.lookup("a@x") == "changed"
    assert tables.lookup("b@x") == "fixed"


def test_table_set_open_fails_on_first_bad_table(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read"):
        open_table_set([str(tmp_path / "missing")], kind="map")


def test_table_set_warnings(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_text("a b\na c\n")
    tables: TableSet[str] = open_table_set([str(path)], kind="map")
    assert tables.warnings == (
        f"{path}:2: duplicate entry 'a', ignored; the entry on line 1 is used",
    )
    assert len(tables.tables) == 1


tricky_text = st.text(st.sampled_from([*'ab:,#@ \t\n\r\\"', "ß", "\u0130", "K"]), max_size=40)


@given(st.one_of(tricky_text, st.text()))
@example("K v")
@example("\u0130 v")
def test_every_parsed_table_renders_back_to_itself(text: str) -> None:
    try:
        table = parse(text)
    except TableError:
        return
    assert parse(render_postfix_table(table.entries)).entries == table.entries
