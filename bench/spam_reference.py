"""SpamAssassin and Rspamd on the corpus split of the accuracy runs (issue 15's reference).

    .venv/bin/python bench/spam_reference.py [--engines spamassassin,rspamd] [--cache DIR]
                                             [--work DIR] [--out FILE] [--jobs N]

Both engines train their Bayes classifier on the train part of the one fixed split
(``bench/spam_corpus.py``: 1327 spam + 2905 ham) and score the test part (569 spam + 1245
ham), offline, each in private state under ``--work``; nothing under /etc is changed. The
Debian packages (spamassassin, spamc, rspamd, redis-server) are installed with ``apt-get
install -y`` when missing. Every message is given as :func:`spam_corpus.read_message` makes
it (no mbox ``From `` line, CRLF), without envelope, client IP or HELO: the engines see the
message only, as ``spamc`` / ``rspamc FILE`` give it.

SpamAssassin: the Debian package's rules (``/usr/share/spamassassin``, no ``sa-update``) and
plugin list (``/etc/spamassassin/*.pre`` and ``local.cf``, linked into a private site config
dir) plus ``bench.cf`` (Bayes on, its database under WORK, no auto-learn, no auto-expire).
``sa-learn -L --spam DIR`` and ``--ham DIR`` (one call per class), then ``spamd -L`` (local
tests only: no DNS, RBL, URIBL, Razor, Pyzor, DCC; with Bayes this is score set 2) on a
loopback port with 2 children, and one ``spamc -R`` per message. is_spam is SpamAssassin's
verdict: score >= required_score (5.0), as spamd's ``Spam: True``.

Rspamd: Debian's stock configuration (``/etc/rspamd/rspamd.conf``, read, not changed) with
``LOCAL_CONFDIR`` pointed at a private dir under WORK whose local.d/override.d files bind the
workers to loopback ports, put Bayes (and every other Redis user) in a private
``redis-server`` on a loopback port, point Rspamd's resolver at a loopback port where
nothing listens, and switch off the modules that ask the network (DNS lists, SPF, DKIM,
DMARC, ARC, ASN, fuzzy hashes, URL redirect following, phishtank) and greylisting/ratelimit
(they need the SMTP envelope and keep state between scans). ``rspamc learn_spam`` /
``learn_ham`` over the train folders, then one ``rspamc --json`` per test message. is_spam =
action in (reject, add header, rewrite subject); "greylist" and "soft reject" (score 4 to
6 in the stock actions) are counted as not spam (the message is delivered to the inbox after
the retry) and reported apart, with the figures they would give counted as spam.

Reported per engine, as JSON (``--out``, default WORK/results.json, also printed): spam
caught %, ham flagged %, the counts, per-message time (median, p95) and the exact versions.
SpamAssassin's time is the ``spamc`` round trip (process start included); Rspamd's is its
own scan time (``time_real`` of the reply) and the ``rspamc`` round trip. ``--jobs`` clients
scan at once (default 1, so the times are per message and not per share of the CPU).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from spam_corpus import (  # bench/ is on the path now
    DEFAULT_CACHE,
    Sample,
    Split,
    fetch_corpus,
    read_message,
    split_corpus,
)

ENGINES = ("spamassassin", "rspamd")
PACKAGES = {
    "spamassassin": {"spamassassin": "spamd", "spamc": "spamc"},
    "rspamd": {"rspamd": "rspamd", "redis-server": "redis-server"},
}
SA_CONFIG = """\
# bench/spam_reference.py: Bayes trained on the corpus's train part only.
use_bayes 1
bayes_path {bayes}/bayes
bayes_auto_learn 0
bayes_auto_expire 0
required_score 5.0
"""
SPAM_ACTIONS = ("reject", "add header", "rewrite subject")
SOFT_ACTIONS = ("greylist", "soft reject")
# Rspamd modules that ask the network (or keep per-sender state between scans): off.
RSPAMD_OFF = (
    "rbl",
    "surbl",
    "emails",
    "spf",
    "dkim",
    "dmarc",
    "arc",
    "asn",
    "fuzzy_check",
    "dcc",
    "url_redirector",
    "greylist",
    "ratelimit",
    "replies",
    "history_redis",
    "neural",
    "reputation",
    "mx_check",
    # With no Hostname from an MTA its only work is a PTR query for the client IP (taken
    # from the first Received field): offline, every message would get RDNS_NONE.
    "once_received",
)
START_TIMEOUT_S = 180.0


@dataclass(frozen=True, slots=True)
class Scored:
    name: str
    is_spam: bool
    flagged: bool
    score: float
    action: str
    wall_ms: float
    scan_ms: float | None
    symbols: tuple[str, ...]


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ensure_packages(engines: Sequence[str]) -> None:
    missing = [
        pkg for e in engines for pkg, binary in PACKAGES[e].items() if not shutil.which(binary)
    ]
    if missing:
        log(f"apt-get install -y {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until 127.0.0.1:``port`` accepts, or fail if ``proc`` exits first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before listening; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} in {START_TIMEOUT_S:.0f} s")


@contextmanager
def daemon(
    cmd: list[str], port: int, what: str, logfile: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` (in the foreground, its own process group), wait for ``port``, and stop
    it (SIGTERM to its group, then SIGKILL) on the way out."""
    log(f"start {what}: {' '.join(cmd)}")
    with logfile.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(port, proc, what)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def write_corpus(split: Split, root: Path) -> tuple[dict[str, Path], list[tuple[Sample, Path]]]:
    """The train part as two folders of files (spam, ham) and the test part as files, all
    with the bytes of :func:`read_message`."""
    if root.exists():
        shutil.rmtree(root)
    folders = {"spam": root / "train" / "spam", "ham": root / "train" / "ham"}
    for f in (*folders.values(), root / "test"):
        f.mkdir(parents=True)
    for s in split.train:
        name = s.name.replace("/", "-")
        (folders["spam" if s.is_spam else "ham"] / name).write_bytes(read_message(s.path))
    test = []
    for s in split.test:
        path = root / "test" / s.name.replace("/", "-")
        path.write_bytes(read_message(s.path))
        test.append((s, path))
    return folders, test


def scan_all(
    test: list[tuple[Sample, Path]], scan: Callable[[Sample, Path], Scored], jobs: int
) -> list[Scored]:
    done: list[Scored] = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for i, result in enumerate(pool.map(lambda t: scan(*t), test), 1):
            done.append(result)
            if i % 200 == 0 or i == len(test):
                log(f"  scanned {i}/{len(test)}")
    return done


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(results: list[Scored]) -> dict[str, Any]:
    spam = [r for r in results if r.is_spam]
    ham = [r for r in results if not r.is_spam]
    caught = sum(r.flagged for r in spam)
    flagged = sum(r.flagged for r in ham)
    out: dict[str, Any] = {
        "test_spam": len(spam),
        "test_ham": len(ham),
        "spam_caught": caught,
        "ham_flagged": flagged,
        "spam_caught_pct": round(100 * caught / len(spam), 2),
        "ham_flagged_pct": round(100 * flagged / len(ham), 2),
        "wall_ms_median": round(statistics.median(r.wall_ms for r in results), 2),
        "wall_ms_p95": round(percentile([r.wall_ms for r in results], 0.95), 2),
        "actions_spam": dict(Counter(r.action for r in spam).most_common()),
        "actions_ham": dict(Counter(r.action for r in ham).most_common()),
        "ham_flagged_names": sorted(r.name for r in ham if r.flagged),
    }
    scans = [r.scan_ms for r in results if r.scan_ms is not None]
    if scans:
        out["scan_ms_median"] = round(statistics.median(scans), 2)
        out["scan_ms_p95"] = round(percentile(scans, 0.95), 2)
    return out


def command_output(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as e:
        return f"({e})"
    return (done.stdout or done.stderr).strip()


def package_version(package: str) -> str:
    return command_output(["dpkg-query", "-W", "-f=${Version}", package])


# SpamAssassin


def run_spamassassin(
    folders: dict[str, Path], test: list[tuple[Sample, Path]], work: Path, jobs: int
) -> dict[str, Any]:
    root = work / "spamassassin"
    if root.exists():
        shutil.rmtree(root)
    site, bayes, home = root / "site", root / "bayes", root / "home"
    for d in (site, bayes, home):
        d.mkdir(parents=True)
    # Debian's site config (plugins, local.cf) read from /etc, plus ours.
    for f in sorted(Path("/etc/spamassassin").iterdir()):
        if f.is_file() and f.suffix in (".pre", ".cf"):
            (site / f.name).symlink_to(f)
    (site / "zz_bench.cf").write_text(SA_CONFIG.format(bayes=bayes))
    env = dict(os.environ, HOME=str(home))
    learn_out = {}
    for cls in ("spam", "ham"):
        log(f"sa-learn --{cls} ({len(list(folders[cls].iterdir()))} files)")
        t0 = time.monotonic()
        done = subprocess.run(
            ["sa-learn", "-L", f"--siteconfigpath={site}", f"--{cls}", str(folders[cls])],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        learn_out[cls] = f"{done.stdout.strip()} ({time.monotonic() - t0:.0f} s)"
        log(f"  {learn_out[cls]}")
    magic = command_output(
        ["sa-learn", "-L", f"--siteconfigpath={site}", "--dump", "magic"],
    )
    port = free_port()
    cmd = [
        "spamd",
        "-L",  # local tests only: no DNS, no network
        "-x",  # no per-user config
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-A",
        "127.0.0.1",
        "-m",
        "2",
        "--min-children=2",
        "--min-spare=1",
        "--max-spare=2",
        f"--siteconfigpath={site}",
        f"--helper-home-dir={home}",
        "-s",
        str(root / "spamd.log"),
        "-r",
        str(root / "spamd.pid"),
    ]
    if os.geteuid() == 0:
        # spamd will not scan as root: give it the state to a user with no rights elsewhere.
        nobody = pwd.getpwnam("nobody")
        for path in (root, *root.rglob("*")):
            os.chown(path, nobody.pw_uid, nobody.pw_gid, follow_symlinks=False)
        cmd += ["-u", "nobody"]

    def scan(sample: Sample, path: Path) -> Scored:
        t0 = time.perf_counter()
        with path.open("rb") as stdin:
            done = subprocess.run(
                ["spamc", "-d", "127.0.0.1", "-p", str(port), "-R", "-x"],
                stdin=stdin,
                capture_output=True,
            )
        wall = (time.perf_counter() - t0) * 1000
        out = done.stdout.decode("utf-8", "replace")
        head = re.match(r"\s*(-?[\d.]+)/(-?[\d.]+)", out)
        if done.returncode not in (0, 1) or head is None:
            raise SystemExit(f"spamc failed on {sample.name}: {done.returncode} {out[:200]!r}")
        score, required = float(head[1]), float(head[2])
        symbols = tuple(re.findall(r"^\s*-?[\d.]+\s+([A-Z][A-Z0-9_]+)\s", out, re.M))
        # SpamAssassin's verdict (spamd's "Spam: True"): score >= required_score.
        flagged = score >= required
        return Scored(
            sample.name,
            sample.is_spam,
            flagged,
            score,
            "spam" if flagged else "ham",
            wall,
            None,
            symbols,
        )

    with daemon(cmd, port, "spamd", root / "spamd.out"):
        log(f"spamc -R on {len(test)} test messages, {jobs} at a time")
        t0 = time.monotonic()
        results = scan_all(test, scan, jobs)
        elapsed = time.monotonic() - t0
    summary = summarise(results)
    summary.update(
        scan_total_s=round(elapsed, 1),
        timing="spamc -R round trip per message (spamc process start included)",
        bayes_learn=learn_out,
        bayes_magic=magic,
        top_symbols_missed_spam=top_symbols([r for r in results if r.is_spam and not r.flagged]),
        versions={
            "spamassassin": command_output(["spamassassin", "--version"]).splitlines()[0],
            "package": package_version("spamassassin"),
            "rules": "Debian package rules in /usr/share/spamassassin (no sa-update)",
        },
        setup=(
            "spamd -L (local tests only: no DNS/RBL/URIBL/Razor/Pyzor/DCC), Bayes trained "
            "with sa-learn on train only, bayes_auto_learn 0, required_score 5.0, 2 children"
        ),
    )
    return summary


def top_symbols(results: list[Scored], n: int = 12) -> dict[str, int]:
    return dict(Counter(s for r in results for s in r.symbols).most_common(n))


# Rspamd


def rspamd_config(root: Path, ports: dict[str, int]) -> Path:
    """The private LOCAL_CONFDIR: ports, Redis, a dead resolver, network modules off."""
    local = root / "etc"
    (local / "local.d").mkdir(parents=True)
    (local / "override.d").mkdir()
    files = {
        "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{ports["normal"]}";\n'
        "count = 1;\n",
        "override.d/worker-controller.inc": (
            f'bind_socket = "127.0.0.1:{ports["controller"]}";\ncount = 1;\n'
            'secure_ip = "127.0.0.1";\n'
        ),
        "override.d/worker-proxy.inc": f'bind_socket = "127.0.0.1:{ports["proxy"]}";\n'
        "count = -1;\n",
        "override.d/worker-fuzzy.inc": f'bind_socket = "127.0.0.1:{ports["fuzzy"]}";\n'
        "count = -1;\n",
        "local.d/redis.conf": f'servers = "127.0.0.1:{ports["redis"]}";\n',
        # Nothing listens there: any DNS query a module still makes fails at once.
        "override.d/options.inc": (
            f'dns {{\n  nameserver = ["127.0.0.1:{ports["dns"]}"];\n'
            "  timeout = 0.5s;\n  retransmits = 1;\n  sockets = 2;\n}\n"
        ),
        "override.d/logging.inc": 'level = "notice";\n',
        "local.d/phishing.conf": "phishtank_enabled = false;\nopenphish_enabled = false;\n",
        # hfilter's HELO, rDNS host name and From host checks are A/MX/PTR queries: off
        # (its URL and recipient checks stay).
        "local.d/hfilter.conf": (
            "helo_enabled = false;\nhostname_enabled = false;\nfrom_enabled = false;\n"
        ),
    }
    for module in RSPAMD_OFF:
        files.setdefault(f"local.d/{module}.conf", "enabled = false;\n")
    for name, text in files.items():
        (local / name).write_text(text)
    return local


def rspamd_log_facts(logfile: Path) -> dict[str, Any]:
    """From Rspamd's log: why learns were refused, and how many scans asked DNS."""
    text = logfile.read_text(errors="replace")
    refused = Counter(
        re.sub(r"<[^>]*> ", "", m) for m in re.findall(r"skip learning: ([^\n]*)", text)
    )
    refused = Counter({re.sub(r"[\d.]+ < \d+", "N < 11", k): v for k, v in refused.items()})
    dns = [int(n) for n in re.findall(r"\(normal\).*dns req: (\d+)", text)]
    return {
        "learn_refused": dict(refused.most_common()),
        "scans_logged": len(dns),
        "scans_with_dns_requests": sum(n > 0 for n in dns),
        "unresolved_map_hosts": sorted(set(re.findall(r"cannot resolve (\S+):", text))),
    }


def run_rspamd(
    folders: dict[str, Path],
    test: list[tuple[Sample, Path]],
    work: Path,
    jobs: int,
    bulk_learn: bool = False,
) -> dict[str, Any]:
    root = work / "rspamd"
    if root.exists():
        shutil.rmtree(root)
    for d in ("redis", "db", "run", "log"):
        (root / d).mkdir(parents=True)
    names = ("normal", "controller", "proxy", "fuzzy", "redis", "dns")
    ports = {name: free_port() for name in names}
    local = rspamd_config(root, ports)
    redis_cmd = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(ports["redis"]),
        "--dir",
        str(root / "redis"),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    rspamd_cmd = [
        "rspamd",
        "-f",
        "-c",
        "/etc/rspamd/rspamd.conf",
        f"--var=LOCAL_CONFDIR={local}",
        f"--var=DBDIR={root / 'db'}",
        f"--var=RUNDIR={root / 'run'}",
        f"--var=LOGDIR={root / 'log'}",
        "-p",
        str(root / "run" / "rspamd.pid"),
    ]
    if os.geteuid() == 0:
        rspamd_cmd.append("-i")  # its files are all under WORK; no other user to switch to
    rspamc_learn = ["rspamc"]
    if bulk_learn:
        # lua_bayes_learn.can_learn skips its "already in class" test for bulk learns.
        rspamc_learn += ["--header", "Learn-Type: bulk"]
    normal = f"127.0.0.1:{ports['normal']}"
    controller = f"127.0.0.1:{ports['controller']}"
    with (
        daemon(redis_cmd, ports["redis"], "redis-server", root / "redis.out"),
        daemon(rspamd_cmd, ports["controller"], "rspamd", root / "rspamd.out") as proc,
    ):
        wait_port(ports["normal"], proc, "rspamd normal worker")
        learn_out = {}
        for cls in ("spam", "ham"):
            files = sorted(str(p) for p in folders[cls].iterdir())
            log(f"rspamc learn_{cls} ({len(files)} files)")
            t0 = time.monotonic()
            done = subprocess.run(
                # One at a time, in sorted order (not the folder's): Rspamd's learn
                # condition depends on what it has learned already.
                [*rspamc_learn, "-h", controller, "-n", "1", f"learn_{cls}", *files],
                capture_output=True,
                text=True,
            )
            ok = done.stdout.count("success = true")
            fail = done.stdout.count("success = false") + done.stdout.count("error")
            learn_out[cls] = f"{ok} learned, {fail} refused ({time.monotonic() - t0:.0f} s)"
            log(f"  {learn_out[cls]}")

        def scan(sample: Sample, path: Path) -> Scored:
            t0 = time.perf_counter()
            done = subprocess.run(
                ["rspamc", "-h", normal, "--json", "symbols", str(path)],
                capture_output=True,
            )
            wall = (time.perf_counter() - t0) * 1000
            text = done.stdout.decode("utf-8", "replace")
            start = text.find("{")
            if done.returncode != 0 or start < 0:
                problem = f"{done.returncode} {text[:200]!r}"
                raise SystemExit(f"rspamc failed on {sample.name}: {problem}")
            reply = json.JSONDecoder().raw_decode(text[start:])[0]
            action = str(reply.get("action", "?"))
            time_real = reply.get("time_real")
            return Scored(
                sample.name,
                sample.is_spam,
                action in SPAM_ACTIONS,
                float(reply.get("score", 0.0)),
                action,
                wall,
                float(time_real) * 1000 if time_real is not None else None,
                tuple(reply.get("symbols", {})),
            )

        log(f"rspamc --json on {len(test)} test messages, {jobs} at a time")
        t0 = time.monotonic()
        results = scan_all(test, scan, jobs)
        elapsed = time.monotonic() - t0
    summary = summarise(results)
    soft = [r for r in results if r.action in SOFT_ACTIONS]
    spam_soft = sum(r.is_spam for r in soft)
    ham_soft = len(soft) - spam_soft
    summary.update(
        scan_total_s=round(elapsed, 1),
        timing=(
            "scan_ms: Rspamd's own time_real per message; wall_ms: rspamc round trip "
            "(rspamc process start included)"
        ),
        counting=(
            "is_spam = action in (reject, add header, rewrite subject); greylist / soft "
            "reject count as not spam"
        ),
        if_greylist_counts_as_spam={
            "spam_caught_pct": round(
                100 * (summary["spam_caught"] + spam_soft) / summary["test_spam"], 2
            ),
            "ham_flagged_pct": round(
                100 * (summary["ham_flagged"] + ham_soft) / summary["test_ham"], 2
            ),
        },
        bayes_learn=learn_out,
        bayes_learn_type="bulk (every message learned)" if bulk_learn else "stock rspamc learn",
        log=rspamd_log_facts(root / "log" / "rspamd.log"),
        top_symbols_missed_spam=top_symbols([r for r in results if r.is_spam and not r.flagged]),
        versions={
            "rspamd": command_output(["rspamd", "--version"]),
            "package": package_version("rspamd"),
            "redis": command_output(["redis-server", "--version"]),
        },
        setup=(
            "stock /etc/rspamd config, private LOCAL_CONFDIR; resolver -> dead loopback port; "
            f"modules off: {', '.join(RSPAMD_OFF)}, phishtank/openphish; Bayes in private Redis"
        ),
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pochta-spam-reference"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--jobs", type=int, default=1, help="messages scanned at once (<= 2)")
    parser.add_argument(
        "--rspamd-bulk-learn",
        action="store_true",
        help="learn with Learn-Type: bulk (Rspamd skips its 'already in class' condition)",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="smoke test: score only the first N test messages"
    )
    a = parser.parse_args()
    engines = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine {', '.join(unknown)}: choose from {', '.join(ENGINES)}")
    if not 1 <= a.jobs <= 2:
        parser.error("--jobs: 1 or 2 (the machine is shared; spamd runs 2 children)")
    ensure_packages(engines)
    split = split_corpus(fetch_corpus(a.cache))
    a.work.mkdir(parents=True, exist_ok=True)
    folders, test = write_corpus(split, a.work / "corpus")
    if a.limit:
        test = test[: a.limit // 2] + test[-(a.limit - a.limit // 2) :]
    report: dict[str, Any] = {
        "split": {
            "train_spam": sum(s.is_spam for s in split.train),
            "train_ham": sum(not s.is_spam for s in split.train),
            "test_spam": sum(s.is_spam for s in split.test),
            "test_ham": sum(not s.is_spam for s in split.test),
        },
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, jobs={a.jobs}",
    }
    for engine in engines:
        log(f"== {engine}")
        if engine == "spamassassin":
            report[engine] = run_spamassassin(folders, test, a.work, a.jobs)
        else:
            report[engine] = run_rspamd(folders, test, a.work, a.jobs, a.rspamd_bulk_learn)
    out = a.out or a.work / "results.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    brief = {e: {k: v for k, v in report[e].items() if k != "ham_flagged_names"} for e in engines}
    print(json.dumps({"split": report["split"], **brief}, indent=2))
    log(f"full report: {out}")


if __name__ == "__main__":
    main()
