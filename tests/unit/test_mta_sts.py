"""MTA-STS (RFC 8461): the policy and TXT grammars, and fetching and caching policies from a
real HTTPS server on loopback (certificates from trustme, TXT records from a real DNS
server)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import pytest
import trustme
from hypothesis import example, given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from pochta.config.settings import Settings
from pochta.deliver.mta_sts import (
    MAX_POLICY_BYTES,
    StsPolicy,
    StsPolicyError,
    StsResolver,
    check_txt,
    parse_policy,
    parse_txt,
)
from pochta.deliver.sts_dane_policy import StsDanePolicy
from pochta.deliver.tls_policy import DomainPolicy, HostTLS
from tests.dnsserver import ZoneServer
from tests.factories import make_settings

# RFC 8461 §3.2, the example policy.
RFC_POLICY = (
    "version: STSv1\r\n"
    "mode: enforce\r\n"
    "mx: mail.example.com\r\n"
    "mx: *.example.net\r\n"
    "mx: backupmx.example.com\r\n"
    "max_age: 604800\r\n"
)


# -- parse_policy ------------------------------------------------------------------------------


def test_rfc_example_policy() -> None:
    policy = parse_policy(RFC_POLICY)
    assert policy == StsPolicy(
        mode="enforce",
        mx=("mail.example.com", "*.example.net", "backupmx.example.com"),
        max_age=604800,
    )


def test_line_ends_lf_crlf_and_none_at_the_end() -> None:
    expected = parse_policy(RFC_POLICY)
    assert parse_policy(RFC_POLICY.replace("\r\n", "\n")) == expected
    assert parse_policy(RFC_POLICY.rstrip("\r\n")) == expected
    mixed = RFC_POLICY.replace("\r\n", "\n", 2)
    assert parse_policy(mixed) == expected


def test_whitespace_around_values_and_order_of_fields() -> None:
    text = "max_age:86400 \nmx:\t MX.Example.ORG\t\nmode:   testing\nversion: STSv1  \n"
    assert parse_policy(text) == StsPolicy(mode="testing", mx=("mx.example.org",), max_age=86400)


def test_unknown_fields_are_ignored() -> None:
    text = RFC_POLICY + "ext-field: some value with spaces\r\nx.y_z: ünïcödé\r\n"
    assert parse_policy(text) == parse_policy(RFC_POLICY)


def test_first_occurrence_wins_but_mx_accumulates() -> None:
    text = (
        "version: STSv1\nmode: testing\nmode: enforce\n"
        "max_age: 10\nmax_age: 20\nmx: a.test\nmx: b.test\n"
    )
    assert parse_policy(text) == StsPolicy(mode="testing", mx=("a.test", "b.test"), max_age=10)


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n") == StsPolicy(
        mode="none", mx=(), max_age=86400
    )


def test_blank_lines_and_trailing_dot_are_tolerated() -> None:
    text = "\nversion: STSv1\n\nmode: enforce\nmx: mail.example.org.\nmax_age: 0\n\n"
    assert parse_policy(text) == StsPolicy(mode="enforce", mx=("mail.example.org",), max_age=0)


def test_largest_max_age() -> None:
    text = "version: STSv1\nmode: enforce\nmx: m.test\nmax_age: 31557600\n"
    assert parse_policy(text).max_age == 31557600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing 'version'"),
        ("mode: enforce\nmx: m.test\nmax_age: 1\n", "missing 'version'"),
        ("version: STSv2\nmode: enforce\nmx: m.test\nmax_age: 1\n", "version 'STSv2'"),
        ("version: stsv1\nmode: enforce\nmx: m.test\nmax_age: 1\n", "not 'STSv1'"),
        ("version: STSv1\nmx: m.test\nmax_age: 1\n", "missing 'mode'"),
        ("version: STSv1\nMode: enforce\nmx: m.test\nmax_age: 1\n", "case-sensitive"),
        ("version: STSv1\nmode: Enforce\nmx: m.test\nmax_age: 1\n", "mode 'Enforce'"),
        ("version: STSv1\nmode: strict\nmx: m.test\nmax_age: 1\n", "enforce, testing, none"),
        ("version: STSv1\nmode: enforce\nmx: m.test\n", "missing 'max_age'"),
        ("version: STSv1\nmode: enforce\nmx: m.test\nmax_age: -1\n", "not a number"),
        ("version: STSv1\nmode: enforce\nmx: m.test\nmax_age: 1d\n", "not a number"),
        ("version: STSv1\nmode: enforce\nmx: m.test\nmax_age: 12345678901\n", "not a number"),
        ("version: STSv1\nmode: enforce\nmx: m.test\nmax_age: 31557601\n", "more than 31557600"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "missing 'mx'"),
        ("version: STSv1\nmode: testing\nmax_age: 1\n", "required in mode 'testing'"),
        ("version: STSv1\nmode: enforce\nmx: *.*.m.test\nmax_age: 1\n", "not a host name"),
        ("version: STSv1\nmode: enforce\nmx: mail.*.test\nmax_age: 1\n", "not a host name"),
        ("version: STSv1\nmode: enforce\nmx: -bad.test\nmax_age: 1\n", "not a host name"),
        ("version: STSv1\nmode: enforce\nmx: a b.test\nmax_age: 1\n", "not a host name"),
        ("version: STSv1\nmode: enforce\nmx: почта.test\nmax_age: 1\n", "A-labels"),
        ("version: STSv1\nmode: enforce\nmx: \u212a.test\nmax_age: 1\n", "A-labels"),
        ("version: STSv1\nmode: enforce\nmx: " + "a" * 64 + ".test\nmax_age: 1\n", "host name"),
        ("version: STSv1\nmode: enforce\nmx m.test\nmax_age: 1\n", "line 3: expected 'key: value'"),
        ("version: STSv1\n mode: enforce\nmx: m.test\nmax_age: 1\n", "not a valid field name"),
        ("version: STSv1\nmode:\nmx: m.test\nmax_age: 1\n", "line 2: empty value"),
        ("version: STSv1\nmode: enforce\x00\nmx: m.test\nmax_age: 1\n", "control character"),
        ("version: STSv1\rmode: enforce\nmx: m.test\nmax_age: 1\n", "control character"),
        ("version: STSv1\nmode: enforce\nmode: bogus\nmx: m.test\nmax_age: 1\n", "line 3: mode"),
    ],
)
def test_broken_policies(text: str, message: str) -> None:
    with pytest.raises(StsPolicyError, match=message.replace("*", r"\*")):
        parse_policy(text)


def test_oversize_policy() -> None:
    text = RFC_POLICY + "x: " + "y" * MAX_POLICY_BYTES + "\n"
    with pytest.raises(StsPolicyError, match="larger than 65536 bytes"):
        parse_policy(text)
    # Counted in UTF-8 bytes, not characters.
    text = RFC_POLICY + "x: " + "ü" * (MAX_POLICY_BYTES // 2) + "\n"
    assert len(text) < MAX_POLICY_BYTES
    with pytest.raises(StsPolicyError, match="larger than"):
        parse_policy(text)


@given(st.text())
@example("version: STSv1\nmode: enforce\nmx: \udc80\nmax_age: 1\n")
@example("version:STSv1\nmode:none\nmax_age:0")
@example(":\n")
def test_any_text_gives_a_policy_or_a_policy_error(text: str) -> None:
    with contextlib.suppress(StsPolicyError):
        parse_policy(text)


_FIELD = st.sampled_from(["version", "mode", "max_age", "mx", "ext", "Mode"])
_VALUE = st.one_of(
    st.sampled_from(["STSv1", "enforce", "testing", "none", "m.test", "*.m.test", "86400"]),
    st.text(max_size=12),
    st.integers(-5, 10**11).map(str),
)


@given(st.lists(st.tuples(_FIELD, _VALUE, st.sampled_from(["\n", "\r\n", " \n"]))))
def test_field_soup_gives_a_policy_or_a_policy_error(lines: list[tuple[str, str, str]]) -> None:
    text = "".join(f"{k}: {v}{end}" for k, v, end in lines)
    try:
        policy = parse_policy(text)
    except StsPolicyError:
        return
    assert policy.mode in ("enforce", "testing", "none")
    assert 0 <= policy.max_age <= 31557600
    assert policy.mx or policy.mode == "none"


@given(
    st.sampled_from(["enforce", "testing", "none"]),
    st.lists(
        st.from_regex(r"(\*\.)?[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\.[a-z]{2,5}", fullmatch=True)
    ),
    st.integers(0, 31557600),
)
def test_render_then_parse(mode: str, mx: list[str], max_age: int) -> None:
    if mode != "none" and not mx:
        mx = ["mail.example.test"]
    policy = StsPolicy(mode=mode, mx=tuple(mx), max_age=max_age)  # type: ignore[arg-type]
    assert parse_policy(policy.render()) == policy


# -- parse_txt (RFC 8461 §3.1) ---------------------------------------------------------------


def test_rfc_example_txt() -> None:
    assert parse_txt(["v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    assert parse_txt([b"v=STSv1; id=20160831085700Z;"]) == "20160831085700Z"
    # Several strings in one record are joined.
    assert parse_txt([(b"v=STSv1; ", b"id=abc123")]) == "abc123"


def test_txt_syntax_variants() -> None:
    assert parse_txt(["v=STSv1;id=A1"]) == "A1"
    assert parse_txt(["v=STSv1 ;\tid=A1 ; "]) == "A1"
    assert parse_txt(["v=STSv1; ext=val; id=A1; other-ext=x"]) == "A1"
    assert parse_txt(["v=STSv1; id=first; id=second"]) == "first"
    assert parse_txt(["v=STSv1; id=" + "a" * 32]) == "a" * 32


@pytest.mark.parametrize(
    "records",
    [
        [],
        ["v=spf1 -all"],
        ["v=STSv1;"],  # no id
        ["v=STSv1; id="],
        ["v=STSv1; id=" + "a" * 33],
        ["v=STSv1; id=2016-08-31"],
        ["v=STSv1; id=abc; ext=a=b"],
        ["v=STSv1; id=abc; =x"],
        ["v=STSv1 id=abc"],
        ["v=STSv10; id=abc"],
        ["V=STSv1; id=abc"],
        ["id=abc; v=STSv1"],
        ["v=STSv1; id=abc", "v=STSv1; id=def"],  # two records: no policy
        [b"v=STSv1; id=abc\xff"],
    ],
)
def test_txt_without_a_policy(records: list[str | bytes]) -> None:
    assert parse_txt(records) is None
    with pytest.raises(StsPolicyError):
        check_txt(records)


def test_txt_other_records_are_discarded() -> None:
    records = ["v=spf1 -all", "v=STSv1; id=abc", "google-site-verification=xyz"]
    assert parse_txt(records) == "abc"


def test_txt_errors_say_why() -> None:
    with pytest.raises(StsPolicyError, match="2 TXT records"):
        check_txt(["v=STSv1; id=a", "v=STSv1; id=b"])
    with pytest.raises(StsPolicyError, match="no TXT record starting"):
        check_txt(["hello"])
    with pytest.raises(StsPolicyError, match="no id"):
        check_txt(["v=STSv1; x=y"])


@given(st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=40)), max_size=3))
def test_any_txt_gives_an_id_or_none(records: list[str | bytes]) -> None:
    result = parse_txt(records)
    assert result is None or (result.isalnum() and len(result) <= 32)


# -- a real HTTPS server ---------------------------------------------------------------------

DOMAIN = "example.test"
POLICY_PATH = "/.well-known/mta-sts.txt"
ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"


@dataclass
class Reply:
    status: int = 200
    body: bytes = ENFORCE.encode()
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True


class PolicySite:
    """An HTTPS server on 127.0.0.1 serving ``replies[path]`` with a trustme certificate."""

    def __init__(self, cert: trustme.LeafCert) -> None:
        self.replies: dict[str, Reply] = {POLICY_PATH: Reply()}
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.requests.append((self.path, self.headers.get("Host", "")))
                reply = site.replies.get(self.path, Reply(404, b"not found"))
                self.send_response(reply.status)
                if reply.content_type:
                    self.send_header("Content-Type", reply.content_type)
                if reply.send_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> PolicySite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    @property
    def url_template(self) -> str:
        return "https://127.0.0.1:{port}" + POLICY_PATH

    def policy_requests(self) -> int:
        return sum(1 for path, _ in self.requests if path == POLICY_PATH)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def site(ca: trustme.CA) -> Iterator[PolicySite]:
    with PolicySite(ca.issue_cert(f"mta-sts.{DOMAIN}")) as s:
        yield s


def _zone(policy_id: str | None) -> str:
    lines = ["$TTL 300", f"mx.{DOMAIN}. A 127.0.0.1"]
    if policy_id is not None:
        lines.append(f'_mta-sts.{DOMAIN}. TXT "v=STSv1; id={policy_id};"')
        lines.append(f'_mta-sts.{DOMAIN}. TXT "some other record"')
    return "\n".join(lines) + "\n"


@pytest.fixture
def dns_server() -> Iterator[ZoneServer]:
    with ZoneServer(_zone("id1")) as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _sts(
    dns_server: ZoneServer,
    site: PolicySite,
    ca_file: Path | None,
    cache_dir: Path,
    clock: Clock | None = None,
    **kwargs: object,
) -> StsResolver:
    return StsResolver(
        dns_server.async_resolver(),
        cache_dir,
        ca_file=ca_file,
        url_template=site.url_template,
        port=site.port,
        timeout_seconds=5.0,
        clock=clock or Clock(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_fetch_and_reuse(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    policy = await sts.policy(DOMAIN)
    assert policy == StsPolicy(mode="enforce", mx=("mx.example.test",), max_age=86400)
    # The Host header names the policy host whatever address the URL has.
    assert site.requests == [(POLICY_PATH, f"mta-sts.{DOMAIN}")]
    # Same TXT id, policy not expired: no second fetch.
    assert await sts.policy(DOMAIN.upper() + ".") == policy
    assert site.policy_requests() == 1
    assert dns_server.queries.count((f"_mta-sts.{DOMAIN}.", "TXT")) == 2


async def test_concurrent_lookups_share_one_fetch(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    results = await asyncio.gather(*(sts.policy(DOMAIN) for _ in range(5)))
    assert all(r is not None and r.mode == "enforce" for r in results)
    assert site.policy_requests() == 1


async def test_new_id_fetches_again(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    assert (await sts.policy(DOMAIN)).mode == "enforce"  # type: ignore[union-attr]
    site.replies[POLICY_PATH] = Reply(body=ENFORCE.replace("enforce", "testing").encode())
    dns_server.load(_zone("id2"))
    policy = await sts.policy(DOMAIN)
    assert policy is not None
    assert policy.mode == "testing"
    assert site.policy_requests() == 2
    saved = json.loads((tmp_path / f"{DOMAIN}.json").read_text())
    assert saved["policy_id"] == "id2"
    assert saved["policy"]["mode"] == "testing"


async def test_policy_survives_a_restart(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    clock = Clock()
    first = await _sts(dns_server, site, ca_file, tmp_path, clock).policy(DOMAIN)
    assert first is not None
    saved = json.loads((tmp_path / f"{DOMAIN}.json").read_text())
    assert saved["domain"] == DOMAIN
    assert saved["policy_id"] == "id1"
    assert saved["fetched_at"] == clock.now
    assert saved["policy"] == {"mode": "enforce", "mx": ["mx.example.test"], "max_age": 86400}
    # A new process (new resolver object), the web server now broken: the same id needs no
    # fetch, and the cached policy applies.
    site.replies[POLICY_PATH] = Reply(500, b"oops")
    clock.now += 3600
    again = await _sts(dns_server, site, ca_file, tmp_path, clock).policy(DOMAIN)
    assert again == first
    assert site.policy_requests() == 1


async def test_cache_write_fsyncs_its_directory(
    dns_server: ZoneServer,
    site: PolicySite,
    ca_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cached policy's rename reaches the disk (fsync of the cache directory): a policy
    lost in a crash is a window for a downgrade (RFC 8461 §10.2)."""
    dirs: list[Path] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            dirs.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    cache = tmp_path / "sts"
    assert await _sts(dns_server, site, ca_file, cache).policy(DOMAIN) is not None
    assert (cache / f"{DOMAIN}.json").exists()
    assert dirs == [cache]
    assert [p.name for p in cache.iterdir()] == [f"{DOMAIN}.json"]


async def test_cached_policy_applies_when_txt_disappears(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    first = await sts.policy(DOMAIN)
    # RFC 8461 §5: an attacker strips the TXT record; the unexpired policy still applies.
    dns_server.load(_zone(None))
    assert await sts.policy(DOMAIN) == first
    restarted = _sts(dns_server, site, ca_file, tmp_path)
    assert await restarted.policy(DOMAIN) == first


async def test_failed_refresh_keeps_the_cached_policy(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    first = await sts.policy(DOMAIN)
    dns_server.load(_zone("id2"))
    site.replies[POLICY_PATH] = Reply(503, b"busy")
    with capture_logs() as logs:
        assert await sts.policy(DOMAIN) == first
    failures = [e for e in logs if e["event"] == "mta_sts_fetch_failed"]
    assert failures
    assert failures[0]["using_cached"] is True
    assert "503" in failures[0]["error"]


async def test_expired_policy_is_dropped(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    clock = Clock()
    sts = _sts(dns_server, site, ca_file, tmp_path, clock)
    assert await sts.policy(DOMAIN) is not None
    site.replies[POLICY_PATH] = Reply(404, b"gone")
    clock.now += 86400
    # Expired and no new policy to fetch: the domain has no policy any more.
    assert await sts.policy(DOMAIN) is None
    assert not (tmp_path / f"{DOMAIN}.json").exists()


async def test_expired_policy_with_same_id_is_fetched_again(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    clock = Clock()
    sts = _sts(dns_server, site, ca_file, tmp_path, clock)
    await sts.policy(DOMAIN)
    clock.now += 86400 + 1
    assert await sts.policy(DOMAIN) is not None
    assert site.policy_requests() == 2


async def test_redirects_are_refused(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    target = f"https://127.0.0.1:{site.port}/moved.txt"
    site.replies[POLICY_PATH] = Reply(302, b"", headers={"Location": target})
    site.replies["/moved.txt"] = Reply()
    sts = _sts(dns_server, site, ca_file, tmp_path)
    with pytest.raises(Exception, match="redirect"):
        await sts.fetch(DOMAIN)
    assert await sts.policy(DOMAIN) is None
    assert [path for path, _ in site.requests] == [POLICY_PATH, POLICY_PATH]


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(content_type="text/html"), "content type 'text/html'"),
        (Reply(content_type=""), "content type 'missing'"),
        (Reply(content_type="application/octet-stream"), "not text/plain"),
        (Reply(404, b"no"), "HTTP status 404"),
        (Reply(204, b""), "HTTP status 204"),
        (Reply(body=b"<html>hello</html>"), "expected 'key: value'"),
        (Reply(body=ENFORCE.replace("enforce", "bogus").encode()), "mode 'bogus'"),
        (Reply(body=b"version: STSv1\xff\n"), "not UTF-8"),
        (Reply(body=b"x: " + b"y" * 70000), "exceeds 65536"),
        (Reply(body=b"x: " + b"y" * 70000, send_length=False), "exceeds 65536"),
    ],
)
async def test_bad_answers_give_no_policy(
    dns_server: ZoneServer,
    site: PolicySite,
    ca_file: Path,
    tmp_path: Path,
    reply: Reply,
    error: str,
) -> None:
    site.replies[POLICY_PATH] = reply
    sts = _sts(dns_server, site, ca_file, tmp_path)
    with capture_logs() as logs:
        assert await sts.policy(DOMAIN) is None
    failures = [e for e in logs if e["event"] == "mta_sts_fetch_failed"]
    assert len(failures) == 1
    assert error in failures[0]["error"]
    assert not (tmp_path / f"{DOMAIN}.json").exists()  # nothing cached


async def test_size_limit_is_configurable(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path, max_policy_bytes=20)
    with pytest.raises(Exception, match="exceeds 20"):
        await sts.fetch(DOMAIN)


async def test_certificate_must_be_trusted(
    dns_server: ZoneServer, site: PolicySite, tmp_path: Path
) -> None:
    # Without the test CA, the system store does not trust the server.
    sts = _sts(dns_server, site, None, tmp_path)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        await sts.fetch(DOMAIN)
    assert await sts.policy(DOMAIN) is None


async def test_certificate_must_name_the_policy_host(
    ca: trustme.CA, ca_file: Path, dns_server: ZoneServer, tmp_path: Path
) -> None:
    with PolicySite(ca.issue_cert(DOMAIN, "mta-sts.other.test")) as wrong:
        sts = _sts(dns_server, wrong, ca_file, tmp_path)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await sts.fetch(DOMAIN)
        assert await sts.policy(DOMAIN) is None


async def test_no_txt_record_means_no_fetch(
    site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    with ZoneServer(_zone(None)) as empty:
        sts = _sts(empty, site, ca_file, tmp_path)
        assert await sts.policy(DOMAIN) is None
    assert site.requests == []


async def test_two_sts_records_mean_no_policy(
    site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    zone = _zone("id1") + f'_mta-sts.{DOMAIN}. TXT "v=STSv1; id=id2;"\n'
    with ZoneServer(zone) as server:
        assert await _sts(server, site, ca_file, tmp_path).policy(DOMAIN) is None
    assert site.requests == []


async def test_unreadable_cache_file_is_ignored(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    (tmp_path / f"{DOMAIN}.json").write_text("{not json")
    sts = _sts(dns_server, site, ca_file, tmp_path)
    with capture_logs() as logs:
        assert await sts.policy(DOMAIN) is not None
    assert any(e["event"] == "mta_sts_cache_unreadable" for e in logs)
    assert json.loads((tmp_path / f"{DOMAIN}.json").read_text())["policy_id"] == "id1"


async def test_bad_domain_names_touch_nothing(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    sts = _sts(dns_server, site, ca_file, tmp_path)
    for name in ("../../etc/passwd", "", "localhost", "a b.test", "почта.рф"):
        assert await sts.policy(name) is None
    assert dns_server.queries == []
    assert site.requests == []


# -- StsDanePolicy.domain_policy ---------------------------------------------------------------


def _settings(tmp_path: Path, *, level: str = "may", mta_sts: bool = True) -> Settings:
    return make_settings(
        {
            "server.hostname": "mail.example.test",
            "server.data_dir": str(tmp_path),
            "delivery.tls_security_level": level,
            "delivery.mta_sts": mta_sts,
        }
    )


async def _domain_policy(
    dns_server: ZoneServer,
    site: PolicySite,
    ca_file: Path,
    tmp_path: Path,
    body: str,
    **settings: object,
) -> tuple[StsDanePolicy, DomainPolicy]:
    site.replies[POLICY_PATH] = Reply(body=body.encode())
    sts = _sts(dns_server, site, ca_file, tmp_path / "cache")
    policy = StsDanePolicy(
        _settings(tmp_path, **settings),  # type: ignore[arg-type]
        dns_server.async_resolver(),
        sts=sts,
    )
    return policy, await policy.domain_policy(DOMAIN)


async def test_enforce_means_verify_and_mx_patterns(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    body = "version: STSv1\nmode: enforce\nmx: *.example.test\nmax_age: 600\n"
    policy, floor = await _domain_policy(dns_server, site, ca_file, tmp_path, body)
    assert floor == DomainPolicy("verify", "mta-sts", ("*.example.test",), "enforce")
    assert floor.mx_allowed("mx.example.test")
    assert not floor.mx_allowed("mx.elsewhere.test")
    # No DANE configured: the host gets the floor.
    assert await policy.host_tls(DOMAIN, "mx.example.test", 25, floor) == HostTLS(
        "verify", "mta-sts"
    )


async def test_testing_keeps_the_configured_level(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    body = "version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 600\n"
    policy, floor = await _domain_policy(dns_server, site, ca_file, tmp_path, body, level="encrypt")
    assert floor == DomainPolicy("encrypt", "mta-sts", ("mx.example.test",), "testing")
    # A host enforce mode would have refused is logged, and still used.
    with capture_logs() as logs:
        host = await policy.host_tls(DOMAIN, "rogue.example.org", 25, floor)
    assert host.level == "encrypt"
    assert [e["host"] for e in logs if e["event"] == "mta_sts_testing_failure"] == [
        "rogue.example.org"
    ]
    with capture_logs() as logs:
        await policy.host_tls(DOMAIN, "mx.example.test", 25, floor)
    assert not [e for e in logs if e["event"] == "mta_sts_testing_failure"]


async def test_mode_none_and_no_policy_keep_the_configured_level(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    body = "version: STSv1\nmode: none\nmax_age: 600\n"
    _, floor = await _domain_policy(dns_server, site, ca_file, tmp_path, body, level="dane")
    assert floor == DomainPolicy("may", "config", (), "none")
    dns_server.load(_zone(None))
    _, floor = await _domain_policy(
        dns_server, site, ca_file, tmp_path / "other", body, level="encrypt"
    )
    assert floor == DomainPolicy("encrypt")


async def test_mta_sts_switched_off(
    dns_server: ZoneServer, site: PolicySite, ca_file: Path, tmp_path: Path
) -> None:
    _, floor = await _domain_policy(
        dns_server, site, ca_file, tmp_path, ENFORCE, level="verify", mta_sts=False
    )
    assert floor == DomainPolicy("verify")
    assert dns_server.queries == []
    assert site.requests == []


def test_default_sts_resolver_uses_the_data_dir(tmp_path: Path, ca_file: Path) -> None:
    settings = make_settings(
        {
            "server.hostname": "mail.example.test",
            "server.data_dir": str(tmp_path),
            "delivery.tls_ca_file": str(ca_file),
        }
    )
    policy = StsDanePolicy(settings, dns.asyncresolver.Resolver(configure=False))
    assert policy.sts is not None
    assert policy.sts.cache_dir == tmp_path / "mta-sts"
