"""How many 4 KiB messages per second does the Maildir store take, durably?

Run:  .venv/bin/python bench/store_deliver.py [--messages N] [--dir PATH] [--no-fsync]

Four runs: into one account and spread over 100 accounts, from 1 and from 4 threads (the
delivery agent calls ``deliver`` from worker threads). Every delivery is durable as the server
uses it: file fsync, directory fsync, index commit with synchronous=FULL, before it returns;
concurrent deliveries to one account share the directory fsync and the commit (group commit).
Accounts are created before the clock starts (the first delivery makes the folders). Each
message carries a dedupe key, as the queue sends them.

The last line of output is JSON: deliveries per second and p50/p99 latency per run.
``--dir`` should be on the disk the mail will live on (the default is a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from pochta.store.maildir import MaildirStore

MESSAGE_SIZE = 4096


def message(n: int) -> bytes:
    head = (
        f"Return-Path: <sender@example.org>\r\nDelivered-To: user@example.test\r\n"
        f"From: sender@example.org\r\nTo: user@example.test\r\nSubject: bench {n}\r\n"
        f"Message-ID: <{n}@example.org>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * ((MESSAGE_SIZE - len(head)) // len(line))
    return head + body + b"." * (MESSAGE_SIZE - len(head) - len(body))


def run(
    base: Path, *, accounts: int, threads: int, messages: int, durable: bool
) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"store-{accounts}a-{threads}t-", dir=base))
    store = MaildirStore(root, hostname="bench.example.test", durable=durable)
    addresses = [f"user{i}@example.test" for i in range(accounts)]
    for address in addresses:  # create the mailboxes outside the measurement
        store.deliver(address, b"Subject: warm-up\r\n\r\n", dedupe_key=f"warm {address}")
    payloads = [message(i) for i in range(64)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        mine = latencies[t]
        barrier.wait()
        for i in range(t, messages, threads):
            address = addresses[i % accounts]
            started = time.perf_counter()
            store.deliver(address, payloads[i % 64], dedupe_key=f"Q{i} {address}")
            mine.append(time.perf_counter() - started)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    delivered = sum(store.quota_usage(a).messages for a in addresses) - accounts
    store.close()
    if delivered != messages:
        raise SystemExit(f"delivered {delivered} of {messages} messages")
    flat = sorted(x for per in latencies for x in per)
    return {
        "accounts": accounts,
        "threads": threads,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(messages / elapsed, 1),
        "p50_ms": round(statistics.median(flat) * 1000, 2),
        "p99_ms": round(flat[int(len(flat) * 0.99) - 1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="deliveries per run")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the mailboxes")
    parser.add_argument("--no-fsync", action="store_true", help="measure without fsync")
    args = parser.parse_args()
    durable = not args.no_fsync
    with tempfile.TemporaryDirectory(prefix="pochta-bench-", dir=args.dir) as tmp:
        results = []
        for accounts in (1, 100):
            for threads in (1, 4):
                result = run(
                    Path(tmp),
                    accounts=accounts,
                    threads=threads,
                    messages=args.messages,
                    durable=durable,
                )
                print(
                    f"{accounts:>3} account(s), {threads} thread(s): "
                    f"{result['deliveries_per_second']:>8} deliveries/s  "
                    f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms",
                    file=sys.stderr,
                )
                results.append(result)
    print(
        json.dumps(
            {
                "benchmark": "store_deliver",
                "message_bytes": MESSAGE_SIZE,
                "fsync": durable,
                "cpus": os.cpu_count(),
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
