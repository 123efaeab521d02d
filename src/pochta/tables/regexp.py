"""Postfix ``regexp:`` and ``pcre:`` tables (regexp_table(5), pcre_table(5)).

Format, per logical line (:mod:`pochta.tables.source`: comments, continuation lines):

- ``/pattern/flags result``: the first rule whose pattern matches the lookup key gives
  ``result``; the delimiter is the first character (``/`` by custom, any other works:
  ``|pat|``), a backslash escapes it inside the pattern;
- ``!/pattern/flags result``: the rule applies when the pattern does NOT match (each ``!``
  toggles); such a result may not use ``$N``;
- ``if /pattern/flags`` ... ``endif``: the rules in between are tried only when the pattern
  matches (``if !/pattern/``: only when it does not); blocks nest;
- ``$1`` .. ``$9`` (or ``${1}``, ``$(1)``) in the result are the pattern's groups (an
  unmatched group is empty), ``$$`` is one ``$``. Anything else after ``$`` is an error,
  as in Postfix (``$1y``: "non-numeric replacement index"; a lone ``$``: "empty macro name").

Flags toggle: ``i`` case-insensitive (on by default, both types); regexp: ``m`` multi-line
(POSIX ``REG_NEWLINE``: ``^``/``$`` at newlines, ``.`` and ``[^...]`` no newline), ``x``
(extended syntax, on by default; off means POSIX basic syntax, which we refuse); pcre:
``m`` multi-line, ``s`` dot-all, ``x`` extended (comments/space), ``A`` anchored, ``X``
(PCRE_EXTRA: unknown escapes are errors, which Python's ``re`` does anyway). pcre's ``E``
(dollar end-only) and ``U`` (ungreedy) are refused.

A table is asked with the whole key only (regexp_table(5) "each pattern is applied to the
entire string being looked up": ``user@domain`` is not split into ``user`` and ``@domain``,
``user+foo`` not into ``user``): :meth:`RegexpTable.get_fixed` answers None, and the address
search order (``postfix_text.match_address``) asks a table's partial keys through it, as
Postfix's maps_find(3) with ``DICT_FLAG_FIXED`` skips pattern tables.

Deviation from Postfix: Postfix warns and skips a rule it cannot compile (bad regex, unknown
flag, bad ``$`` text, a missing ``endif``); we refuse the table with ``FILE:LINE`` and what
to write, because a skipped content-check rule lets mail through unseen.

How the patterns run on Python's ``re`` (3.11):

*regexp (POSIX extended regular expressions, re_format(7))* is translated: ``[[:alpha:]]``
and the other POSIX classes become Python sets; inside ``[...]`` a backslash is an ordinary
character, as POSIX says (``[\\d]`` is ``\\`` or ``d``); ``$`` matches only at the very end
(Python's ``$`` also matches before a final newline); ``.`` matches a newline unless ``m``;
GNU's ``\\<``, ``\\>``, ``\\```, ``\\'``, ``\\w``, ``\\W``, ``\\s``, ``\\S``, ``\\b``, ``\\B``
and back-references keep their meaning. Refused with the line named: ``\\d``, ``\\n`` and
other letter escapes that glibc does not know, ``(?`` (PCRE syntax: use ``pcre:``),
collating elements ``[.x.]`` and equivalence classes ``[=x=]``. One difference remains:
POSIX picks the leftmost-*longest* match, Python the leftmost match the alternatives give
first, so ``/(a|ab)(c|bcd)/`` on ``abcd`` gives ``$1`` = ``a`` in Python and ``ab`` in
Postfix; whether a key matches never differs, only which text a group holds.

*pcre (PCRE 1/2 syntax)* runs as Python syntax, which has most of it (3.11 added atomic
groups ``(?>...)`` and possessive quantifiers ``*+ ++ ?+``). Translated: POSIX classes,
``(?<name>...)`` to ``(?P<name>...)``, ``\\k<name>``/``\\k{name}`` to ``(?P=name)``, PCRE's
``\\Z`` (end or before a final newline) and ``\\z`` (very end). Refused, naming the line:
``\\K``, ``\\Q...\\E``, ``\\p{..}``/``\\P{..}``, ``\\X``, ``\\R``, ``\\h``/``\\H``,
``\\v``/``\\V``, ``\\G``, ``\\g``, ``\\x{..}``, ``\\e``, ``\\c``, recursion and subroutine
calls (``(?R)``, ``(?1)``, ``(?&name)``, ``(?P>name)``), verbs ``(*...)``, inline flags
after the start (Python wants them first), ``(?|`` branch reset, callouts ``(?C``; lookbehind
must have one fixed width in Python (PCRE allows alternatives of different fixed widths).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pochta.tables.source import WHITESPACE, TableError, logical_lines, read_source

__all__ = ["PatternKind", "RegexpRule", "RegexpTable", "load_regexp_table", "parse_regexp_table"]

PatternKind = Literal["regexp", "pcre"]

MAX_GROUP = 9
"""Highest ``$N`` a result may name (Postfix: ``$1`` .. ``$9``)."""

_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
    "print": r" -~",
    "graph": r"!-~",
    "cntrl": r"\x00-\x1f\x7f",
    "xdigit": "0-9A-Fa-f",
    "word": "a-zA-Z0-9_",  # PCRE and glibc both know [:word:]
}

# GNU regex escapes outside brackets that keep a meaning in Python (re_format(7), glibc).
_REGEXP_ESCAPES = {
    "<": r"\b(?=\w)",
    ">": r"\b(?<=\w)",
    "`": r"\A",
    "'": r"\Z",
    "w": r"\w",
    "W": r"\W",
    "s": r"\s",
    "S": r"\S",
    "b": r"\b",
    "B": r"\B",
}

# PCRE escapes Python's re does not have, with what to write instead.
_PCRE_ONLY_ESCAPES = {
    "K": "\\K (keep out) has no Python equivalent; use a lookbehind (?<=...)",
    "Q": "\\Q...\\E quoting; escape each special character with a backslash",
    "E": "\\Q...\\E quoting; escape each special character with a backslash",
    "p": "\\p{..} Unicode properties; use a character set such as [a-z]",
    "P": "\\P{..} Unicode properties; use a negated set such as [^a-z]",
    "X": "\\X (extended grapheme); use . or a set",
    "R": "\\R (any newline); use (?:\\r\\n|\\n|\\r)",
    "h": "\\h (horizontal space); use [ \\t]",
    "H": "\\H; use [^ \\t]",
    "v": "\\v (vertical space); use [\\n\\x0b\\f\\r]",
    "V": "\\V; use [^\\n\\x0b\\f\\r]",
    "G": "\\G (start of match); anchor with ^ or the A flag",
    "g": "\\g back-references; use \\1 or (?P=name)",
    "e": "\\e; use \\x1b",
    "c": "\\cX control characters; use \\xHH",
    "C": "\\C (one code unit); use .",
    "N": "\\N (not a newline); use [^\\n]",
    "o": "\\o{..} octal; use \\xHH",
}

_PCRE_ONLY_GROUPS = (
    ("(?R)", "recursion (?R)"),
    ("(?&", "subroutine call (?&name)"),
    ("(?P>", "subroutine call (?P>name)"),
    ("(?|", "branch reset (?|...)"),
    ("(?C", "callout (?C...)"),
    ("(?+", "relative subroutine call (?+N)"),
    ("(?-", "relative subroutine call (?-N)"),
    ("(*", "verb (*...)"),
)


@dataclass(frozen=True, slots=True)
class RegexpRule:
    """One line of a table: a rule (``result`` set), an ``if`` (``block_end`` set: the
    index after its ``endif``) or an ``endif`` (neither)."""

    lineno: int
    pattern: re.Pattern[str] | None
    negated: bool = False
    result: str | None = None
    block_end: int | None = None


@dataclass(frozen=True, slots=True)
class RegexpTable:
    """A parsed regexp:/pcre: table; :meth:`get` is ``postmap -q KEY TYPE:PATH``."""

    path: str
    kind: PatternKind
    rules: tuple[RegexpRule, ...]
    warnings: tuple[str, ...] = ()

    pattern = True
    """A pattern table: asked with the whole key only (see the module docstring)."""

    def get(self, key: str, /) -> str | None:
        """The result of the first rule that matches ``key``, ``$N`` filled in, or None."""
        found = self.match(key)
        return None if found is None else found[1]

    def get_fixed(self, key: str, /) -> None:
        """A partial key (``user@domain`` without its extension, ``@domain``): never asked
        of a pattern table (regexp_table(5), maps_find(3) ``DICT_FLAG_FIXED``)."""
        del key
        return None

    def __len__(self) -> int:
        """The number of rules with a result (``pochta table check`` counts them)."""
        return sum(1 for rule in self.rules if rule.result is not None)

    def match(self, key: str) -> tuple[int, str] | None:
        """The line number and result of the first rule that matches ``key``."""
        index = 0
        rules = self.rules
        while index < len(rules):
            rule = rules[index]
            index += 1
            if rule.pattern is None:  # endif
                continue
            found = rule.pattern.search(key)
            applies = (found is None) if rule.negated else (found is not None)
            if rule.block_end is not None:  # if /pattern/
                if not applies:
                    index = rule.block_end
                continue
            if applies and rule.result is not None:
                return rule.lineno, _expand(rule.result, found)
        return None


def load_regexp_table(path: str | os.PathLike[str], kind: PatternKind) -> RegexpTable:
    """Read and parse the regexp:/pcre: table at ``path``."""
    name = os.fspath(path)
    return parse_regexp_table(read_source(name), name, kind)


def parse_regexp_table(text: str | bytes, source: str, kind: PatternKind) -> RegexpTable:
    """Parse regexp_table(5) / pcre_table(5) text; raises TableError naming the line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="surrogateescape")
    found: list[str] = []
    rules: list[RegexpRule] = []
    open_ifs: list[int] = []  # indexes of the ifs not yet closed
    for line in logical_lines(text, source, found):
        where = f"{source}:{line.lineno}"
        word = _first_word(line.text)
        if word.lower() == "endif":
            # regexp_table(5): "endif" closes the innermost "if".
            if not open_ifs:
                raise TableError(f"{where}: endif without a matching if; remove it")
            if line.text[len(word) :].strip(WHITESPACE):
                raise TableError(f"{where}: text after endif; put it on a line of its own")
            start = open_ifs.pop()
            rules.append(RegexpRule(line.lineno, None))
            opener = rules[start]
            rules[start] = RegexpRule(
                opener.lineno, opener.pattern, opener.negated, None, block_end=len(rules)
            )
            continue
        if word.lower() == "if":
            rest = line.text[len(word) :]
            pattern, negated, tail = _pattern(rest, where, kind)
            if tail:
                raise TableError(
                    f"{where}: text after 'if /pattern/'; write the rules on the lines "
                    "between the if and its endif"
                )
            open_ifs.append(len(rules))
            rules.append(RegexpRule(line.lineno, pattern, negated, None, block_end=-1))
            continue
        pattern, negated, result = _pattern(line.text, where, kind)
        if not result:
            raise TableError(f"{where}: pattern without a result; write '/pattern/ result'")
        _check_result(result, pattern, negated, where)
        rules.append(RegexpRule(line.lineno, pattern, negated, result))
    if open_ifs:
        lineno = rules[open_ifs[-1]].lineno
        raise TableError(f"{source}:{lineno}: if without endif; add 'endif' after its rules")
    return RegexpTable(source, kind, tuple(rules), tuple(found))


def _first_word(text: str) -> str:
    for index, char in enumerate(text):
        if char in WHITESPACE or char in "/!":
            return text[:index] if index and text[:index].isalpha() else ""
    return text if text.isalpha() else ""


def _pattern(text: str, where: str, kind: PatternKind) -> tuple[re.Pattern[str], bool, str]:
    """``[!...]DELIM pattern DELIM flags`` at the start of ``text`` (leading whitespace
    allowed): the compiled pattern, whether it is negated, and the trimmed rest."""
    index, negated = 0, False
    # dict_regexp.c: each "!" toggles the negation; whitespace may surround them.
    while index < len(text) and (text[index] == "!" or text[index] in WHITESPACE):
        negated ^= text[index] == "!"
        index += 1
    if index >= len(text):
        raise TableError(f"{where}: no pattern; write '/pattern/ result'")
    delimiter = text[index]
    if delimiter.isalnum() or delimiter == "\\":
        raise TableError(
            f"{where}: a pattern starts with a delimiter such as '/', not {delimiter!r}; "
            "write '/pattern/ result'"
        )
    index += 1
    start = index
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            index += 2
            continue
        if text[index] == delimiter:
            break
        index += 1
    else:
        raise TableError(
            f"{where}: no closing {delimiter!r} after the pattern; write "
            f"'{delimiter}pattern{delimiter} result' (escape a {delimiter!r} inside as "
            f"'\\{delimiter}')"
        )
    body = text[start:index]
    index += 1
    flag_end = index
    while flag_end < len(text) and text[flag_end] not in WHITESPACE:
        flag_end += 1
    flags = text[index:flag_end]
    compiled = _compile(body, flags, where, kind)
    return compiled, negated, text[flag_end:].strip(WHITESPACE)


def _compile(body: str, flags: str, where: str, kind: PatternKind) -> re.Pattern[str]:
    options = {"i"}  # case-insensitive by default, in both types
    allowed = "imx" if kind == "regexp" else "imsxAX"
    if kind == "regexp":
        options.add("x")  # REG_EXTENDED by default
    for flag in flags:
        if flag not in allowed:
            if kind == "pcre" and flag in "EU":
                hint = "E (dollar end-only): use \\z; U (ungreedy): write *? and +?"
                raise TableError(f"{where}: pcre flag {flag!r} is not supported; {hint}")
            raise TableError(
                f"{where}: unknown {kind} flag {flag!r}; the flags are "
                f"{', '.join(allowed)} ({kind}_table(5))"
            )
        options ^= {flag}
    if kind == "regexp":
        if "x" not in options:
            raise TableError(
                f"{where}: the x flag turns on POSIX basic syntax, which pochta does not "
                "support; drop the x and write the pattern in extended syntax"
            )
        translated = _translate_ere(body, multiline="m" in options, where=where)
        py_flags: int = re.MULTILINE if "m" in options else re.DOTALL
    else:
        translated = _translate_pcre(body, where=where)
        py_flags = 0
        py_flags |= re.MULTILINE if "m" in options else 0
        py_flags |= re.DOTALL if "s" in options else 0
        py_flags |= re.VERBOSE if "x" in options else 0
        if "A" in options:
            translated = rf"\A(?:{translated})"
    if "i" in options:
        py_flags |= re.IGNORECASE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            compiled = re.compile(translated, py_flags)
    except (re.error, OverflowError, RecursionError, ValueError, Warning) as exc:
        raise TableError(
            f"{where}: the pattern does not compile: {exc}; fix it "
            f"({'POSIX extended syntax, re_format(7)' if kind == 'regexp' else 'PCRE syntax'})"
        ) from None
    if compiled.groups > 99:
        raise TableError(f"{where}: more than 99 groups; use (?:...) for grouping only")
    return compiled


def _bracket(body: str, index: int, where: str, *, pcre: bool) -> tuple[str, int]:
    """Translate the ``[...]`` set that starts at ``body[index]``; returns the Python set
    and the index after it."""
    out = ["["]
    index += 1
    if index < len(body) and body[index] == "^":
        out.append("^")
        index += 1
    first = True
    while index < len(body):
        char = body[index]
        if char == "]" and not first:
            out.append("]")
            return "".join(out), index + 1
        first = False
        if char == "[" and body[index + 1 : index + 2] in (":", ".", "="):
            close = body.find(body[index + 1] + "]", index + 2)
            if close < 0:
                raise TableError(f"{where}: unterminated {body[index : index + 2]!r} in a set")
            name = body[index + 2 : close]
            if body[index + 1] != ":":
                raise TableError(
                    f"{where}: collating elements and equivalence classes "
                    f"({body[index : close + 2]}) are not supported; list the characters"
                )
            if name not in _POSIX_CLASSES:
                raise TableError(
                    f"{where}: unknown character class [:{name}:]; use one of "
                    f"{', '.join(sorted(_POSIX_CLASSES))}"
                )
            out.append(_POSIX_CLASSES[name])
            index = close + 2
            continue
        if char == "\\":
            if not pcre:
                out.append("\\\\")  # POSIX: a backslash in a set is itself
                index += 1
                continue
            out.append(body[index : index + 2])
            index += 2
            continue
        # Python would read "[" in a set as a nested set (FutureWarning) and "&&", "~~",
        # "||", "--" as set operations; escaped they are the characters POSIX and PCRE mean.
        out.append("\\" + char if char in "[&~|" else char)
        index += 1
    raise TableError(f"{where}: unterminated '[' set; close it with ']'")


def _translate_ere(body: str, *, multiline: bool, where: str) -> str:
    """POSIX extended syntax (with GNU escapes) to Python syntax; see the module docstring."""
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body):
                raise TableError(f"{where}: the pattern ends with a backslash; remove it")
            escaped = body[index + 1]
            if escaped in _REGEXP_ESCAPES:
                out.append(_REGEXP_ESCAPES[escaped])
            elif escaped.isdigit() and escaped != "0":
                out.append("\\" + escaped)  # back-reference
            elif escaped.isalnum() or escaped == "_" or not escaped.isascii():
                raise TableError(
                    f"{where}: \\{escaped} has no meaning in POSIX regular expressions "
                    "(regexp_table(5)); write [0-9] for \\d, or use a pcre: table"
                )
            else:
                out.append("\\" + escaped)
            index += 2
        elif char == "[":
            text, index = _bracket(body, index, where, pcre=False)
            if multiline and text.startswith("[^"):
                text = text[:-1] + "\\n]"  # REG_NEWLINE: a negated set excludes newline
            out.append(text)
        elif char == "$":
            out.append("$" if multiline else r"\Z")
            index += 1
        elif char == "(" and body[index + 1 : index + 2] == "?":
            raise TableError(f"{where}: '(?' is PCRE syntax, not POSIX; use a pcre: table for it")
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _translate_pcre(body: str, *, where: str) -> str:
    """PCRE syntax to Python syntax; refuses what Python cannot do (module docstring)."""
    for token, name in _PCRE_ONLY_GROUPS:
        if token in body:
            raise TableError(f"{where}: PCRE {name} is not supported by Python's re; rewrite it")
    if re.search(r"\(\?[0-9]", body):
        raise TableError(f"{where}: PCRE subroutine call (?N) is not supported; rewrite it")
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body):
                raise TableError(f"{where}: the pattern ends with a backslash; remove it")
            escaped = body[index + 1]
            if escaped in _PCRE_ONLY_ESCAPES:
                raise TableError(f"{where}: PCRE {_PCRE_ONLY_ESCAPES[escaped]}")
            if escaped == "x" and body[index + 2 : index + 3] == "{":
                raise TableError(f"{where}: PCRE \\x{{..}}; write \\xHH or \\uHHHH")
            if escaped == "k" and body[index + 2 : index + 3] in ("<", "{", "'"):
                closer = {"<": ">", "{": "}", "'": "'"}[body[index + 2]]
                end = body.find(closer, index + 3)
                if end < 0:
                    raise TableError(f"{where}: unterminated \\k name; write \\k<name>")
                out.append(f"(?P={body[index + 3 : end]})")
                index = end + 1
                continue
            if escaped == "Z":
                out.append(r"(?=\n?\Z)")  # PCRE \Z: at the end or before a final newline
            elif escaped == "z":
                out.append(r"\Z")  # PCRE \z: the very end (Python's \Z)
            else:
                out.append(body[index : index + 2])
            index += 2
        elif char == "[":
            text, index = _bracket(body, index, where, pcre=True)
            out.append(text)
        elif body.startswith("(?<", index) and body[index + 3 : index + 4] not in ("=", "!"):
            out.append("(?P<")  # PCRE named group (?<name>...)
            index += 3
        elif body.startswith("(?'", index):
            end = body.find("'", index + 3)
            if end < 0:
                raise TableError(f"{where}: unterminated group name; write (?<name>...)")
            out.append(f"(?P<{body[index + 3 : end]}>")
            index = end + 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


# mac_parse(3) as dict_regexp/dict_pcre use it on a result: $N, ${N}, $(N), $$.
_SUBST = re.compile(r"\$(?:\{([^}]*)\}|\(([^)]*)\)|([A-Za-z0-9_]+)|(\$)|)")


def _substitutions(result: str) -> Iterator[re.Match[str]]:
    return _SUBST.finditer(result)


def _check_result(result: str, pattern: re.Pattern[str], negated: bool, where: str) -> None:
    for found in _substitutions(result):
        if found.group(4):
            continue  # $$
        name = found.group(1) if found.group(1) is not None else found.group(2)
        name = name if name is not None else found.group(3)
        if name is None:
            raise TableError(
                f"{where}: a '$' with no group number in the result; write $1..$9 or $$ "
                "for a dollar sign"
            )
        if not name.isdigit():
            raise TableError(
                f"{where}: non-numeric replacement index {name!r} in the result; write "
                "$1..$9 (or ${1} before letters or digits) or $$ for a dollar sign"
            )
        if negated:
            raise TableError(
                f"{where}: ${name} in the result of a negated pattern (!/.../), which "
                "captures nothing; write the text without it"
            )
        number = int(name)
        if number < 1 or number > min(pattern.groups, MAX_GROUP):
            raise TableError(
                f"{where}: ${name} names no group of the pattern (it has "
                f"{pattern.groups}); use $1..${min(pattern.groups, MAX_GROUP)}"
                if pattern.groups
                else f"{where}: ${name} but the pattern has no (...) group; add one"
            )


def _expand(result: str, found: re.Match[str] | None) -> str:
    if "$" not in result:
        return result

    def value(sub: re.Match[str]) -> str:
        if sub.group(4):
            return "$"
        name = sub.group(1) or sub.group(2) or sub.group(3) or "0"
        if found is None:
            return ""
        return found.group(int(name)) or ""

    return _SUBST.sub(value, result)


def iter_results(table: RegexpTable) -> Iterator[tuple[int, str]]:
    """Every rule's line number and unexpanded result (for checks of the actions)."""
    for rule in table.rules:
        if rule.result is not None:
            yield rule.lineno, rule.result
