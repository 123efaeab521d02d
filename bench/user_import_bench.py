"""How fast does `pochta user import` create accounts, pre-hashed and plaintext?

Run:  .venv/bin/python bench/user_import_bench.py [--hashed N] [--plain N] [--add N] [--pools N]

In a fresh `pochta init` data dir under a temporary folder, times the real command (a new
process, as an admin runs it) on:

- N pre-hashed entries in Dovecot passwd-file lines (``{SHA512-CRYPT}`` from
  /work/shared/testdata/password-hashes, kept as they are: no hashing), default 1000;
- N plaintext ``address:password`` entries (Argon2id + SCRAM-SHA-256 each, spread over the
  cores), default 100;
- for comparison, N calls of `pochta user add --password-stdin`, default 5 (0 skips it);
- with ``--pools N``: N passwords hashed one by one, on a thread pool and on a process pool
  (one worker per core), to choose how `hash_entries` spreads the work.

Wall time, not CPU time; the machine may be shared, so run it a few times. The last line of
output is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from pochta.directory.account_import import hash_workers

TESTDATA = Path("/work/shared/testdata/password-hashes/dovecot-2.3.19-doveadm-pw.tsv")
DOMAIN = "bench.test"


def _sha512_crypt() -> str:
    for row in TESTDATA.read_text().splitlines():
        if row.startswith("SHA512-CRYPT\t"):
            return row.split("\t")[1]
    raise SystemExit(f"no SHA512-CRYPT line in {TESTDATA}")


def _pochta(config: Path, *args: str, stdin: str | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "POCHTA_CONFIG"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pochta", "--config", str(config), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pochta {' '.join(args)} failed: {proc.stderr}")
    return elapsed


def _hash(password: str) -> tuple[str, str]:
    from pochta.directory.passwords import hash_password, make_scram_sha256

    return hash_password(password), make_scram_sha256(password)


def _pools(count: int) -> dict[str, float]:
    passwords = [f"Pool-pw-{i}" for i in range(count)]
    out: dict[str, float] = {}
    start = time.perf_counter()
    for p in passwords:
        _hash(p)
    out["serial_s"] = time.perf_counter() - start
    pools: dict[str, Executor] = {
        "threads_s": ThreadPoolExecutor(hash_workers()),
        "processes_s": ProcessPoolExecutor(hash_workers()),
    }
    for name, pool in pools.items():
        start = time.perf_counter()
        with pool:
            list(pool.map(_hash, passwords))
        out[name] = time.perf_counter() - start
    return out


def run(hashed: int, plain: int, add: int, pools: int) -> dict[str, float | int]:
    result: dict[str, float | int] = {"cores": hash_workers()}
    with tempfile.TemporaryDirectory(prefix="pochta-import-bench-") as tmp:
        data = Path(tmp) / "data"
        init = subprocess.run(
            [
                *(sys.executable, "-m", "pochta", "init", "--data", str(data)),
                *("--hostname", f"mail.{DOMAIN}", "--domain", DOMAIN, "--bind", "127.0.0.1"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if init.returncode != 0:
            raise SystemExit(f"pochta init failed: {init.stderr}")
        config = data / "pochta.toml"
        value = _sha512_crypt()
        if hashed:
            lines = "".join(f"h{i}@{DOMAIN}:{value}\n" for i in range(hashed))
            seconds = _pochta(config, "user", "import", "-", stdin=lines)
            result.update(hashed=hashed, hashed_s=seconds, hashed_per_s=hashed / seconds)
        if plain:
            lines = "".join(f"p{i}@{DOMAIN}:Plain-pw-{i}\n" for i in range(plain))
            seconds = _pochta(config, "user", "import", "-", stdin=lines)
            result.update(plain=plain, plain_s=seconds, plain_per_s=plain / seconds)
        if add:
            start = time.perf_counter()
            for i in range(add):
                _pochta(
                    config, "user", "add", f"a{i}@{DOMAIN}", "--password-stdin", stdin="Add-pw-1\n"
                )
            result.update(add=add, add_s_per_call=(time.perf_counter() - start) / add)
    if pools:
        result.update(pools=pools, **_pools(pools))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hashed", type=int, default=1000)
    parser.add_argument("--plain", type=int, default=100)
    parser.add_argument("--add", type=int, default=5)
    parser.add_argument("--pools", type=int, default=0)
    args = parser.parse_args()
    result = run(args.hashed, args.plain, args.add, args.pools)
    for key, value in result.items():
        print(f"{key:>16} {value:.3f}" if isinstance(value, float) else f"{key:>16} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
