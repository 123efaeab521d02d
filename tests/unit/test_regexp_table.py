"""regexp: and pcre: tables (regexp_table(5), pcre_table(5)): the parser, the matching,
the address search order, and Postfix's own ``postmap -q`` as the oracle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.tables import (
    TableError,
    TableSet,
    lookup_address,
    open_table,
    open_table_set,
    parse_regexp_table,
)
from pochta.tables.regexp import PatternKind

POSTMAP = shutil.which("postmap") or (
    "/usr/sbin/postmap" if Path("/usr/sbin/postmap").exists() else None
)

# regexp_table(5) EXAMPLE SMTPD ACCESS MAP and EXAMPLE HEADER FILTER MAP, virtual(5)-style
# rewriting, and the constructs the parser has to get right: if/endif (nested), negation,
# $N, ${N}, $$, another delimiter, an escaped delimiter, POSIX classes, flags.
REGEXP_TABLE = r"""# Disallow sender-specified routing. This is a must if you relay mail
# for other domains.
/[%!@].*[%!@]/       550 Sender-specified routing rejected

# Postmaster is OK, that way they can talk to us about how to fix
# their problem.
/^postmaster@/       OK

# Protect your outgoing majordomo exploders
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif

/^Subject: make money fast/     REJECT
/^To: friend@public\.com/       REJECT
/^(.*)@old\.example$/   $1@new.example
/^([[:alpha:]]+)[[:digit:]]+@num\.example$/   letters=$1
/^CaSe@exact\.example$/i        case-sensitive
/^[^x]+@notx\.example$/  no-x
|^pipe/slash@delim\.example$|   pipe
/^esc\/aped@delim\.example$/    escaped-slash
/^price@dollar\.example$/       costs $$5
if /@nested\.example$/
if /^a/
/^(a)(b)?/   in-both $1-$2-
endif
/./   outer-only
endif
!/@/    no-at-sign
/^long@cont\.example$/  first part
  second part
/^tab[[:space:]]@space\.example$/   class-space
/^w\<x@word\.example$/  word-start
/^(one|two)+@alt\.example$/  alt-$1
/^b[\d]@bracket\.example$/  bracket-backslash
/^q{2,3}@interval\.example$/  interval
"""

REGEXP_KEYS = [
    "a%b@c",
    "user@relay!host@x",
    "postmaster@example.com",
    "POSTMASTER@example.com",
    "list-outgoing@example.com",
    "owner-list-outgoing@example.com",
    "Subject: make money fast now",
    "subject: MAKE MONEY FAST",
    "To: friend@public.com",
    "To: friend@publicXcom",
    "joe@old.example",
    "Joe.Smith@OLD.example",
    "abc123@num.example",
    "123@num.example",
    "CaSe@exact.example",
    "case@exact.example",
    "abc@notx.example",
    "axc@notx.example",
    "pipe/slash@delim.example",
    "esc/aped@delim.example",
    "price@dollar.example",
    "abz@nested.example",
    "a@nested.example",
    "zz@nested.example",
    "no-at-sign-here",
    "long@cont.example",
    "tab @space.example",
    "w x@word.example",
    "onetwoone@alt.example",
    "b\\@bracket.example",
    "bd@bracket.example",
    "b5@bracket.example",
    "qq@interval.example",
    "qqqq@interval.example",
    "nothing@matches.example",
]

# pcre_table(5) EXAMPLES, and PCRE syntax Python's re shares or that we translate.
PCRE_TABLE = r"""# Protect your outgoing majordomo exploders
/^(?!owner-)(.*)-outgoing@(.*)/ 550 Use ${1}@${2} instead

# Bounce friend@whatever, except when whatever is our domain (you would
# be better just bouncing all friend@ mail - this is just an example).
/^(friend@(?!my\.domain$).*)$/  550 Stick this in your pipe $1

# A multi-line entry. The text is sent as one line.
#
/^noddy@my\.domain$/
 550 This user is a funny one. You really don't want to send mail to
 them as it only makes their head spin.

/^Subject: .*\bviagra\b/         REJECT spam
/^X-Mailer: Microsoft Outlook Express 5\.0\d/  WARN old mailer
/^(?<user>[a-z]+)\.(?<tag>[a-z]+)@named\.example$/  $2-$1
/^[[:upper:]]+@posix\.example$/i   upper
/^(?>a+)b@atomic\.example$/   atomic
/^x++y@possessive\.example$/   possessive
/^caseful@flag\.example$/i   caseful
/^dot.all@flag\.example$/s   dotall
/^ spaced @ flag\.example $/x   extended
/^\d{3}-\d{4}@digits\.example$/   digits
"""

PCRE_KEYS = [
    "list-outgoing@example.com",
    "owner-list-outgoing@example.com",
    "friend@evil.example",
    "friend@my.domain",
    "noddy@my.domain",
    "Subject: buy viagra now",
    "Subject: viagrafalls",
    "X-Mailer: Microsoft Outlook Express 5.01",
    "john.doe@named.example",
    "ABC@posix.example",
    "abc@posix.example",
    "aaab@atomic.example",
    "xxy@possessive.example",
    "caseful@flag.example",
    "CASEFUL@flag.example",
    "dotxall@flag.example",
    "spaced@flag.example",
    "555-1234@digits.example",
    "55-1234@digits.example",
    "unmatched@nowhere.example",
]


def _postmap_all(tmp_path: Path, kind: str, table: Path, keys: list[str]) -> dict[str, str]:
    """``postmap -q - TYPE:FILE`` over ``keys``: key -> value for the keys Postfix finds."""
    assert POSTMAP is not None
    config = tmp_path / "postfix"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("")  # postmap needs one; empty means Postfix's defaults
    found: dict[str, str] = {}
    for key in keys:
        done = subprocess.run(
            [POSTMAP, "-c", str(config), "-q", key, f"{kind}:{table}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode in (0, 1), done.stderr
        assert "warning" not in done.stderr, done.stderr  # the table is valid for Postfix
        if done.returncode == 0:
            found[key] = done.stdout.removesuffix("\n")
    return found


def _postfix_knows(kind: str, tmp_path: Path) -> bool:
    """Does this Postfix have the table type (``postconf -m``; pcre is postfix-pcre)?"""
    if POSTMAP is None or shutil.which("postconf") is None:
        return False
    config = tmp_path / "postconf"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("")
    done = subprocess.run(
        ["postconf", "-c", str(config), "-m"], capture_output=True, text=True, check=False
    )
    return kind in done.stdout.split()


@pytest.mark.parametrize(
    ("kind", "text", "keys"),
    [("regexp", REGEXP_TABLE, REGEXP_KEYS), ("pcre", PCRE_TABLE, PCRE_KEYS)],
    ids=["regexp", "pcre"],
)
def test_same_answers_as_postmap(kind: str, text: str, keys: list[str], tmp_path: Path) -> None:
    if not _postfix_knows(kind, tmp_path):
        pytest.skip(
            f"postmap with {kind} support not installed (Debian: postfix"
            f"{', postfix-pcre' if kind == 'pcre' else ''})"
        )
    path = tmp_path / f"table.{kind}"
    path.write_text(text)
    oracle = _postmap_all(tmp_path, kind, path, keys)
    table = open_table(f"{kind}:{path}", kind="map")
    ours = {key: value for key in keys if (value := table.get(key)) is not None}
    assert ours == oracle
    assert len(oracle) >= len(keys) // 2  # the keys exercise the rules, not just misses


def test_first_match_wins_and_substitution() -> None:
    table = parse_regexp_table("/^(.*)@a\\.example$/ first-$1\n/^joe@/ second\n", "t", "regexp")
    assert table.get("joe@a.example") == "first-joe"
    assert table.get("joe@b.example") == "second"
    assert table.get("ann@b.example") is None


def test_header_with_folding_matches_across_lines() -> None:
    # header_checks(5): a multi-line header is one string with its newlines.
    # POSIX: "." matches a newline (no REG_NEWLINE), so ".*" crosses the fold.
    table = parse_regexp_table("/^Subject: make.*money/ REJECT\n", "t", "regexp")
    assert table.get("Subject: make\n\tmoney fast") == "REJECT"
    multi = parse_regexp_table("/^Subject: make.*money/m REJECT\n", "t", "regexp")
    assert multi.get("Subject: make\n\tmoney fast") is None
    pcre = parse_regexp_table("/^Subject:.*\\n.*money/ REJECT\n", "t", "pcre")
    assert pcre.get("Subject: make\n\tmoney fast") == "REJECT"


def test_regexp_dollar_is_end_of_string_only() -> None:
    table = parse_regexp_table("/^x$/ end\n/^y$/m multi\n", "t", "regexp")
    assert table.get("x\n") is None  # POSIX: $ only at the very end
    assert table.get("x") == "end"
    assert table.get("y\nz") == "multi"


def test_whole_key_only_in_the_address_search_order(tmp_path: Path) -> None:
    # virtual(5) REGULAR EXPRESSION TABLES: the pattern sees the whole address; Postfix
    # does not ask it "user@domain" without the extension nor "@domain".
    regexp = tmp_path / "virtual.regexp"
    regexp.write_text("/^joe@example\\.com$/ joe-found\n/^@example\\.com$/ at-domain\n")
    text = tmp_path / "virtual"
    text.write_text("@other.example catchall\n")
    maps: TableSet[str] = open_table_set([f"regexp:{regexp}", f"hash:{text}"], kind="map")
    assert lookup_address(maps, "joe@example.com") == "joe-found"
    assert lookup_address(maps, "joe+ext@example.com") is None
    assert lookup_address(maps, "ann@example.com") is None
    assert lookup_address(maps, "ann@other.example") == "catchall"


@pytest.mark.parametrize(
    ("kind", "line", "says"),
    [
        ("regexp", "/abc/ $1", "no (...) group"),
        ("regexp", "/(a)/ $2", "names no group"),
        ("regexp", "/(a)/ $1y", "non-numeric replacement index"),
        ("regexp", "/a/ costs $ 5", "no group number"),
        ("regexp", "!/(a)/ $1", "negated pattern"),
        ("regexp", "/abc", "no closing '/'"),
        ("regexp", "/abc/", "without a result"),
        ("regexp", "/abc/q x", "unknown regexp flag 'q'"),
        ("regexp", "/abc/x x", "POSIX basic syntax"),
        ("regexp", "/a\\d/ x", "\\d has no meaning"),
        ("regexp", "/(?:a)/ x", "PCRE syntax"),
        ("regexp", "/[[:nope:]]/ x", "unknown character class"),
        ("regexp", "/a(/ x", "does not compile"),
        ("regexp", "if /a/\n/b/ x", "if without endif"),
        ("regexp", "endif", "endif without a matching if"),
        ("regexp", "if /a/ x\nendif", "text after 'if /pattern/'"),
        ("pcre", "/a\\Kb/ x", "\\K"),
        ("pcre", "/(a(?R)?b)/ x", "recursion"),
        ("pcre", "/\\p{L}/ x", "Unicode properties"),
        ("pcre", "/a/U x", "pcre flag 'U' is not supported"),
        ("pcre", "/(*UTF8)a/ x", "verb"),
        ("pcre", "/(?<=a|bc)d/ x", "does not compile"),
    ],
)
def test_refused_with_the_line(kind: PatternKind, line: str, says: str) -> None:
    with pytest.raises(TableError) as caught:
        parse_regexp_table("# a comment\n" + line + "\n", "the.table", kind)
    assert str(caught.value).startswith("the.table:2: ")
    assert says in str(caught.value)


def test_aliases_cannot_be_a_pattern_table(tmp_path: Path) -> None:
    path = tmp_path / "aliases"
    path.write_text("/a/ b\n")
    with pytest.raises(TableError, match="aliases file is a text table"):
        open_table(f"regexp:{path}", kind="aliases")


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), kind=st.sampled_from(["regexp", "pcre"]))
@example(text="/(/ x", kind="regexp")
@example(text="/[/ x", kind="pcre")
@example(text="/a{99999999999}/ x", kind="pcre")
@example(text="/" + "(" * 200 + "a" + ")" * 200 + "/ x", kind="pcre")
@example(text="/a/ ${", kind="regexp")
@example(text="/\\/ x", kind="regexp")
@example(text="if\nendif", kind="regexp")
@example(text="/[[:/ x", kind="regexp")
@example(text="/\udcff/ x", kind="regexp")
def test_parser_raises_only_table_error(text: str, kind: PatternKind) -> None:
    try:
        table = parse_regexp_table(text, "fuzz", kind)
    except TableError:
        return
    for key in ("", "a", "postmaster@example.com", "Subject: x\n\ty"):
        table.get(key)
