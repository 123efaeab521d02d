"""The config checker: every problem is reported with its key path and what to write."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import pytest

from pochta.checks import checked_settings_from_dict, load_checked_settings
from pochta.config.load import ConfigError
from pochta.config.sample import render_config
from pochta.config.settings import LISTENER_NAMES, Settings


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        checked_settings_from_dict(data, check_files=False)
    return [str(p) for p in info.value.problems]


BASE: dict[str, Any] = {"server": {"hostname": "mail.example.test"}}


def with_(table: str, **values: Any) -> dict[str, Any]:
    data = {k: dict(v) for k, v in BASE.items()}
    data.setdefault(table, {}).update(values)
    return data


def test_minimal_config_is_valid() -> None:
    s = checked_settings_from_dict(BASE, check_files=False)
    assert s.server.hostname == "mail.example.test"
    assert s.listen.smtp == "0.0.0.0:25"
    assert s.directory.recipient_delimiter == "+"


def test_missing_server_table() -> None:
    assert problems_of({}) == ["server: missing; add a [server] table"]


def test_missing_hostname() -> None:
    assert problems_of({"server": {}}) == ['server.hostname: missing; write hostname = "..."']


def test_unknown_key_suggests_near_name() -> None:
    (p,) = problems_of(with_("listen", imapp="0.0.0.0:143"))
    assert p.startswith("listen.imapp: unknown key; did you mean 'imap'?")


def test_unknown_table() -> None:
    (p,) = problems_of({**BASE, "smtpd": {}})
    assert p.startswith("smtpd: unknown key; did you mean 'smtp'? known keys here: ")
    assert "listen" in p


def test_internal_field_cannot_be_set() -> None:
    (p,) = problems_of({**BASE, "config_path": "/x"})
    assert p.startswith("config_path: unknown key")


def test_wrong_types() -> None:
    data = {
        "server": {"hostname": 7, "log_format": "xml"},
        "auth": {"failure_threshold": "five", "allow_plaintext_on_loopback": "yes"},
        "tables": {"alias_maps": "hash:/etc/aliases", "virtual_alias_maps": [1]},
    }
    assert sorted(problems_of(data)) == sorted(
        [
            "server.hostname: 7 is not a string in quotes",
            'server.log_format: "xml" is not allowed; use one of "json", "logfmt"',
            'auth.failure_threshold: "five" is not a whole number',
            'auth.allow_plaintext_on_loopback: "yes" is not true or false',
            'tables.alias_maps: "hash:/etc/aliases" is not a list; write ["...", ...]',
            "tables.virtual_alias_maps[0]: 1 is not a string in quotes",
        ]
    )


def test_bool_is_not_a_number() -> None:
    assert problems_of(with_("auth", failure_threshold=True)) == [
        "auth.failure_threshold: true is not a whole number"
    ]


def test_table_given_as_value() -> None:
    assert problems_of({**BASE, "listen": "0.0.0.0:25"}) == [
        "listen: must be a table; write [listen] and its keys"
    ]


def test_every_problem_listed_at_once() -> None:
    data = {
        "server": {"hostname": "mail.example.test", "x": 1},
        "listen": {"y": 1},
        "tls": {"z": 1},
    }
    keys = sorted(p.split(":")[0] for p in problems_of(data))
    assert keys == ["listen.y", "server.x", "tls.z"]


def test_bad_port() -> None:
    assert problems_of(with_("listen", imap="0.0.0.0:99999")) == [
        'listen.imap: "0.0.0.0:99999" is not a port; use HOST:PORT with PORT 1-65535'
    ]


def test_duplicate_listener_port() -> None:
    (p,) = problems_of(with_("listen", imap="0.0.0.0:25"))
    assert p == (
        'listen.imap: "0.0.0.0:25" is already used by listen.smtp; give each listener its own port'
    )


def test_listener_switched_off() -> None:
    s = checked_settings_from_dict(with_("listen", pop3="", pop3s=""), check_files=False)
    assert s.listen.pop3 == ""


def test_bad_hostname() -> None:
    (p,) = problems_of(with_("server", hostname="localhost"))
    assert p.startswith("server.hostname: 'localhost' is not a fully qualified domain name")
    assert 'e.g. "mail.example.org"' in p


def test_delivery_settings_are_checked() -> None:
    data = with_(
        "delivery",
        relayhost="[smtp.provider.net",
        relayhost_username="me",
        max_mx_hosts=0,
        bounces_per_minute=-1,
        command_timeout_seconds=0,
    )
    data["dns"] = {"nameservers": ["127.0.0.1:53", "[::1"]}
    problems = problems_of(data)
    keys = sorted(p.split(":")[0] for p in problems)
    assert keys == [
        "delivery.bounces_per_minute",
        "delivery.command_timeout_seconds",
        "delivery.max_mx_hosts",
        "delivery.relayhost",
        "delivery.relayhost_username",
        "dns.nameservers[1]",
    ], problems
    good = with_(
        "delivery",
        relayhost="[smtp.provider.net]:587",
        relayhost_username="me",
        relayhost_password_file="relay.pw",
    )
    assert checked_settings_from_dict(good, check_files=False).delivery.relayhost


def test_semantic_ranges() -> None:
    data = with_("auth", failure_window_seconds=0, failure_threshold=0, tarpit_max_seconds=-1)
    data["directory"] = {"recipient_delimiter": "@", "default_quota_bytes": -5}
    assert sorted(problems_of(data)) == sorted(
        [
            "auth.failure_window_seconds: 0 is out of range; use a whole number from 1 to 86400",
            "auth.failure_threshold: 0 is out of range; use a whole number from 1 to 10000",
            "auth.tarpit_max_seconds: -1 is out of range; use a number from 0 to 300",
            'directory.recipient_delimiter: "@" contains a character that cannot separate an '
            'extension; use "+" or "-"',
            "directory.default_quota_bytes: -5 is out of range; use a whole number from 0 to "
            "1_099_511_627_776",
        ]
    )


# -- ranges: every number in the config has one (issue 12, point 11) ----------------------


def _numeric_fields() -> list[tuple[str, mi.IntType | mi.FloatType]]:
    """Every int and float setting, as (TOML key path, its type with the range)."""
    out: list[tuple[str, mi.IntType | mi.FloatType]] = []
    root = mi.type_info(Settings)
    assert isinstance(root, mi.StructType)
    for table in root.fields:
        st = _unwrap(table.type)
        if not isinstance(st, mi.StructType):
            continue
        for f in st.fields:
            t = _unwrap(f.type)
            if isinstance(t, mi.IntType | mi.FloatType):
                out.append((f"{table.encode_name}.{f.encode_name}", t))
    return out


def _unwrap(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


NUMERIC_FIELDS = _numeric_fields()


def test_numeric_fields_are_found() -> None:
    keys = [k for k, _ in NUMERIC_FIELDS]
    assert "smtp.max_message_bytes" in keys
    assert "queue.minimal_backoff_seconds" in keys
    assert len(keys) >= 30


@pytest.mark.parametrize(("key", "t"), NUMERIC_FIELDS, ids=[k for k, _ in NUMERIC_FIELDS])
def test_every_number_has_a_range(key: str, t: mi.IntType | mi.FloatType) -> None:
    # A lower and an upper bound, declared with msgspec.Meta in the field's Annotated.
    assert t.ge is not None or t.gt is not None, f"{key}: declare its minimum (Meta ge/gt)"
    assert t.le is not None or t.lt is not None, f"{key}: declare its maximum (Meta le/lt)"
    table, name = key.split(".")
    lowest = t.ge if t.ge is not None else t.gt
    below = (lowest - 1) if isinstance(t, mi.IntType) else (lowest - 0.5)
    (p,) = problems_of(with_(table, **{name: below}))
    assert p.startswith(f"{key}: {below} is out of range; use a ")
    assert str(lowest) in p
    highest = t.le if t.le is not None else t.lt
    (p,) = problems_of(with_(table, **{name: highest + 1}))
    assert p.startswith(f"{key}: {highest + 1} is out of range; use a ")
    # the bounds themselves are in range (where the bound is inclusive)
    for bound in (t.ge, t.le):
        if bound is not None:
            problems: list[str] = []
            try:
                checked_settings_from_dict(with_(table, **{name: bound}), check_files=False)
            except ConfigError as exc:  # a rule joining two settings may still object
                problems = [p.message for p in exc.problems]
            assert not [p for p in problems if "out of range" in p]


@pytest.mark.parametrize(
    ("table", "name", "value", "message"),
    [
        ("server", "processes", -3, "-3 is out of range; use a whole number from 0 to 1024"),
        (
            "smtp",
            "max_message_bytes",
            -1,
            "-1 is out of range; use a whole number from 1 to 2_147_483_647",
        ),
        ("smtp", "idle_timeout_seconds", -5, "-5 is out of range; use a whole number from 1 to"),
        (
            "delivery",
            "connect_timeout_seconds",
            -1.5,
            "-1.5 is out of range; use a number more than 0 and at most 3600",
        ),
        ("dns", "timeout_seconds", 0, "0 is out of range; use a number more than 0 and at most"),
        (
            "imap",
            "max_connections_per_ip",
            -1,
            "-1 is out of range; use a whole number from 0 to 1_000_000",
        ),
    ],
)
def test_issue_ranges(table: str, name: str, value: float, message: str) -> None:
    (p,) = problems_of(with_(table, **{name: value}))
    assert p.startswith(f"{table}.{name}: {message}")


def test_zero_connections_per_ip_means_no_limit() -> None:
    # Postfix smtpd_client_connection_count_limit = 0: no limit, so 0 must not lock clients out.
    for table in ("smtp", "imap", "pop3"):
        s = checked_settings_from_dict(with_(table, max_connections_per_ip=0), check_files=False)
        assert getattr(s, table).max_connections_per_ip == 0
        assert "0 = no limit" in _doc_of(table, "max_connections_per_ip")


def _doc_of(table: str, name: str) -> str:
    root = mi.type_info(Settings)
    assert isinstance(root, mi.StructType)
    st = _unwrap(next(f.type for f in root.fields if f.encode_name == table))
    assert isinstance(st, mi.StructType)
    t = next(f.type for f in st.fields if f.encode_name == name)
    assert isinstance(t, mi.Metadata)
    assert t.extra_json_schema is not None
    return str(t.extra_json_schema["description"])


def test_backoff_order_and_delay_warning() -> None:
    data = with_("queue", minimal_backoff_seconds=5000, maximal_backoff_seconds=4000)
    assert problems_of(data) == [
        "queue.minimal_backoff_seconds: 5000 is more than queue.maximal_backoff_seconds "
        "(4000); make the minimal backoff the smaller one"
    ]
    data = with_("queue", delay_warning_seconds=500000)
    (p,) = problems_of(data)
    assert p.startswith(
        "queue.delay_warning_seconds: 500000 is not less than queue.maximal_lifetime_seconds"
    )
    assert checked_settings_from_dict(with_("queue", delay_warning_seconds=0), check_files=False)


def test_bad_metrics_network() -> None:
    data = with_("http", metrics_allowed_networks=["10.0.0.0/8", "ten"])
    assert problems_of(data) == [
        'http.metrics_allowed_networks[1]: "ten" is not a network; write an address or CIDR, '
        'e.g. "10.0.0.0/8"'
    ]


def test_files_checked(tmp_path: Path) -> None:
    cfg = tmp_path / "pochta.toml"
    cfg.write_text('[server]\nhostname = "mail.example.test"\n')
    with pytest.raises(ConfigError) as info:
        load_checked_settings(cfg)
    keys = [p.key for p in info.value.problems]
    assert keys == ["tls.cert_file", "tls.key_file"]
    assert "run pochta init" in info.value.problems[0].message
    # relative paths resolve under the config file's directory when data_dir is empty
    assert str(tmp_path / "tls" / "cert.pem") in info.value.problems[0].message


def test_missing_table_file(tmp_path: Path) -> None:
    data = with_("tables", virtual_alias_maps=[f"hash:{tmp_path}/nope"])
    data["server"]["data_dir"] = str(tmp_path)
    for name in ("cert.pem", "key.pem"):
        (tmp_path / "tls").mkdir(exist_ok=True)
        (tmp_path / "tls" / name).write_text("x")
    with pytest.raises(ConfigError) as info:
        checked_settings_from_dict(data)
    (p,) = info.value.problems
    assert p.key == "tables.virtual_alias_maps[0]"
    assert "nope" in p.message


def test_missing_file_and_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_checked_settings(tmp_path / "absent.toml")
    assert "not found; create one with: pochta init" in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nhostname = 1\n")
    with pytest.raises(ConfigError) as info:
        load_checked_settings(bad)
    assert "TOML syntax error" in str(info.value)
    assert "line 1" in str(info.value)


def test_sample_config_round_trips() -> None:
    text = render_config({"server": {"hostname": "mail.example.test", "data_dir": "/srv/p"}})
    data = tomllib.loads(text)
    s = checked_settings_from_dict(data, check_files=False)
    assert s.server.data_dir == "/srv/p"
    assert s.listen == Settings(server=s.server).listen
    # every field is written, with its doc line above it
    for name in LISTENER_NAMES:
        assert f"\n{name} = " in text
    assert text.count("\n# ") >= 30


def test_spam_thresholds_must_rise() -> None:
    """greylist < junk < reject, 0 switching one off (config/check.py check_spam)."""
    [problem] = problems_of(with_("spam", junk_score=20.0))
    assert problem.startswith("spam.reject_score:")
    assert "not above spam.junk_score" in problem
    assert checked_settings_from_dict(
        with_("spam", junk_score=0.0, reject_score=3.0, greylist_score=2.0), check_files=False
    )


def test_spam_network_lists_and_milter_addresses_are_checked() -> None:
    data = with_("rate_limits", exempt_networks=["127.0.0.0/8", "not a net"])
    data["greylist"] = {"allow": ["192.0.2.0/24", "@example.org", "bad entry"]}
    data["milter"] = {"servers": ["inet:127.0.0.1:8891", "tcp:1.2.3.4"]}
    found = problems_of(data)
    assert [p.split(":")[0] for p in found] == [
        "rate_limits.exempt_networks[1]",
        "greylist.allow[2]",
        "milter.servers[1]",
    ]


def test_sieve_vacation_periods_in_order() -> None:
    (p,) = problems_of(
        with_("sieve", vacation_min_period_seconds=7200, vacation_max_period_seconds=3600)
    )
    assert p.startswith(
        "sieve.vacation_min_period_seconds: 7200 is more than "
        "sieve.vacation_max_period_seconds (3600)"
    )
    (p,) = problems_of(
        with_("sieve", vacation_default_period_seconds=60, vacation_min_period_seconds=3600)
    )
    assert p.startswith("sieve.vacation_default_period_seconds: 60 is less than ")
    (p,) = problems_of(
        with_(
            "sieve", vacation_default_period_seconds=200 * 86400, vacation_max_period_seconds=86400
        )
    )
    assert p.startswith("sieve.vacation_default_period_seconds: 17280000 is more than ")
    # A maximum of 0 is no maximum.
    assert checked_settings_from_dict(
        with_("sieve", vacation_default_period_seconds=400 * 86400, vacation_max_period_seconds=0),
        check_files=False,
    )


def test_managesieve_per_ip_limit_within_total() -> None:
    (p,) = problems_of(with_("managesieve", max_connections=10, max_connections_per_ip=20))
    assert p.startswith("managesieve.max_connections_per_ip: 20 is more than ")
    assert checked_settings_from_dict(
        with_("managesieve", max_connections=0, max_connections_per_ip=20), check_files=False
    )


def test_sieve_directories_and_managesieve_tls(tmp_path: Path) -> None:
    data = with_("sieve", scripts_dir="scripts-file")
    data["server"]["data_dir"] = str(tmp_path)
    data["listen"] = {"managesieve": "127.0.0.1:4190"}
    (tmp_path / "scripts-file").write_text("not a directory")
    with pytest.raises(ConfigError) as info:
        checked_settings_from_dict(data)
    problems = {p.key: p.message for p in info.value.problems}
    assert problems["sieve.scripts_dir"] == (
        f"{tmp_path / 'scripts-file'} is not a directory; point it at a directory, or remove "
        "the file"
    )
    assert problems["listen.managesieve"].startswith("needs TLS (STARTTLS, RFC 5804 §2.2) but ")
    assert "sieve.global_dir" not in problems  # missing, and can be made
    # With the certificate and a directory, all is well.
    (tmp_path / "scripts-file").unlink()
    (tmp_path / "tls").mkdir()
    for name in ("cert.pem", "key.pem"):
        (tmp_path / "tls" / name).write_text("x")
    assert checked_settings_from_dict(data).listen.managesieve == "127.0.0.1:4190"
