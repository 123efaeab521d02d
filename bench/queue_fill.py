"""Fill a stopped pochta's queue with N messages for remote recipients (outbound benchmark).

Run:  .venv/bin/python bench/queue_fill.py CONFIG N [--size 4096] [--domain remote.test]

Each message goes from ``bench@<first hosted domain>`` to ``rcptI@DOMAIN`` and is written
with the spool's own ``enqueue`` (durable, as the SMTP server queues it). The recipients are
not routed here: the queue manager resolves them at the first attempt, as it does for mail
from ``pochta sendmail``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pochta.checks import load_checked_settings
from pochta.logs import configure_logging
from pochta.queue.envelope import Envelope, Recipient
from pochta.queue.spool import Spool


def message(i: int, size: int, sender: str, to: str) -> bytes:
    head = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: outbound benchmark {i}\r\n"
        f"Message-ID: <bench-{i}-{time.time_ns()}@bench.invalid>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(1, (size - len(head)) // len(line))
    return head + body


async def fill(config: str, count: int, size: int, domain: str) -> None:
    settings = load_checked_settings(config)
    spool = Spool(settings.spool_dir)
    sender = f"bench@{settings.server.hostname.partition('.')[2] or 'example.test'}"
    try:
        for start in range(0, count, 100):
            await asyncio.gather(
                *(
                    spool.enqueue(
                        Envelope("", sender, [Recipient(f"rcpt{i}@{domain}")], time.time(), 0),
                        message(i, size, sender, f"rcpt{i}@{domain}"),
                    )
                    for i in range(start, min(count, start + 100))
                )
            )
    finally:
        spool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("count", type=int)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--domain", default="remote.test")
    args = parser.parse_args()
    configure_logging("logfmt", "warning")
    asyncio.run(fill(args.config, args.count, args.size, args.domain))


if __name__ == "__main__":
    main()
