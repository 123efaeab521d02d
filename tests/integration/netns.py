"""Hosts for end-to-end tests: network namespaces joined by a bridge, and NSD serving DNS.

``Network`` makes, for one test, a namespace ``dns`` holding a bridge with the address
``PREFIX.53`` and one namespace per host (``PREFIX.1``, ``PREFIX.2``, ...), each joined to the
bridge by a veth pair. Nothing is added to the namespace the tests run in, so the only
addresses ever reached are the test's own. ``ip netns exec NS`` also bind-mounts
``/etc/netns/NS/resolv.conf`` over ``/etc/resolv.conf``, so programs that use the system
resolver inside a host (opendkim-testmsg) ask the test's DNS server.

``NsdServer`` runs Debian's NSD, a real authoritative server, in the ``dns`` namespace with
zones written from zone-file lines (``pochta dns`` prints them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


def netns_available() -> str:
    """ "" when namespaces can be made here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    return ""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Network:
    """Namespaces ``dns`` and ``hosts`` (names given) on 10.X.Y.0/24."""

    def __init__(self, hosts: Sequence[str], *, prefix: str = "10.77.0") -> None:
        self.prefix = prefix
        tag = f"p{os.getpid() % 100000}"
        self.dns_ns = f"{tag}-dns"
        self.namespaces = {name: f"{tag}-{name}" for name in hosts}
        self.addresses = {name: f"{prefix}.{i + 1}" for i, name in enumerate(hosts)}
        self.dns_address = f"{prefix}.53"
        self._made: list[str] = []

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        _ip("netns", "add", self.dns_ns)
        self._made.append(self.dns_ns)
        self.exec_check(self.dns_ns, "ip", "link", "set", "lo", "up")
        self.exec_check(self.dns_ns, "ip", "link", "add", "br0", "type", "bridge")
        self.exec_check(self.dns_ns, "ip", "addr", "add", f"{self.dns_address}/24", "dev", "br0")
        self.exec_check(self.dns_ns, "ip", "link", "set", "br0", "up")
        for i, (name, ns) in enumerate(self.namespaces.items()):
            _ip("netns", "add", ns)
            self._made.append(ns)
            self._resolv_conf(ns)
            inside, outside = f"h{i}", f"v{i}"
            # Both ends are made in the host's namespace's peer: create in ns, move the peer.
            self.exec_check(ns, "ip", "link", "set", "lo", "up")
            self.exec_check(
                ns, "ip", "link", "add", inside, "type", "veth", "peer", "name", outside
            )
            self.exec_check(ns, "ip", "link", "set", outside, "netns", self.dns_ns)
            self.exec_check(ns, "ip", "addr", "add", f"{self.addresses[name]}/24", "dev", inside)
            self.exec_check(ns, "ip", "link", "set", inside, "up")
            self.exec_check(self.dns_ns, "ip", "link", "set", outside, "master", "br0")
            self.exec_check(self.dns_ns, "ip", "link", "set", outside, "up")

    def _resolv_conf(self, ns: str) -> None:
        directory = Path("/etc/netns") / ns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(f"nameserver {self.dns_address}\n")

    def close(self) -> None:
        for ns in reversed(self._made):
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                _ip("netns", "del", ns)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self._made.clear()

    def command(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]

    def exec_check(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(ns, *args), check=True, capture_output=True, text=True, timeout=60
        )

    def run(
        self, host: str, *args: str, input: str | bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a host's namespace (text output)."""
        return subprocess.run(
            self.command(self.namespaces[host], *args),
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, host: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            self.command(self.namespaces.get(host, host), *args), **kwargs
        )


class NsdServer:
    """NSD in the network's ``dns`` namespace, serving the zones given (name → lines)."""

    def __init__(self, net: Network, workdir: Path, zones: dict[str, list[str]]) -> None:
        self.net = net
        self.workdir = workdir
        self.zones = zones
        self.proc: subprocess.Popen[str] | None = None

    def _write(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = [
            "server:",
            f"  ip-address: {self.net.dns_address}",
            "  port: 53",
            f'  zonesdir: "{self.workdir}"',
            f'  pidfile: "{self.workdir}/nsd.pid"',
            f'  logfile: "{self.workdir}/nsd.log"',
            f'  xfrdfile: "{self.workdir}/xfrd.state"',
            f'  zonelistfile: "{self.workdir}/zone.list"',
            '  username: ""',
            '  database: ""',
            "  server-count: 1",
            "  verbosity: 2",
            "remote-control:",
            "  control-enable: no",
        ]
        for name, lines in self.zones.items():
            origin = name.rstrip(".") + "."
            text = [
                f"$ORIGIN {origin}",
                "$TTL 300",
                f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300",
                f"@ IN NS ns.{origin}",
                f"ns.{origin} IN A {self.net.dns_address}" if not origin.endswith("arpa.") else "",
                *lines,
            ]
            (self.workdir / f"{origin}zone").write_text("\n".join(text) + "\n")
            conf += ["zone:", f"  name: {origin}", f'  zonefile: "{origin}zone"']
        path = self.workdir / "nsd.conf"
        path.write_text("\n".join(conf) + "\n")
        return path

    def __enter__(self) -> NsdServer:
        conf = self._write()
        check = subprocess.run(
            ["nsd-checkconf", str(conf)], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nsd-checkconf: {check.stdout}{check.stderr}")
        self.proc = self.net.popen(
            self.net.dns_ns,
            "nsd",
            "-d",
            "-c",
            str(conf),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Until NSD answers the SOA of every zone (asked from the dns namespace)."""
        deadline = time.monotonic() + 20
        pending = set(self.zones)
        while pending:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"nsd exited: {self.log()}")
            for name in list(pending):
                if self._probe(name):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"nsd does not answer for {sorted(pending)}: {self.log()}")
            time.sleep(0.1)

    def _probe(self, zone: str) -> bool:
        out = subprocess.run(
            self.net.command(
                self.net.dns_ns,
                "python3",
                "-c",
                _PROBE,
                self.net.dns_address,
                zone,
            ),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() == "ok"

    def log(self) -> str:
        path = self.workdir / "nsd.log"
        return path.read_text() if path.exists() else ""

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# A SOA query in the dns namespace, with only the standard library (the namespace's python3
# need not have dnspython): a hand-made query packet, the answer's RCODE and ANCOUNT read.
_PROBE = r"""
import socket, struct, sys
server, zone = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
for label in zone.rstrip(".").split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 6, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
try:
    s.sendto(q, (server, 53))
    data = s.recv(4096)
except OSError:
    print("no")
    sys.exit(0)
flags, ancount = struct.unpack(">H", data[2:4])[0], struct.unpack(">H", data[6:8])[0]
print("ok" if flags & 0xF == 0 and ancount >= 1 else "no")
"""


def zones_from_records(text: str, zones: Sequence[str]) -> dict[str, list[str]]:
    """Sort zone-file lines (absolute names, as ``pochta dns`` prints them) into the zones
    given, by longest matching suffix; comments and blank lines are dropped."""
    out: dict[str, list[str]] = {z: [] for z in zones}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(";"):
            continue
        owner = stripped.split()[0].lower()
        best = ""
        for zone in zones:
            z = zone.lower().rstrip(".") + "."
            if (owner == z or owner.endswith("." + z)) and len(z) > len(best):
                best = zone
        if best:
            out[best].append(stripped)
    return out


@contextlib.contextmanager
def network(hosts: Sequence[str]) -> Iterator[Network]:
    with Network(hosts) as net:
        yield net
