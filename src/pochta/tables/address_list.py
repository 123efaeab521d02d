"""Address lists in table values (virtual(5), canonical(5) right-hand sides)."""

from __future__ import annotations


def split_addresses(value: str) -> list[str]:
    """The addresses in a table value: separated by commas or whitespace outside double
    quotes (Postfix mail_addr_crunch(3) reads it as an RFC 822 address list); one pair of
    angle brackets around an address is dropped."""
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and (char == "," or char.isspace()):
            if current:
                out.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        out.append("".join(current))
    return [a[1:-1] if a.startswith("<") and a.endswith(">") else a for a in out]
