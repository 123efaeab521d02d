"""`pochta init` and `pochta check`, run as a new user would."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, run_pochta


def test_init_writes_everything(pochta_env: PochtaEnv) -> None:
    data = pochta_env.data_dir
    cfg = tomllib.loads(pochta_env.config_path.read_text())
    assert cfg["server"]["hostname"] == HOSTNAME
    assert cfg["server"]["data_dir"] == str(data)
    base = pochta_env.port_base
    assert cfg["listen"]["smtp"] == f"127.0.0.1:{25 + base}"
    assert cfg["listen"]["managesieve"] == f"127.0.0.1:{base + 190}"  # 4190: on
    assert (data / "tls" / "cert.pem").is_file()
    key_mode = stat.S_IMODE((data / "tls" / "key.pem").stat().st_mode)
    assert key_mode & 0o077 == 0
    assert (data / "directory.sqlite3").is_file()
    keys = sorted(p.name for p in (data / "dkim" / DOMAIN).iterdir())
    assert len(keys) == 2
    shown = pochta_env.run("dkim", "show", DOMAIN, check=True).stdout
    assert "rsa-sha256" in shown
    assert "ed25519-sha256" in shown
    assert pochta_env.run("domain", "list", check=True).stdout.startswith(DOMAIN)


def test_port_base_gives_standard_ports_plus_n(tmp_path: Path) -> None:
    proc = run_pochta(
        "init",
        "--data",
        str(tmp_path / "d"),
        "--hostname",
        HOSTNAME,
        "--domain",
        DOMAIN,
        "--port-base",
        "10000",
    )
    assert proc.returncode == 0, proc.stderr
    listen = tomllib.loads((tmp_path / "d" / "pochta.toml").read_text())["listen"]
    assert listen == {
        "smtp": "0.0.0.0:10025",
        "submission": "0.0.0.0:10587",
        "submissions": "0.0.0.0:10465",
        "imap": "0.0.0.0:10143",
        "imaps": "0.0.0.0:10993",
        "pop3": "0.0.0.0:10110",
        "pop3s": "0.0.0.0:10995",
        "managesieve": "0.0.0.0:10190",
        "http": "0.0.0.0:10080",
        "https": "0.0.0.0:10443",
        "lmtp": "unix:lmtp.sock",
    }


def test_port_base_keeps_every_port_in_its_block_of_1000(tmp_path: Path) -> None:
    # Issue 12 point 19: base 20000 -> every listener within 20000..20999 (ManageSieve's
    # 4190 -> 20190), and `pochta check` lists every one.
    data = tmp_path / "d"
    proc = run_pochta(
        "init", "--data", str(data), "--hostname", HOSTNAME, "--domain", DOMAIN,
        "--port-base", "20000", "--bind", "127.0.0.1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    listen = tomllib.loads((data / "pochta.toml").read_text())["listen"]
    ports = {
        name: int(value.rpartition(":")[2])
        for name, value in listen.items()
        if value and not value.startswith("unix:")
    }
    assert len(ports) == 10, listen
    assert all(20000 <= port <= 20999 for port in ports.values()), ports
    assert len(set(ports.values())) == len(ports)
    assert listen["managesieve"] == "127.0.0.1:20190"
    proc = run_pochta("--config", str(data / "pochta.toml"), "check")
    assert proc.returncode == 0, proc.stderr
    assert "listen.managesieve" not in proc.stderr
    served = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  listen.")]
    assert served == [
        "listen.smtp",
        "listen.submission",
        "listen.submissions",
        "listen.imap",
        "listen.imaps",
        "listen.pop3",
        "listen.pop3s",
        "listen.managesieve",
        "listen.http",
        "listen.https",
        "listen.lmtp",
    ]
    assert "  listen.imap         127.0.0.1:20143" in proc.stdout.splitlines()


def test_check_shows_managesieve_served(pochta_env: PochtaEnv) -> None:
    # ManageSieve is served now: `pochta check` lists it and does not warn about it.
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    port = pochta_env.ports["managesieve"]
    assert f"  listen.managesieve  127.0.0.1:{port}" in proc.stdout.splitlines()
    assert "listen.managesieve" not in proc.stderr


def test_init_refuses_existing_config(pochta_env: PochtaEnv) -> None:
    proc = run_pochta(
        "init", "--data", str(pochta_env.data_dir), "--hostname", HOSTNAME, "--domain", DOMAIN
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("exists already; remove it or choose another --data")
    assert proc.stderr.count("\n") == 1


def test_init_bad_names(tmp_path: Path) -> None:
    proc = run_pochta(
        "init", "--data", str(tmp_path), "--hostname", "localhost", "--domain", DOMAIN
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("pochta: error: --hostname: 'localhost' is not a fully qualified")
    proc = run_pochta("init", "--data", str(tmp_path), "--hostname", HOSTNAME, "--domain", "a..b")
    assert proc.returncode == 1
    assert proc.stderr.startswith("pochta: error: --domain: ")
    assert not (tmp_path / "pochta.toml").exists()


def test_check_ok(pochta_env: PochtaEnv) -> None:
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{pochta_env.config_path}: OK")


def test_check_lists_every_problem(pochta_env: PochtaEnv) -> None:
    text = pochta_env.config_path.read_text()
    text = text.replace(
        f'imap = "127.0.0.1:{143 + pochta_env.port_base}"', 'imap = "0.0.0.0:99999"'
    )
    text = text.replace("[auth]", "[auth]\ntarpit = 3")
    pochta_env.config_path.write_text(text)
    proc = pochta_env.run("check")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == f"pochta: error: {pochta_env.config_path} has 2 problems:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "auth.tarpit: unknown key; did you mean 'tarpit_max_seconds'? known keys here: "
        "allow_plaintext_on_loopback, cache_negative_ttl_seconds, cache_size, "
        "cache_ttl_seconds, failure_threshold, failure_window_seconds, tarpit_max_seconds",
        'listen.imap: "0.0.0.0:99999" is not a port; use HOST:PORT with PORT 1-65535',
    ]


def test_config_from_environment(pochta_env: PochtaEnv, tmp_path: Path) -> None:
    proc = run_pochta("check", env={"POCHTA_CONFIG": str(pochta_env.config_path)})
    assert proc.returncode == 0, proc.stderr
    proc = run_pochta("check", env={"POCHTA_CONFIG": str(tmp_path / "none.toml")})
    assert proc.returncode == 1
    assert "not found; create one with: pochta init" in proc.stderr


def test_no_config_anywhere(tmp_path: Path) -> None:
    proc = run_pochta("--config", str(tmp_path / "x.toml"), "domain", "list")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert os.fspath(tmp_path / "x.toml") in proc.stderr


def _set(text: str, table: str, key: str, value: str) -> str:
    """``text`` with ``key = value`` in ``[table]`` (the line init wrote is replaced)."""
    head, sep, rest = text.partition(f"[{table}]\n")
    assert sep, table
    body, nxt, tail = rest.partition("\n[")
    lines = [ln for ln in body.splitlines() if not ln.startswith(f"{key} = ")]
    return head + sep + "\n".join([*lines, f"{key} = {value}"]) + "\n" + nxt + tail


def test_check_reports_numbers_out_of_range(pochta_env: PochtaEnv) -> None:
    # Issue 12, point 11: each with its key path and the allowed range; `pochta check` exits 1.
    text = pochta_env.config_path.read_text()
    for table, key, value in (
        ("server", "processes", "-3"),
        ("smtp", "max_message_bytes", "-1"),
        ("smtp", "idle_timeout_seconds", "-30"),
        ("delivery", "connect_timeout_seconds", "-1.0"),
        ("queue", "minimal_backoff_seconds", "5000"),
        ("queue", "maximal_backoff_seconds", "4000"),
    ):
        text = _set(text, table, key, value)
    pochta_env.config_path.write_text(text)
    proc = pochta_env.run("check")
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == f"pochta: error: {pochta_env.config_path} has 5 problems:"
    assert sorted(line.strip() for line in lines[1:]) == [
        "delivery.connect_timeout_seconds: -1.0 is out of range; use a number more than 0 "
        "and at most 3600",
        "queue.minimal_backoff_seconds: 5000 is more than queue.maximal_backoff_seconds "
        "(4000); make the minimal backoff the smaller one",
        "server.processes: -3 is out of range; use a whole number from 0 to 1024",
        "smtp.idle_timeout_seconds: -30 is out of range; use a whole number from 1 to 86400",
        "smtp.max_message_bytes: -1 is out of range; use a whole number from 1 to 2_147_483_647",
    ]


def test_check_accepts_zero_connections_per_ip(pochta_env: PochtaEnv) -> None:
    # 0 means no limit (Postfix smtpd_client_connection_count_limit), not "lock everyone out".
    text = _set(pochta_env.config_path.read_text(), "smtp", "max_connections_per_ip", "0")
    pochta_env.config_path.write_text(text)
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    text = _set(pochta_env.config_path.read_text(), "smtp", "max_connections_per_ip", "-1")
    pochta_env.config_path.write_text(text)
    proc = pochta_env.run("check")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"pochta: error: {pochta_env.config_path}: smtp.max_connections_per_ip: -1 is out of "
        "range; use a whole number from 0 to 1_000_000"
    )


def test_check_says_where_postmaster_mail_goes(pochta_env: PochtaEnv) -> None:
    # Issue 12 point 3: nowhere yet on a fresh install (a warning), then the first account.
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    assert "  postmaster   -> nowhere yet" in proc.stdout.splitlines()
    assert proc.stderr.startswith("warning: mail for postmaster has nowhere to go")
    assert f"pochta user add you@{DOMAIN}" in proc.stderr
    pochta_env.add_user(f"admin@{DOMAIN}", "correct horse 1")
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    # Only the certificate warnings of a fresh install are left (tests/integration/test_https.py).
    assert "postmaster" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert f"  postmaster   -> admin@{DOMAIN} (the first account of {DOMAIN})" in lines
    assert f"    postmaster@{HOSTNAME} -> admin@{DOMAIN}" in lines
    assert f"    postmaster@{DOMAIN} -> admin@{DOMAIN}" in lines


def test_init_postmaster_option(tmp_path: Path) -> None:
    data = tmp_path / "d"
    proc = run_pochta(
        "init", "--data", str(data), "--hostname", HOSTNAME, "--domain", DOMAIN,
        "--postmaster", "You@Example.ORG", "--no-dkim",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "mail for postmaster goes to you@example.org" in proc.stdout
    config = data / "pochta.toml"
    assert tomllib.loads(config.read_text())["server"]["postmaster"] == "you@example.org"
    proc = run_pochta("--config", str(config), "check")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "  postmaster   -> you@example.org (server.postmaster)" in lines
    assert f"    postmaster@{DOMAIN} -> you@example.org" in lines
    proc = run_pochta(
        "init", "--data", str(tmp_path / "e"), "--hostname", HOSTNAME, "--domain", DOMAIN,
        "--postmaster", "nobody-at-all",
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("pochta: error: --postmaster: ")


def test_check_refuses_a_bad_postmaster_address(pochta_env: PochtaEnv) -> None:
    text = pochta_env.config_path.read_text().replace('postmaster = ""', 'postmaster = "you"')
    pochta_env.config_path.write_text(text)
    proc = pochta_env.run("check")
    assert proc.returncode == 1
    assert f"{pochta_env.config_path}: server.postmaster: " in proc.stderr
    assert 'e.g. "you@example.org"' in proc.stderr
