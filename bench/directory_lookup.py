"""How fast is an account lookup in the SQLite directory at 100,000 accounts?

Run:  .venv/bin/python bench/directory_lookup.py [--accounts N] [--domains N] [--lookups N]

Creates a directory in a temporary folder with N accounts spread over the domains (inserted with
``add_accounts_bulk``, one precomputed hash for all: hashing is not what is measured), then
times random ``get_account`` calls the way the SMTP server makes them: the address arrives in
mixed case and is normalised with ``normalize_address`` first; 10% of the lookups miss.
The last line of output is JSON with median / p99 / mean in microseconds. Target: median < 1 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pochta.directory.addresses import normalize_address
from pochta.directory.model import Account
from pochta.directory.sqlite import SqliteDirectory

# Any syntactically valid stored hash: lookups never verify it.
HASH = (
    "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$YmVuY2hzYWx0YmVuY2g$YmVuY2hoYXNoYmVuY2hoYXNoYmVuY2g"
)


def mixed_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


def run(accounts: int, domains: int, lookups: int, seed: int) -> dict[str, float | int]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="pochta-bench-") as tmp:
        directory = SqliteDirectory(Path(tmp) / "directory.sqlite3")
        names = [f"domain{d}.example" for d in range(domains)]
        for name in names:
            directory.add_domain(name)
        addresses = [f"user{i}@{names[i % domains]}" for i in range(accounts)]
        started = time.perf_counter()
        directory.add_accounts_bulk(
            Account(address=a, password_hash=HASH, quota_bytes=1 << 30) for a in addresses
        )
        insert_seconds = time.perf_counter() - started

        queries: list[tuple[str, bool]] = []
        for _ in range(lookups):
            if rng.random() < 0.10:
                queries.append((f"nobody{rng.randrange(accounts)}@{rng.choice(names)}", False))
            else:
                queries.append((rng.choice(addresses), True))
        queries = [(mixed_case(rng, q), hit) for q, hit in queries]

        for q, _ in queries[:200]:  # warm the page cache and the statement cache
            directory.get_account(normalize_address(q))

        samples: list[float] = []  # normalise + look up, as the server does
        lookup_only: list[float] = []  # the get_account call alone
        clock = time.perf_counter_ns
        for query, hit in queries:
            t0 = clock()
            address = normalize_address(query)
            t1 = clock()
            found = directory.get_account(address)
            t2 = clock()
            samples.append((t2 - t0) / 1000)
            lookup_only.append((t2 - t1) / 1000)
            if (found is not None) != hit:
                raise SystemExit(f"wrong answer for {query!r}")
        size = (Path(tmp) / "directory.sqlite3").stat().st_size
        directory.close()

    samples.sort()
    return {
        "accounts": accounts,
        "domains": domains,
        "lookups": lookups,
        "miss_ratio": 0.10,
        "insert_seconds": round(insert_seconds, 2),
        "db_bytes": size,
        "median_us": round(statistics.median(samples), 1),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1], 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "max_us": round(samples[-1], 1),
        "get_account_median_us": round(statistics.median(lookup_only), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    result = run(args.accounts, args.domains, args.lookups, args.seed)
    print(
        f"{result['accounts']} accounts over {result['domains']} domains, inserted in "
        f"{result['insert_seconds']} s ({result['db_bytes'] / 1e6:.1f} MB)",
        file=sys.stderr,
    )
    print(json.dumps(result))
    return 0 if result["median_us"] < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
