"""How many durable enqueues per second, and how many fsyncs does each cost?

Run:  .venv/bin/python bench/queue_enqueue.py [--messages N] [--concurrency 1,10,50]
                                             [--size 4096] [--window-ms 0] [--dir PATH]

For each concurrency level C, a fresh spool in a temporary folder under --dir (default: the
system temp dir; put it on the disk you will run on — tmpfs makes fsync free) receives N
messages of --size bytes from C concurrent writers, each doing exactly what the SMTP server
does before it answers 250: ``await spool.enqueue(envelope, content)`` (write + fsync the
one file of envelope and content, link it into incoming/, fsync incoming/: at once in the
writing thread when no other fsync runs, else via group commit). The spool's pool/ of
recycled files stays empty here (nothing is delivered), so every enqueue takes that path.

Printed per level: enqueues per second, median and p99 latency of one enqueue, and fsyncs per
message — file fsyncs (always 1; they cannot be shared) and directory fsyncs (1 per batch,
incoming/, shared by the whole batch; a lone writer's batch is its own). The last line is
JSON with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pochta.logs import configure_logging
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.spool import Spool


def make_content(size: int) -> bytes:
    head = b"From: bench@example.org\r\nTo: rcpt@example.test\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[:size]


async def run_level(
    root: Path, messages: int, concurrency: int, content: bytes, window_seconds: float
) -> dict[str, float | int]:
    spool = Spool(root, commit_window_seconds=window_seconds, io_threads=max(4, concurrency))
    latencies: list[float] = []
    remaining = iter(range(messages))

    async def writer() -> None:
        for _ in remaining:
            envelope = Envelope(
                "", "bench@example.org", [Recipient("rcpt@example.test")], time.time(), 0
            )
            t0 = time.perf_counter()
            await spool.enqueue(envelope, content)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    counters = spool.counters
    spool.close()
    latencies.sort()
    return {
        "concurrency": concurrency,
        "messages": messages,
        "seconds": round(elapsed, 3),
        "enqueues_per_second": round(messages / elapsed, 1),
        "median_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
        "file_fsyncs_per_message": round(counters.file_fsyncs / messages, 3),
        "dir_fsyncs_per_message": round(counters.dir_fsyncs / messages, 3),
        "messages_per_batch": round(messages / max(1, counters.batches), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--window-ms", type=float, default=0.0)
    parser.add_argument("--dir", default=None, help="Where the temporary spools go.")
    args = parser.parse_args(argv)
    configure_logging("logfmt", "warning")  # no "queued" line per message
    content = make_content(args.size)
    results = []
    for level in (int(c) for c in args.concurrency.split(",")):
        with tempfile.TemporaryDirectory(prefix="pochta-bench-", dir=args.dir) as tmp:
            result = asyncio.run(
                run_level(Path(tmp) / "queue", args.messages, level, content, args.window_ms / 1000)
            )
        results.append(result)
        print(
            f"concurrency {level:>3}: {result['enqueues_per_second']:>8} enqueues/s  "
            f"median {result['median_ms']} ms  p99 {result['p99_ms']} ms  "
            f"fsyncs/msg: file {result['file_fsyncs_per_message']} "
            f"dir {result['dir_fsyncs_per_message']}  "
            f"({result['messages_per_batch']} msgs/batch)",
            file=sys.stderr,
        )
    print(json.dumps({"size": args.size, "window_ms": args.window_ms, "levels": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
