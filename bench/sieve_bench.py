"""Local delivery with Sieve off, on without scripts, and on with a script per user.

    .venv/bin/python bench/sieve_bench.py [--n 3000] [--concurrency 10] [--reps 3]
                                          [--work DIR] [--out FILE]

What it measures: a fresh ``pochta serve`` (its default processes) receives N 4 KiB messages
on its MX port (one per connection, C concurrent clients) for the 10 users of
bench/auth_bench.py's data dir, and the clock runs until every message is in a mailbox
(files in the users' Maildir ``new/`` and ``cur/``, subfolders included). Three modes, their
order turned each repetition: ``off`` (``[sieve] enabled = false``), ``empty`` (Sieve on, no
user has a script: the cost of asking for one) and ``script`` (every user's active script
is SCRIPT below: twelve rules on List-Id, From, Subject and the body, imap4flags, a
variable, and the messages filed into five folders). The mail checks and the spam filter are
off in every mode, so the figures are delivery's. Reported per mode: delivered msgs/s and
the server's CPU milliseconds per message (server and workers, from /proc), medians over the
repetitions, and the ratios to ``off``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import auth_bench  # noqa: E402  (bench/ is on the path now)
from tests.dnsserver import ZoneServer  # noqa: E402
from tests.factories import make_rsa_dkim_key  # noqa: E402

from pochta.sieve.scripts import ScriptStore  # noqa: E402

MODES = ("off", "empty", "script")

# The server's DNS (the client's name at connect) answered on loopback, never the host's.
ZONE = f"""
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
client.{auth_bench.SENDER_DOMAIN}. 3600 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 3600 IN PTR client.{auth_bench.SENDER_DOMAIN}.
"""

SCRIPT = """require ["fileinto", "mailbox", "imap4flags", "variables", "body", "relational",
    "regex", "comparator-i;ascii-numeric"];
if header :contains "list-id" "<announce.lists.example>" {
    fileinto :create "Lists.Announce";
    stop;
}
if header :contains "list-id" "<dev.lists.example>" { fileinto :create "Lists.Dev"; stop; }
if address :is :domain "from" ["bank.example", "shop.example"] {
    addflag "$Important"; fileinto :create "Money"; stop;
}
if header :matches "subject" "[*] *" { set "tag" "${1}"; }
if string :is "${tag}" "urgent" { addflag "\\\\Flagged"; }
if header :regex "subject" "^(re|fwd?):" { addflag "$Reply"; }
if size :over 500K { fileinto :create "Big"; stop; }
if allof (header :contains "subject" "bench", body :text :contains "signature") {
    fileinto :create "Bench";
    stop;
}
if header :value "ge" :comparator "i;ascii-numeric" "x-priority" "4" { fileinto :create "Low"; }
if exists "x-mailer" { addflag "$Mailer"; }
"""


def count_delivered(mail_dir: Path) -> int:
    """Message files in every Maildir new/ and cur/ below ``mail_dir``."""
    total = 0
    for root, dirs, files in os.walk(mail_dir):
        if os.path.basename(root) in ("new", "cur"):
            total += len(files)
            dirs[:] = []
    return total


def prepare(template: Path) -> None:
    auth_bench.build_template(template)
    config = template / "pochta.toml"
    for table, key, value in (
        ("mailauth", "check_incoming", "false"),
        ("spam", "enabled", "false"),
        ("greylist", "enabled", "false"),
    ):
        auth_bench.set_key(config, table, key, value)


def one_run(
    template: Path,
    work: Path,
    mode: str,
    messages: list[tuple[str, bytes]],
    c: int,
    nameserver: str,
) -> dict[str, float | str]:
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(template, data, symlinks=True)
    config = data / "pochta.toml"
    config.write_text(config.read_text().replace(str(template), str(data)))
    auth_bench.set_key(config, "sieve", "enabled", "false" if mode == "off" else "true")
    auth_bench.set_key(config, "dns", "nameservers", f'["{nameserver}"]')
    if mode == "script":
        store = ScriptStore(data / "sieve", data / "sieve-global")
        for i in range(1, auth_bench.USERS + 1):
            store.put(f"user{i}@example.test", "rules", SCRIPT)
            store.set_active(f"user{i}@example.test", "rules")
    port = auth_bench.smtp_port(config)
    with auth_bench.serving(config, work / f"serve-{mode}.log") as proc:
        cpu0 = auth_bench.cpu_seconds(proc.pid)
        start = time.monotonic()
        sent = asyncio.run(auth_bench.load(port, messages, c))
        deadline = time.monotonic() + 600
        while count_delivered(data / "mail") < sent["accepted"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"{mode}: not every message was delivered in 10 minutes")
            time.sleep(0.05)
        seconds = time.monotonic() - start
        cpu = auth_bench.cpu_seconds(proc.pid) - cpu0
    n = len(messages)
    return {
        "mode": mode,
        "accepted": sent["accepted"],
        "failed": sent["failed"],
        "delivered_per_s": sent["accepted"] / seconds,
        "cpu_ms_per_msg": 1000 * cpu / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pochta-sieve-bench"))
    parser.add_argument("--out", type=Path, default=None)
    a = parser.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    template = a.work / "template"
    prepare(template)
    messages = auth_bench.make_messages(a.n, 4096, make_rsa_dkim_key()[0])
    runs: list[dict[str, float | str]] = []
    with ZoneServer(ZONE, origin=".") as zone:
        for rep in range(a.reps):
            order = MODES[rep % 3 :] + MODES[: rep % 3]
            for mode in order:
                result = one_run(template, a.work, mode, messages, a.concurrency, zone.address)
                result["rep"] = rep
                runs.append(result)
                print(json.dumps(result), flush=True)
    summary: dict[str, float | int] = {"n": a.n, "concurrency": a.concurrency}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        summary[f"{mode}_delivered_per_s"] = statistics.median(
            float(r["delivered_per_s"]) for r in mine
        )
        summary[f"{mode}_cpu_ms_per_msg"] = statistics.median(
            float(r["cpu_ms_per_msg"]) for r in mine
        )
    for mode in MODES[1:]:
        summary[f"{mode}_ratio"] = (
            summary[f"{mode}_delivered_per_s"] / summary["off_delivered_per_s"]
        )
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
