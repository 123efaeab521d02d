"""How many STOREs (flag changes) per second does the Maildir store take, durably, and what
does each cost in commits and directory fsyncs?

Run:  .venv/bin/python bench/store_flags.py [--stores N] [--messages M] [--dir PATH]

One account with M messages in INBOX (delivered before the clock starts), then N STOREs
(+FLAGS \\Seen, then -FLAGS \\Seen, one message each, as an IMAP client marks mail read and
unread) from 1 and from 4 threads, as IMAP sessions of one account call ``store_flags``
from their worker threads. Every STORE is durable as the server uses it: the index commit
at synchronous=FULL before it returns. Counted (by wrapping the store's calls, so the same
script measures any version of the store): index commits and directory fsyncs per STORE;
then the store is closed (which does any file renames still owed) and the renames at close
are counted too. Also the per-command check of an IMAP session with nothing changed
(``folder_changes`` with ``quick=True``): calls per second and index reads per call.

The last line of output is JSON. ``--dir`` should be on the disk the mail will live on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pochta.store import INBOX, FlagMode
from pochta.store import maildir as maildir_module
from pochta.store.index import AccountIndex
from pochta.store.maildir import MaildirStore

ADDRESS = "user@example.test"
SEEN = frozenset({"\\Seen"})


class Counts:
    def __init__(self) -> None:
        self.commits = 0
        self.reads = 0
        self.dir_fsyncs = 0
        self.lock = threading.Lock()
        real_write, real_read = AccountIndex.write, AccountIndex.read
        real_fsync_dir = maildir_module.fsync_dir
        counts = self

        @contextlib.contextmanager
        def write(index: AccountIndex) -> Iterator[object]:
            with real_write(index) as conn:
                yield conn
            with counts.lock:
                counts.commits += 1

        @contextlib.contextmanager
        def read(index: AccountIndex) -> Iterator[object]:
            with counts.lock:
                counts.reads += 1
            with real_read(index) as conn:
                yield conn

        def fsync_dir(path: Path | str) -> None:
            with counts.lock:
                counts.dir_fsyncs += 1
            real_fsync_dir(path)

        AccountIndex.write = write  # type: ignore[method-assign,assignment]
        AccountIndex.read = read  # type: ignore[method-assign,assignment]
        maildir_module.fsync_dir = fsync_dir

    def take(self) -> tuple[int, int, int]:
        with self.lock:
            got = (self.commits, self.reads, self.dir_fsyncs)
            self.commits = self.reads = self.dir_fsyncs = 0
        return got


def run(
    base: Path, *, threads: int, stores: int, messages: int, counts: Counts
) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix=f"flags-{threads}t-", dir=base))
    store = MaildirStore(root, hostname="bench.example.test")
    for i in range(messages):
        store.deliver(ADDRESS, b"Subject: m %d\r\n\r\nbody\r\n" % i)
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        mine = latencies[t]
        barrier.wait()
        for i in range(t, stores, threads):
            uid = 1 + (i // 2) % messages
            mode = FlagMode.ADD if i % 2 == 0 else FlagMode.REMOVE
            started = time.perf_counter()
            store.store_flags(ADDRESS, INBOX, [uid], mode, SEEN)
            mine.append(time.perf_counter() - started)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    counts.take()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    commits, _, dir_fsyncs = counts.take()
    # The per-command check of an IMAP session when nothing changed.
    top = store.folder_changes(ADDRESS, INBOX, 0).highestmodseq
    counts.take()
    checks = 2000
    t0 = time.perf_counter()
    for _ in range(checks):
        store.folder_changes(ADDRESS, INBOX, top, quick=True)
    check_seconds = time.perf_counter() - t0
    _, check_reads, _ = counts.take()
    store.close()
    close_commits, _, close_fsyncs = counts.take()
    flat = sorted(x for per in latencies for x in per)
    return {
        "threads": threads,
        "stores": stores,
        "seconds": round(elapsed, 3),
        "stores_per_second": round(stores / elapsed, 1),
        "p50_ms": round(statistics.median(flat) * 1000, 2),
        "p99_ms": round(flat[int(len(flat) * 0.99) - 1] * 1000, 2),
        "commits_per_store": round(commits / stores, 3),
        "dir_fsyncs_per_store": round(dir_fsyncs / stores, 3),
        "at_close": {"commits": close_commits, "dir_fsyncs": close_fsyncs},
        "quick_checks_per_second": round(checks / check_seconds),
        "index_reads_per_quick_check": round(check_reads / checks, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=1000, help="STOREs per run")
    parser.add_argument("--messages", type=int, default=200, help="messages in the folder")
    parser.add_argument("--dir", type=Path, default=None, help="where to create the mailbox")
    args = parser.parse_args()
    counts = Counts()
    with tempfile.TemporaryDirectory(prefix="pochta-bench-", dir=args.dir) as tmp:
        results = []
        for threads in (1, 4):
            result = run(
                Path(tmp),
                threads=threads,
                stores=args.stores,
                messages=args.messages,
                counts=counts,
            )
            print(
                f"{threads} thread(s): {result['stores_per_second']:>8} STOREs/s  "
                f"p50 {result['p50_ms']} ms  commits/STORE {result['commits_per_store']}  "
                f"dir fsyncs/STORE {result['dir_fsyncs_per_store']}  "
                f"quick checks/s {result['quick_checks_per_second']} "
                f"(index reads each {result['index_reads_per_quick_check']})",
                file=sys.stderr,
            )
            results.append(result)
    print(json.dumps({"benchmark": "store_flags", "cpus": os.cpu_count(), "runs": results}))


if __name__ == "__main__":
    main()
