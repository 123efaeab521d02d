"""Domain lists (tables/domain_list.py) read as Postfix reads relay_domains, mydestination and
virtual_mailbox_domains; ``postmap -q`` on the same file is the oracle for the table keys."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pochta.tables import TableError
from pochta.tables.domain_list import DomainList

# As Postfix's guides write a relay_domains table (postmap(1) source: "key value").
RELAY_TABLE = """\
# /etc/postfix/relay_domains
relay.example      OK
Backup.Example     OK
.dotted.example    OK
"""

POSTMAP = shutil.which("postmap")


def postmap_has(config_dir: Path, table: str, key: str) -> bool:
    """``postmap -q KEY hash:FILE``: exit 0 found, 1 not found."""
    assert POSTMAP is not None
    proc = subprocess.run(
        [POSTMAP, "-c", str(config_dir), "-q", key, table],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def postfix_parent_keys(name: str) -> list[str]:
    """match_ops.c match_hostname with MATCH_FLAG_PARENT (relay_domains in Postfix 3.7's
    default parent_domain_matches_subdomains): the name, then each parent without a dot."""
    keys = [name]
    while "." in name[1:]:
        name = name[name.index(".", 1) + 1 :]
        keys.append(name)
    return keys


@pytest.mark.skipif(POSTMAP is None, reason="postmap (Postfix) is not installed")
@pytest.mark.parametrize(
    "domain",
    [
        "relay.example",
        "RELAY.example",
        "a.b.relay.example",
        "backup.example",
        "x.backup.example",
        "dotted.example",
        "x.dotted.example",
        "other.example",
        "example",
        "notrelay.example",
    ],
)
def test_relay_domains_hash_table_answers_as_postfix(tmp_path: Path, domain: str) -> None:
    source = tmp_path / "relay_domains"
    source.write_text(RELAY_TABLE)
    config = tmp_path / "postfix"
    config.mkdir()
    (config / "main.cf").write_text("")
    subprocess.run([POSTMAP, "-c", str(config), str(source)], check=True, timeout=30)
    spec = f"hash:{source}"
    expected = any(postmap_has(config, spec, key) for key in postfix_parent_keys(domain.lower()))
    assert DomainList([spec], parent_style=True).contains(domain) is expected
    # The other indexed types read the same text source.
    for kind in ("lmdb", "cdb", "btree", "texthash"):
        assert DomainList([f"{kind}:{source}"], parent_style=True).contains(domain) is expected


def test_exact_lists_ask_tables_for_the_whole_name_only(tmp_path: Path) -> None:
    # string_list(3), match_string: virtual_mailbox_domains and mydestination.
    source = tmp_path / "vdomains"
    source.write_text("vm.example OK\n")
    listed = DomainList([f"hash:{source}"], parent_style=False)
    assert listed.contains("VM.example")
    assert not listed.contains("sub.vm.example")


def test_literal_names_parents_negation_and_commas() -> None:
    # The first pattern that matches decides, so an exclusion goes before the name.
    relay = DomainList(["!no.relay.example, relay.example", "other.example"], parent_style=True)
    assert relay.contains("relay.example")
    assert relay.contains("a.relay.example")  # parent style: subdomains too
    assert not relay.contains("no.relay.example")
    assert not relay.contains("x.no.relay.example")
    assert relay.contains("other.example.")
    late = DomainList(["relay.example", "!no.relay.example"], parent_style=True)
    assert late.contains("no.relay.example")  # as in Postfix: relay.example matched first
    assert not relay.contains("relay.example.net")
    exact = DomainList(["vm.example", ".sub.example", "bücher.example"], parent_style=False)
    assert exact.contains("vm.example")
    assert not exact.contains("a.vm.example")
    assert exact.contains("a.sub.example")  # pochta's ".parent" (module docstring)
    assert not exact.contains("sub.example")
    assert exact.contains("xn--bcher-kva.example")


def test_file_of_names_is_read_in_place(tmp_path: Path) -> None:
    # postconf(5): a "/file/name" pattern is replaced by its contents; "!" negates them all.
    names = tmp_path / "relay_domains"
    names.write_text("# relayed\nrelay.example\n  second.example, third.example\n")
    excluded = tmp_path / "excluded"
    excluded.write_text("no.relay.example\n")
    relay = DomainList([f"!{excluded}", str(names)], parent_style=True)
    assert relay.contains("relay.example")
    assert relay.contains("second.example")
    assert relay.contains("third.example")
    assert not relay.contains("no.relay.example")
    assert set(relay.listed_names()) == {"relay.example", "second.example", "third.example"}


def test_unreadable_and_unknown_patterns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="cannot read"):
        DomainList([str(tmp_path / "missing")], parent_style=True)
    with pytest.raises(TableError, match="unsupported table type 'foo'"):
        DomainList(["foo:/etc/x"], parent_style=True)
    with pytest.raises(TableError, match="no pattern after '!'"):
        DomainList(["!"], parent_style=True, setting="tables.relay_domains[0]")
    names_only = tmp_path / "names"
    names_only.write_text("relay.example\n")
    with pytest.raises(TableError, match="has no value"):
        DomainList([f"hash:{names_only}"], parent_style=True)


def test_local_domains_keep_their_literal_names_when_a_table_cannot_be_read(
    tmp_path: Path,
) -> None:
    from pochta.tables.domain_list import local_domains

    table = tmp_path / "local"
    table.write_text("lan.example OK\n")
    readable = local_domains(["Office.Example.", f"hash:{table}"])
    assert "lan.example" in readable
    assert "office.example" in readable
    broken = local_domains(["Office.Example.", f"hash:{tmp_path / 'missing'}"])
    assert broken == frozenset({"office.example"})
