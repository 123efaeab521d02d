"""The https listener (issue 14 point 5): the http service over implicit TLS on a real pochta,
with the certificate picked by SNI, reloaded on SIGHUP, and `pochta check` naming what the
certificates do not cover.

A trustme CA issues the certificate of mta-sts/autoconfig/autodiscover.DOMAIN, configured in
``tls.certificates``; clients verify it as a sender fetching an MTA-STS policy does (RFC 8461
§3.3: HTTPS with a valid certificate for mta-sts.DOMAIN). The host keeps the self-signed
certificate `pochta init` made.
"""

from __future__ import annotations

import signal
import smtplib
import socket
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from tests.harness import DOMAIN, HOSTNAME, PochtaEnv, client_tls, serve, set_key

WEB_NAMES = [f"mta-sts.{DOMAIN}", f"autoconfig.{DOMAIN}", f"autodiscover.{DOMAIN}"]


def https_get(
    port: int, path: str, *, sni: str | None, host: str, context: ssl.SSLContext
) -> tuple[int, bytes, x509.Certificate]:
    """GET ``path`` over TLS with SNI ``sni`` (None: no server_name extension) and Host
    ``host``: (status, body, the server's leaf certificate)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=sni) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        tls.sendall(request.encode("ascii"))
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body, x509.load_der_x509_certificate(der)


def san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


def verifying(ca: trustme.CA) -> ssl.SSLContext:
    """A client context as a sender's: the CA trusted, the host name checked."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def write_web_certificate(ca: trustme.CA, data_dir: Path, names: list[str]) -> tuple[Path, Path]:
    cert = ca.issue_cert(*names)
    cert_file, key_file = data_dir / "tls" / "web.pem", data_dir / "tls" / "web.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


def configure_certificate(env: PochtaEnv, names: list[str], cert: Path, key: Path) -> None:
    quoted = ", ".join(f'"{n}"' for n in names)
    entry = f'[{{ names = [{quoted}], cert_file = "{cert}", key_file = "{key}" }}]'
    set_key(env.config_path, "tls", "certificates", entry)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def web_env(pochta_env: PochtaEnv, ca: trustme.CA) -> PochtaEnv:
    cert, key = write_web_certificate(ca, pochta_env.data_dir, WEB_NAMES)
    configure_certificate(pochta_env, WEB_NAMES, cert, key)
    return pochta_env


def test_harness_maps_the_https_port(pochta_env: PochtaEnv) -> None:
    # Point 3: the standard port 443 has its free port in the test instance, like the others.
    assert pochta_env.ports["https"] == pochta_env.port_base + 443
    config = pochta_env.config_path.read_text()
    assert f'https = "127.0.0.1:{pochta_env.ports["https"]}"' in config


def test_mta_sts_policy_over_https_by_sni(web_env: PochtaEnv, ca: trustme.CA) -> None:
    port = web_env.ports["https"]
    with serve(web_env.config_path) as server:
        bound = {r["listener"]: r["tls"] for r in server.events("listener_bound")}
        assert bound["https"] == "yes"
        # A sender fetching the policy: SNI and Host mta-sts.DOMAIN, the certificate verified
        # against the CA and the name (RFC 8461 §3.3).
        sts = f"mta-sts.{DOMAIN}"
        status, body, cert = https_get(
            port, "/.well-known/mta-sts.txt", sni=sts, host=sts, context=verifying(ca)
        )
        assert status == 200
        assert body.startswith(b"version: STSv1\r\n")
        assert f"mx: {HOSTNAME}\r\n".encode() in body
        assert sorted(san(cert)) == sorted(WEB_NAMES)

        # The host name gets the host's certificate (self-signed by pochta init).
        status, _, cert = https_get(
            port, "/healthz", sni=HOSTNAME, host=HOSTNAME, context=client_tls()
        )
        assert status == 200
        assert san(cert) == [HOSTNAME]

        # An unknown name gets the host's certificate too.
        _, _, cert = https_get(
            port, "/healthz", sni="other.example.net", host=HOSTNAME, context=client_tls()
        )
        assert san(cert) == [HOSTNAME]


def test_autoconfig_over_https(web_env: PochtaEnv, ca: trustme.CA) -> None:
    port = web_env.ports["https"]
    name = f"autoconfig.{DOMAIN}"
    with serve(web_env.config_path):
        status, body, cert = https_get(
            port, "/mail/config-v1.1.xml", sni=name, host=name, context=verifying(ca)
        )
        assert status == 200
        assert b"<clientConfig" in body
        assert f"<hostname>{HOSTNAME}</hostname>".encode() in body
        assert name in san(cert)


def test_https_without_sni(web_env: PochtaEnv) -> None:
    port = web_env.ports["https"]
    sts = f"mta-sts.{DOMAIN}"
    with serve(web_env.config_path):
        status, body, cert = https_get(
            port, "/.well-known/mta-sts.txt", sni=None, host=sts, context=client_tls()
        )
        assert status == 200
        assert body.startswith(b"version: STSv1\r\n")
        assert san(cert) == [HOSTNAME]  # no name asked: the host's certificate


def test_sighup_serves_a_replaced_certificate(web_env: PochtaEnv, ca: trustme.CA) -> None:
    port = web_env.ports["https"]
    sts = f"mta-sts.{DOMAIN}"

    def served() -> x509.Certificate:
        return https_get(port, "/healthz", sni=sts, host=sts, context=verifying(ca))[2]

    with serve(web_env.config_path) as server:
        first = served()
        # Renewed (as certbot renews): new files at the same paths, then SIGHUP.
        write_web_certificate(ca, web_env.data_dir, WEB_NAMES)
        assert served().serial_number == first.serial_number  # not before the reload
        server.signal(signal.SIGHUP)
        server.wait_for("tls_reloaded")
        server.wait_for("reloaded")
        renewed = served()
        assert renewed.serial_number != first.serial_number
        assert sorted(san(renewed)) == sorted(WEB_NAMES)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_check_names_uncovered_names(pochta_env: PochtaEnv, ca: trustme.CA) -> None:
    # A fresh install: the self-signed host certificate covers only the host name.
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr  # warnings, not problems
    lines = _warnings(proc.stderr)
    self_signed = [line for line in lines if "is self-signed" in line]
    assert len(self_signed) == 1  # said once
    assert "will not trust it" in self_signed[0]
    for name in WEB_NAMES:
        (line,) = [x for x in lines if x.startswith(f"warning: no certificate covers {name}:")]
        assert "certbot certonly" in line
        assert "[tls] certificates: { names = [" in line
    assert not any("does not cover the host name" in x for x in lines)

    # A certificate for two of the three names: only the third is left.
    cert, key = write_web_certificate(ca, pochta_env.data_dir, WEB_NAMES[:2])
    configure_certificate(pochta_env, WEB_NAMES, cert, key)
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    uncovered = [x for x in _warnings(proc.stderr) if x.startswith("warning: no certificate")]
    assert len(uncovered) == 1
    assert uncovered[0].startswith(f"warning: no certificate covers autodiscover.{DOMAIN}: ")
    assert "tls.certificates[0]" in uncovered[0]

    # A wildcard covers all three; a host name the host certificate does not name is told.
    cert, key = write_web_certificate(ca, pochta_env.data_dir, [f"*.{DOMAIN}"])
    configure_certificate(pochta_env, [f"*.{DOMAIN}"], cert, key)
    set_key(pochta_env.config_path, "server", "hostname", f'"mx.{DOMAIN}"')
    proc = pochta_env.run("check")
    assert proc.returncode == 0, proc.stderr
    lines = _warnings(proc.stderr)
    assert not any(x.startswith("warning: no certificate covers") for x in lines)
    (line,) = [x for x in lines if "does not cover the host name" in x]
    assert f"host name mx.{DOMAIN}" in line
    assert f"-d mx.{DOMAIN}" in line


def test_check_refuses_a_certificate_entry_without_files(pochta_env: PochtaEnv) -> None:
    missing = pochta_env.data_dir / "tls" / "missing.pem"
    configure_certificate(pochta_env, ["mta-sts..bad"], missing, missing)
    proc = pochta_env.run("check")
    assert proc.returncode == 1
    assert "tls.certificates[0].cert_file" in proc.stderr
    assert "tls.certificates[0].names[0]" in proc.stderr


def _smtp_starttls_cert(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.starttls(context=ctx)
        sock = client.sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _implicit_tls_cert(port: int, ctx: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=HOSTNAME) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_sighup_renews_the_host_certificate_of_every_listener(
    pochta_env: PochtaEnv, ca: trustme.CA
) -> None:
    """certbot renews the host's certificate in place, then `systemctl reload pochta`:
    STARTTLS (SMTP, submission) and implicit TLS (IMAPS, POP3S, SMTPS) serve the new one
    from the next handshake on, without a restart."""
    ctx = client_tls()  # the self-signed start: not verified
    # One process: every listener is the master's, whose services live on across a reload.
    set_key(pochta_env.config_path, "server", "processes", "1")

    def served() -> dict[str, int]:
        ports = pochta_env.ports
        return {
            "smtp": _smtp_starttls_cert(ports["smtp"], ctx).serial_number,
            "submission": _smtp_starttls_cert(ports["submission"], ctx).serial_number,
            "submissions": _implicit_tls_cert(ports["submissions"], ctx).serial_number,
            "imaps": _implicit_tls_cert(ports["imaps"], ctx).serial_number,
            "pop3s": _implicit_tls_cert(ports["pop3s"], ctx).serial_number,
            "https": _implicit_tls_cert(ports["https"], ctx).serial_number,
        }

    with serve(pochta_env.config_path) as server:
        first = served()
        assert len(set(first.values())) == 1  # one host certificate
        renewed = ca.issue_cert(HOSTNAME)
        renewed.cert_chain_pems[0].write_to_path(str(pochta_env.data_dir / "tls" / "cert.pem"))
        renewed.private_key_pem.write_to_path(str(pochta_env.data_dir / "tls" / "key.pem"))
        assert served() == first  # nothing reads the files before the reload
        server.signal(signal.SIGHUP)
        server.wait_for("reloaded")
        new_serial = x509.load_pem_x509_certificate(
            renewed.cert_chain_pems[0].bytes()
        ).serial_number
        assert served() == dict.fromkeys(first, new_serial)
