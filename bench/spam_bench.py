"""Inbound SMTP with the spam filter on and off, in the same run (issue 15's benchmark).

    .venv/bin/python bench/spam_bench.py [--n 3000] [--concurrency 10] [--reps 3]
                                         [--train 1000] [--work DIR] [--out FILE]

What it measures: a fresh ``pochta serve`` (its default processes) receives N messages of
the SpamAssassin corpus's test part (bench/spam_corpus.py; ham and spam as they come) on its
MX port, one message per connection from C concurrent clients, once with ``[spam] enabled =
false`` and once with ``true``; on and off alternate. The mail checks (SPF, DKIM, DMARC) are
on in both modes, answered by a DNS server on loopback (tests/dnsserver.py) that also serves
the blocklist zones (nothing is listed there, so every blocklist lookup is a cached NXDOMAIN,
as behind a local caching resolver). Bayes is trained first with ``--train`` messages of the
corpus's training part, half spam and half ham, through ``pochta spam learn``. Greylisting is
off in both modes: a greylisted message would be answered 451 and retried, which measures the
client, not the filter.

Reported per mode, as bench/auth_bench.py does: accepted msgs/s and the server's CPU seconds
per message; the summary gives the medians, the on/off throughput ratio (the issue's target:
at least 0.80) and the CPU the filter adds per message (the issue's budget: 4 ms median).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import auth_bench  # noqa: E402  (bench/ is on the path now)
import spam_corpus  # noqa: E402
from tests.dnsserver import ZoneServer  # noqa: E402

USERS = auth_bench.USERS

# The SOA makes the NXDOMAIN answers cacheable (RFC 2308 §5), as a blocklist's are.
ZONE = f"""
. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300
{auth_bench.SENDER_DOMAIN}. 3600 IN TXT "v=spf1 ip4:127.0.0.1 -all"
client.{auth_bench.SENDER_DOMAIN}. 3600 IN A 127.0.0.1
1.0.0.127.in-addr.arpa. 3600 IN PTR client.{auth_bench.SENDER_DOMAIN}.
"""


def corpus_messages(n: int) -> list[tuple[str, bytes]]:
    """N (recipient, message) pairs from the corpus's test part, repeated when N is larger."""
    data = spam_corpus.fetch_corpus()
    test = spam_corpus.split_corpus(data).test
    out = []
    for i in range(n):
        sample = test[i % len(test)]
        content = spam_corpus.read_message(sample.path)
        if not content.endswith(b"\r\n"):
            content += b"\r\n"
        # RFC 5321 §4.5.2: the load generator sends DATA as is, so stuff the dots here.
        content = re.sub(rb"(?m)^\.", b"..", content)
        out.append((f"user{i % USERS + 1}@example.test", content))
    return out


def train(template: Path, count: int) -> None:
    """Teach the template's Bayes ``count`` training messages, half of each class."""
    if count <= 0 or (template / ".trained").exists():
        return
    data = spam_corpus.fetch_corpus()
    split = spam_corpus.split_corpus(data)
    config = template / "pochta.toml"
    for is_spam, flag in ((True, "--spam"), (False, "--ham")):
        paths = [str(s.path) for s in split.train if s.is_spam == is_spam][: count // 2]
        subprocess.run(
            [*auth_bench.POCHTA, "--config", str(config), "spam", "learn", flag, *paths],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    (template / ".trained").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/pochta-spam-bench"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="a setting for both modes, e.g. dnsbl.enabled=false (repeatable)",
    )
    a = parser.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    template = a.work / "template"
    auth_bench.build_template(template)
    train(template, a.train)
    messages = corpus_messages(a.n)
    with ZoneServer(ZONE, origin=".") as zone:
        settings: tuple[tuple[str, str, str], ...] = (
            ("mailauth", "check_incoming", "true"),
            ("greylist", "enabled", "false"),
        )
        for item in a.set:
            key, _, value = item.partition("=")
            table, _, name = key.partition(".")
            settings += ((table, name, value),)
        runs = auth_bench.alternating(
            lambda on: auth_bench.one_run(
                template,
                a.work,
                on,
                zone.address,
                messages,
                a.concurrency,
                toggle=("spam", "enabled"),
                settings=settings,
            ),
            a.reps,
        )
    summary: dict[str, object] = {
        "n": a.n,
        "concurrency": a.concurrency,
        "train": a.train,
        "set": a.set,
        **auth_bench.summarize(runs, "filter_cpu_ms_per_msg"),
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        a.out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
