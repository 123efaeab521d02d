"""`pochta route ADDRESS...`: the class and destinations the server would route to."""

from __future__ import annotations

from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, set_key


def test_route_shows_class_and_destinations(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(f"alice@{DOMAIN}", "correct horse battery")
    pochta_env.run("alias", "add", f"info@{DOMAIN}", f"alice@{DOMAIN}", check=True)
    proc = pochta_env.run("route", f"info@{DOMAIN}", f"alice+news@{DOMAIN}", "someone@example.net")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"info@{DOMAIN}: virtual mailbox class",
        f"  -> mailbox alice@{DOMAIN}",
        f"alice+news@{DOMAIN}: virtual mailbox class",
        f"  -> mailbox alice@{DOMAIN} +news",
        "someone@example.net: default class (sent on for logged-in or local clients only)",
        "  -> someone@example.net via smtp:example.net",
    ]


def test_route_exits_1_for_a_refused_address(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("route", f"nobody@{DOMAIN}", f"root@{HOSTNAME}")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        f"nobody@{DOMAIN}: virtual mailbox class",
        "  -> refused: 550 5.1.1 No such user here",
        f"root@{HOSTNAME}: local class",
        "  -> refused: 550 5.1.1 No such user here",
    ]


def test_route_applies_recipient_canonical_maps_first(pochta_env: PochtaEnv) -> None:
    pochta_env.add_user(f"new@{DOMAIN}", "correct horse battery")
    table = pochta_env.data_dir / "recipient_canonical"
    table.write_text(f"old@{DOMAIN}    new@{DOMAIN}\n")
    set_key(pochta_env.config_path, "tables", "recipient_canonical_maps", f'["hash:{table}"]')
    proc = pochta_env.run("route", f"old@{DOMAIN}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        f"old@{DOMAIN} -> new@{DOMAIN} (canonical): virtual mailbox class",
        f"  -> mailbox new@{DOMAIN}",
    ]
