"""aliases(5) files: parsing, targets, rendering, :include: expansion."""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pochta.tables import (
    AddressTarget,
    AliasTable,
    CommandTarget,
    FileTarget,
    IncludeTarget,
    TableError,
    Target,
    expand_alias,
    expand_includes,
    load_aliases,
    lookup_address,
    open_table,
    open_table_set,
    parse_aliases,
    render_aliases,
    render_target,
)
from pochta.tables.aliases_file import parse_include_file


def parse(text: str) -> AliasTable:
    return parse_aliases(text, "aliases")


def error_of(text: str) -> str:
    with pytest.raises(TableError) as info:
        parse(text)
    return str(info.value)


# -- format -----------------------------------------------------------------------------------

ALIASES = """\
# /etc/aliases
postmaster: root
MAILER-DAEMON:	postmaster
root: alice, bob@example.org
staff: alice,
       bob,
   # carol left
       dave
lists: "|/usr/bin/list-handler --flags a,b", |/usr/bin/other arg
archive: /var/mail/archive
team: :include:/etc/mail/team
"""


def test_parse_a_typical_file() -> None:
    table = parse(ALIASES)
    assert table.entries == {
        "postmaster": (AddressTarget("root"),),
        "mailer-daemon": (AddressTarget("postmaster"),),
        "root": (AddressTarget("alice"), AddressTarget("bob@example.org")),
        "staff": (AddressTarget("alice"), AddressTarget("bob"), AddressTarget("dave")),
        "lists": (
            CommandTarget("/usr/bin/list-handler --flags a,b"),
            CommandTarget("/usr/bin/other arg"),
        ),
        "archive": (FileTarget("/var/mail/archive"),),
        "team": (IncludeTarget("/etc/mail/team"),),
    }
    assert table.warnings == ()
    assert table.lines["staff"] == 5
    assert table.get("Mailer-Daemon") == (AddressTarget("postmaster"),)
    assert "ROOT" in table
    assert len(table) == 7


def test_space_around_the_colon_and_no_space() -> None:
    assert parse("a :b\nc:d\n").entries == {
        "a": (AddressTarget("b"),),
        "c": (AddressTarget("d"),),
    }


def test_empty_items_and_trailing_comma_are_skipped() -> None:
    assert parse("a: b,, c,\n").get("a") == (AddressTarget("b"), AddressTarget("c"))


def test_quoted_values() -> None:
    table = parse(
        'a: "|/bin/echo \\"hi\\", there", "/var/log/my file", ":include:/etc/x y",'
        ' "john doe"@example.com, "plain"\n'
    )
    assert table.get("a") == (
        CommandTarget('/bin/echo "hi", there'),
        FileTarget("/var/log/my file"),
        IncludeTarget("/etc/x y"),
        AddressTarget('"john doe"@example.com'),
        AddressTarget('"plain"'),
    )


def test_include_prefix_is_case_insensitive_and_may_have_space() -> None:
    assert parse("a: :INCLUDE: /etc/list\n").get("a") == (IncludeTarget("/etc/list"),)


def test_backslash_address_is_kept() -> None:
    # Sendmail's "\user" (deliver to the mailbox, do not alias again) is an address.
    assert parse("user: \\user, copy@example.com\n").get("user") == (
        AddressTarget("\\user"),
        AddressTarget("copy@example.com"),
    )


def test_duplicate_keeps_first_and_warns() -> None:
    table = parse("root: alice\nbob: bob2\nROOT: carol\n")
    assert table.get("root") == (AddressTarget("alice"),)
    assert table.warnings == (
        "aliases:3: duplicate entry 'root', ignored; the entry on line 1 is used",
    )


def test_orphan_continuation_warns() -> None:
    table = parse("  bob\nroot: alice\n")
    assert table.entries == {"root": (AddressTarget("alice"),)}
    assert table.warnings == (
        "aliases:1: continuation line without a line to continue, ignored; "
        "remove the leading whitespace",
    )


def test_non_utf8_entry_is_skipped_with_warning() -> None:
    table = parse_aliases(b"a: b\nc: d\xff\n", "aliases")
    assert table.entries == {"a": (AddressTarget("b"),)}
    assert table.warnings == ("aliases:2: non-UTF-8 input, ignored; save the file as UTF-8",)


# -- errors -----------------------------------------------------------------------------------


def test_missing_colon() -> None:
    assert error_of("root alice\n") == (
        "aliases:1: need 'name: value'; put a ':' after the alias name"
    )


def test_empty_name() -> None:
    assert error_of(": alice\n") == "aliases:1: alias name is empty; write 'name: value'"


def test_name_with_spaces() -> None:
    assert error_of("a b: c\n") == (
        "aliases:1: alias name 'a b' has spaces, commas or quotes; write one word before the ':'"
    )


def test_name_must_be_local() -> None:
    assert error_of("root@example.com: alice\n") == (
        "aliases:1: alias name 'root@example.com' must be local; drop the @domain "
        "(use a virtual alias map for other domains)"
    )
    assert "must be local" in error_of("a%b: c\n")


def test_no_targets() -> None:
    assert (
        error_of("\nroot:  \n")
        == "aliases:2: alias 'root' has no targets; write 'root: address, ...'"
    )
    assert "has no targets" in error_of("root: , ,\n")


def test_unterminated_quote() -> None:
    assert (
        error_of('a: "|cmd\n') == 'aliases:1: unterminated double quote; close it with a second "'
    )


def test_empty_command() -> None:
    assert error_of("a: |\n") == (
        "aliases:1: empty command after '|'; write '\"|/path/to/command\"'"
    )
    assert "empty command" in error_of('a: "|  "\n')


def test_relative_include() -> None:
    assert error_of("a: :include:lists/a\n") == (
        "aliases:1: ':include:lists/a' needs an absolute path; write ':include:/path/to/file'"
    )


def test_missing_comma_between_addresses() -> None:
    assert error_of("staff: alice\n  bob\n") == (
        "aliases:1: 'alice  bob' has spaces; separate targets with commas, or quote a command "
        'as "|command args"'
    )


def test_nul_and_limits() -> None:
    assert "NUL character" in error_of("a: b\0\n")
    with pytest.raises(TableError, match="line is longer than 1 MiB"):
        parse("a: " + "b" * (1024 * 1024))


def test_load_aliases(tmp_path: Path) -> None:
    path = tmp_path / "aliases"
    path.write_text("root: alice\n")
    assert load_aliases(path).get("root") == (AddressTarget("alice"),)
    assert open_table(f"hash:{path}.db", kind="aliases").get("root") == (AddressTarget("alice"),)
    path.write_text("root alice\n")
    with pytest.raises(TableError, match=rf"^{path}:1: need 'name: value'"):
        load_aliases(path)


def test_alias_table_set_and_local_part_lookup(tmp_path: Path) -> None:
    path = tmp_path / "aliases"
    path.write_text("root: alice\n")
    tables = open_table_set([str(path)], kind="aliases")
    assert tables.lookup("ROOT") == (AddressTarget("alice"),)
    assert lookup_address(tables, "root+cron") == (AddressTarget("alice"),)


# -- rendering --------------------------------------------------------------------------------


def test_render_target() -> None:
    assert render_target(AddressTarget("a@b")) == "a@b"
    assert render_target(CommandTarget('/bin/x "q" a,b')) == '"|/bin/x \\"q\\" a,b"'
    assert render_target(FileTarget("/var/mail/x")) == "/var/mail/x"
    assert render_target(FileTarget("/var/mail/a, b")) == '"/var/mail/a, b"'
    assert render_target(IncludeTarget("/etc/x")) == ":include:/etc/x"
    assert render_target(IncludeTarget("/etc/x y,z")) == '":include:/etc/x y,z"'


@pytest.mark.parametrize(
    "target",
    [
        AddressTarget("a, b"),
        AddressTarget("a b"),
        AddressTarget("|x"),
        AddressTarget("/x"),
        AddressTarget(""),
        CommandTarget(""),
        CommandTarget("a\nb"),
        IncludeTarget("relative"),
        FileTarget(" /x"),
    ],
)
def test_render_target_refuses_what_would_not_read_back(target: Target) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        render_target(target)


def test_render_aliases() -> None:
    entries: dict[str, tuple[Target, ...]] = {
        "root": (AddressTarget("alice"), CommandTarget("/bin/x")),
        "team": (IncludeTarget("/etc/team"),),
    }
    text = render_aliases(entries)
    assert text == 'root: alice, "|/bin/x"\nteam: :include:/etc/team\n'
    assert parse(text).entries == entries


@pytest.mark.parametrize("name", ["", "Root", "#x", "a b", "a@b", "a:b"])
def test_render_aliases_refuses_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        render_aliases({name: (AddressTarget("x"),)})


def test_render_aliases_refuses_empty_targets() -> None:
    with pytest.raises(ValueError, match="cannot be written"):
        render_aliases({"a": ()})


NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.-_+"
ADDRESS_CHARS = NAME_CHARS + "@=!$&*/?^{}~'"
TEXT_CHARS = NAME_CHARS + "ABC@/ ,\"'\\|:;#$()"

names = st.text(NAME_CHARS, min_size=1, max_size=20)
address = st.text(ADDRESS_CHARS, min_size=1, max_size=30).filter(
    lambda a: not a.startswith(("/", "|", ":include:"))
)
free_text = st.text(TEXT_CHARS, min_size=1, max_size=30)
targets: st.SearchStrategy[Target] = st.one_of(
    address.map(AddressTarget),
    free_text.filter(lambda c: c.strip()).map(CommandTarget),
    free_text.map(lambda p: FileTarget("/" + p.strip())),
    free_text.map(lambda p: IncludeTarget("/" + p.strip())),
)


@given(st.dictionaries(names, st.lists(targets, min_size=1, max_size=5).map(tuple), max_size=10))
@example({"a": (CommandTarget("\\"),)})
@example({"a": (FileTarget('/"'),)})
@example({"a": (CommandTarget(" x "),)})
def test_render_then_parse_round_trips(entries: dict[str, tuple[Target, ...]]) -> None:
    assert parse(render_aliases(entries)).entries == entries


@given(st.text())
@example('a: "\\')
@example('a: "x"y"')
@example("a: :include:")
@example("a:\x00")
def test_any_text_parses_or_raises_table_error(text: str) -> None:
    with contextlib.suppress(TableError):
        parse(text)


@given(st.binary())
def test_any_bytes_parse_or_raise_table_error(data: bytes) -> None:
    with contextlib.suppress(TableError):
        parse_aliases(data, "aliases")
    with contextlib.suppress(TableError):
        parse_include_file(data, "include")


# -- :include: ------------------------------------------------------------------------------


def test_include_file_format() -> None:
    text = "# team\nalice, bob\n\n  carol\n\t# dave\n:include:/etc/more\n"
    assert parse_include_file(text, "team") == (
        AddressTarget("alice"),
        AddressTarget("bob"),
        AddressTarget("carol"),
        IncludeTarget("/etc/more"),
    )


def test_include_file_errors_name_the_file_and_line() -> None:
    with pytest.raises(TableError) as info:
        parse_include_file("alice\nbob carol\n", "/etc/team")
    assert str(info.value).startswith("/etc/team:2: 'bob carol' has spaces")
    with pytest.raises(TableError, match=r"^/etc/team:1: non-UTF-8 input"):
        parse_include_file(b"\xff\n", "/etc/team")


def test_expand_includes(tmp_path: Path) -> None:
    team = tmp_path / "team"
    more = tmp_path / "more"
    team.write_text(f"alice, bob\n:include:{more}\n")
    more.write_text("carol\nalice\n")
    table = parse(f"staff: root, :include:{team}\nroot: admin\n")
    assert table.get("staff") == (AddressTarget("root"), IncludeTarget(str(team)))
    expanded = expand_includes(table)
    assert expanded.get("staff") == (
        AddressTarget("root"),
        AddressTarget("alice"),
        AddressTarget("bob"),
        AddressTarget("carol"),
    )
    assert expanded.get("root") == (AddressTarget("admin"),)
    assert expand_alias(table, "STAFF") == expanded.get("staff")
    assert expand_alias(table, "nobody") is None


def test_include_diamond_is_not_a_loop(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.write_text("x\n")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(f":include:{shared}\n")
    b.write_text(f":include:{shared}\n")
    table = parse(f"list: :include:{a}, :include:{b}\n")
    assert expand_alias(table, "list") == (AddressTarget("x"),)


def test_include_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text(f"alice, :include:{b}\n")
    b.write_text(f":include:{a}\n")
    table = parse(f"\nlist: :include:{a}\n")
    with pytest.raises(TableError) as info:
        expand_includes(table)
    assert str(info.value) == (
        f"aliases:2: alias 'list' (via {a}) (via {b}): :include: loop {a} -> {b} -> {a}; "
        "remove one of these includes"
    )


def test_include_of_itself(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text(f":include:{a}\n")
    with pytest.raises(TableError, match=r":include: loop (\S+) -> \1;"):
        expand_alias(parse(f"list: :include:{a}\n"), "list")


def test_include_depth_limit(tmp_path: Path) -> None:
    files = [tmp_path / f"level{n}" for n in range(4)]
    for current, following in itertools.pairwise(files):
        current.write_text(f":include:{following}\n")
    files[-1].write_text("deep@example.com\n")
    table = parse(f"list: :include:{files[0]}\n")
    assert expand_alias(table, "list", max_depth=4) == (AddressTarget("deep@example.com"),)
    with pytest.raises(TableError) as info:
        expand_alias(table, "list", max_depth=3)
    assert str(info.value).endswith(
        f": :include: files nested deeper than 3 at {files[3]}; flatten the includes"
    )


def test_include_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(TableError) as info:
        expand_includes(parse(f"list: :include:{missing}\n"))
    assert str(info.value) == (
        f"{missing}: cannot read: No such file or directory; check the path and permissions"
    )


def test_commands_and_files_in_includes_are_refused_by_default(tmp_path: Path) -> None:
    inc = tmp_path / "inc"
    inc.write_text('"|/bin/cat"\n/var/log/x\n')
    table = parse(f"list: :include:{inc}\n")
    with pytest.raises(TableError) as info:
        expand_alias(table, "list")
    assert str(info.value) == (
        f"aliases:1: alias 'list' (via {inc}): command '/bin/cat' in {inc} is not allowed in "
        ":include: files; move it into the aliases file"
    )
    with pytest.raises(TableError, match=r"file '/var/log/x' in .* is not allowed"):
        expand_alias(table, "list", allow_commands_in_includes=True)
    assert expand_alias(
        table, "list", allow_commands_in_includes=True, allow_files_in_includes=True
    ) == (CommandTarget("/bin/cat"), FileTarget("/var/log/x"))


def test_commands_in_the_aliases_file_itself_are_fine() -> None:
    table = parse('a: "|/bin/cat", /var/log/x\n')
    assert expand_alias(table, "a") == (CommandTarget("/bin/cat"), FileTarget("/var/log/x"))


def test_empty_include_warns(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    expanded = expand_includes(parse(f"list: :include:{empty}\n"))
    assert expanded.get("list") == ()
    assert expanded.warnings == (
        "aliases:1: alias 'list' expands to no targets; its :include: files are empty",
    )


tricky_text = st.lists(
    st.sampled_from([*'ab:,"\\|/ \t\n#@', ":include:", "ß", "\u0130", "K"]), max_size=30
).map("".join)


@given(st.one_of(tricky_text, st.text()))
@example('a: "b"')
@example('a: "x y"@z')
def test_every_parsed_table_renders_back_to_itself(text: str) -> None:
    try:
        table = parse(text)
    except TableError:
        return
    assert parse(render_aliases(table.entries)).entries == table.entries
