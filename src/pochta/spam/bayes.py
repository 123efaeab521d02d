"""The Bayes classifier of the spam filter: tokens of a message, and their combination.

Pure: no I/O. :func:`tokenize` turns a :class:`~pochta.spam.message.ScanMessage` into a set
of tokens, :func:`token_hash` into the 64-bit integers the store keeps
(``spam/bayes_store.py``), and :func:`spam_probability` combines the learned counts of a
message's tokens into one probability that it is spam. :class:`BayesCheck` is the check
(``spam/check.py``) that reads the counts from a :class:`TokenSource` and gives
``BAYES_SPAM`` or ``BAYES_HAM``.

**Tokens** (SpamBayes' tokenizer, simplified): every word of the text parts (HTML as its
visible text) lower-cased, 3 to 12 characters; a longer word gives ``skip:`` + its first
character + its length in tens (as SpamBayes), or its parts when it is an address; the
words of the Subject; for From, To, Cc, Reply-To, Sender and Return-Path the addresses'
domains and their parents, local parts and display-name words (and how many addresses To
and Cc have, as a power of 2); the host names of links and every parent domain
(``url:example.com``) and the words of their paths (``url:/order``); a few header fields
whole (X-Mailer, User-Agent, Content-Type, charsets, transfer encodings) and the
Content-Type parameters; the Message-ID's domain and the shape of its left part and of
the MIME boundary (runs of digits and letters reduced: what the sending software writes);
the names of the header fields present (``header:x-mailer``); the host names (and parents)
and the /8, /16 and /24 prefixes of the IPv4 addresses of the ``Received`` fields; the
share of 8-bit characters in tens of per cent. Each message gives each token once, at
most :data:`MAX_TOKENS` of them, from at most :data:`MAX_TEXT_CHARS` characters of text.

**Combination** (Gary Robinson's, as SpamBayes and SpamAssassin do it):

1. per token, with ``s``/``h`` the spam/ham messages it was seen in and ``S``/``H`` the
   spam/ham messages learned, ``p = (s/S) / (s/S + h/H)`` (the counts are scaled by the
   class sizes, so an unbalanced training does not bias it), then Robinson's correction
   towards the unknown-word probability ``x`` with strength ``s_c`` for rare tokens:
   ``f = (s_c·x + n·p) / (s_c + n)`` with ``n = s + h``;
2. only tokens with ``|f − 0.5| ≥`` :data:`MIN_PROB_STRENGTH` count, at most the
   :data:`MAX_DISCRIMINATORS` strongest, of which at most :data:`MAX_HEADER_CLUES` header
   tokens (the header fields' tokens are many and correlated: a mailing list's dozen
   fields and hosts would otherwise outvote the body of a spam sent through the list);
3. Fisher's method combines them: ``H = C⁻¹(−2 Σ ln f, 2N)`` and
   ``S = C⁻¹(−2 Σ ln(1 − f), 2N)`` with ``C⁻¹`` the chi-square survival function,
   and the probability is ``(1 + H − S) / 2`` (SpamBayes' ``chi2_spamprob``);
4. within :data:`UNSURE_BAND` of 0.5 chi-square cannot tell: that is where strong spam and
   strong ham clues are both many (a spam quoting news or a product list, a newsletter)
   and ``H`` and ``S`` are both near 1. There the message is ordered by Robinson's
   geometric means of the same clues, ``P = 1 − (Π(1 − f))^(1/N)`` and
   ``Q = 1 − (Π f)^(1/N)``: the probability is ``0.5 + band · (P − Q) / (P + Q)``, still
   inside the band, so it decides only where chi-square is unsure (and only by as much as
   the score curve gives the band).

The constants and the score curve (``[bayes]`` defaults) were chosen by 10-fold
cross-validation inside the corpus' training part only (``bench/spam_accuracy.py --cv``,
which runs the whole scanner per fold, so the heuristics' symbols add to Bayes' as in the
mail system), as the most spam caught with at most 0.1% of the ham flagged at the junk
threshold. First round: over ``unknown_word_strength`` ∈ {0.1, 0.45, 1},
``minimum_prob_strength`` ∈ {0.1, 0.3}, ``max_discriminators`` ∈ {150, 400} and the
curves: 0.1, 0.3, 400, BAYES_SPAM from 0.51 (5 points) and BAYES_HAM up to -5: 94.95%
caught, 1 ham of 2905 flagged. Second round (with the header-clue cap, PHISHING not for
redirectors to the site shown, DATE_IN_PAST from 4 days), also over strength ∈ {0.1, 0.2},
``minimum_prob_strength`` ∈ {0.3, 0.35}, ``max_discriminators`` ∈ {60, 150, 400} and
:data:`MAX_HEADER_CLUES` ∈ {5, 10, 20, unlimited}: 0.1, 0.35, 400 and 20, BAYES_SPAM from
0.51 at 6 points (rising to 8): 96.08% caught, 2 ham flagged (several neighbours, with the
cap at 5 or 10 or strength 0.2, are within one message of it; without the cap the best
was 95.93%). Third round (the unsure band, step 4), over strength ∈ {0.1, 0.2},
``minimum_prob_strength`` ∈ {0.3, 0.35}, :data:`MAX_HEADER_CLUES` ∈ {10, 20} and
:data:`UNSURE_BAND` ∈ {0, 0.02, 0.05, 0.1, 0.2}: 0.1, 0.35, 10 and 0.05, BAYES_SPAM 6
from 0.501 (the geometric means leaning to spam by 2% of their sum): 97.89% caught, 2 ham
flagged (without the band 96.08%; with it, the neighbours at strength 0.2 or band 0.2 or
20 header clues gave 97.1-97.7% for the same 2 ham). ``unknown_word_prob`` stays
SpamBayes' 0.5.
Chi-square combining is sure of itself: most messages end near 0 or 1; a message with no
clue at all is exactly 0.5, which gives nothing. From 0.501 BAYES_SPAM is worth the junk
threshold (6) alone; BAYES_HAM (down to -5) lets a strongly hammy message carry a
heuristic's false alarm.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pochta.cleanup.verdict import Symbol
from pochta.spam.check import ScanInput
from pochta.spam.message import ScanMessage

__all__ = [
    "HEADER_PREFIXES",
    "MAX_DISCRIMINATORS",
    "MAX_HEADER_CLUES",
    "MAX_TEXT_CHARS",
    "MAX_TOKENS",
    "MIN_PROB_STRENGTH",
    "UNKNOWN_WORD_PROB",
    "UNKNOWN_WORD_STRENGTH",
    "UNSURE_BAND",
    "BayesCheck",
    "Combining",
    "Counts",
    "ScoreCurve",
    "TokenSource",
    "bayes_score",
    "message_digest",
    "spam_probability",
    "token_hash",
    "token_hashes",
    "tokenize",
]

UNKNOWN_WORD_STRENGTH = 0.1
"""Robinson's ``s``: how many messages' worth of weight the unknown-word probability has."""
UNKNOWN_WORD_PROB = 0.5
"""Robinson's ``x``: the probability of a token never seen."""
MIN_PROB_STRENGTH = 0.35
"""Tokens whose probability is nearer 0.5 than this are left out."""
MAX_DISCRIMINATORS = 400
"""At most this many tokens (the strongest) are combined."""
MAX_HEADER_CLUES = 10
"""At most this many of the combined tokens are header tokens (:data:`HEADER_PREFIXES`)."""
UNSURE_BAND = 0.05
"""Within this of 0.5, the chi-square probability is replaced by the geometric-mean one
squeezed into the band (step 4 of the combination); 0 leaves chi-square alone."""
MAX_TOKENS = 5000
"""Distinct tokens taken from one message (learning and classifying alike)."""
MAX_TEXT_CHARS = 200_000
"""Characters of body text tokenized per message."""

HEADER_PREFIXES = (
    *("header:", "received:", "message-id:", "boundary:", "x-mailer:", "user-agent:"),
    *("content-type:", "content-transfer-encoding:", "from:", "to:", "cc:", "reply-to:"),
    *("sender:", "return-path:"),
)
"""The tokens of the header fields other than the Subject: many, and correlated (a mailing
list adds a dozen fields and Received hosts that say the same thing), so that without a cap
they outvote the words of the body; their hashes have the lowest bit set."""

_MIN_WORD = 3
_MAX_WORD = 12
_WORD_STRIP = "\"'`()[]{}<>.,;:!?*"
_WORDS = re.compile(r"\S+")
_ADDRESS = re.compile(r"^[\w.+-]+@[\w-]+(?:\.[\w-]+)+$")
_HOST = re.compile(r"^(?:[a-z]+://)?(?:[^@/?#\s]*@)?([^/:?#\s]+)", re.IGNORECASE)
_IPV4 = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}\b")
_RECEIVED_HOST = re.compile(r"\b(?:from|by)\s+([a-z0-9][a-z0-9.-]*\.[a-z]{2,})", re.IGNORECASE)
_WHOLE_FIELDS = ("x-mailer", "user-agent", "content-type", "content-transfer-encoding")
_SUBJECT_WORDS = re.compile(r"[\w$€£%]+|[!?$]+")
_ADDRESS_FIELDS = ("from", "to", "cc", "reply-to", "sender", "return-path")
_PARAMS = re.compile(r";\s*([\w-]+)\s*=\s*(\"[^\"]*\"|[^;\s]+)")
_SHAPE_DIGITS = re.compile(r"\d+")
_SHAPE_UPPER = re.compile(r"[A-Z]+")
_SHAPE_LOWER = re.compile(r"[a-z]+")
_URL_PIECES = re.compile(r"[^a-z0-9]+")


# -- tokens ---------------------------------------------------------------------------------


def tokenize(message: ScanMessage) -> set[str]:
    """The distinct tokens of ``message`` (at most :data:`MAX_TOKENS`)."""
    tokens: set[str] = set()
    _header_tokens(message, tokens)
    for part in message.text_parts:
        tokens.add(f"part:{part.content_type}")
        if part.charset:
            tokens.add(f"charset:{part.charset.lower()}")
    if message.text_parts and all(p.content_type == "text/html" for p in message.text_parts):
        tokens.add("part:html-only")
    if message.decode_errors:
        tokens.add("part:decode-errors")
    for attachment in message.attachments[:20]:
        tokens.add(f"attachment:{attachment.content_type}")
        if "." in attachment.filename:
            tokens.add(f"filename:.{attachment.filename.rsplit('.', 1)[1].lower()[:10]}")
    for link in message.links:
        _url_tokens(link.url, tokens)
    text = message.text[:MAX_TEXT_CHARS]
    if text:
        eight_bit = sum(1 for c in text if ord(c) > 127)
        tokens.add(f"8bit%:{round(eight_bit * 10 / len(text)) * 10}")
    for match in _WORDS.finditer(text):
        if len(tokens) >= MAX_TOKENS:
            break
        _word_tokens(match.group(), "", tokens)
    if len(tokens) > MAX_TOKENS:
        return set(sorted(tokens)[:MAX_TOKENS])
    return tokens


def _header_tokens(message: ScanMessage, tokens: set[str]) -> None:
    subject = message.header("subject")
    if subject is None:
        tokens.add("subject:none")
    else:
        for word in _SUBJECT_WORDS.findall(subject[:500]):
            tokens.add(f"subject:{word.lower()}")
        for word in _WORDS.findall(subject[:500]):
            _word_tokens(word, "subject:", tokens)
    for name in _ADDRESS_FIELDS:
        _address_tokens(message, name, tokens)
    message_id = message.header("message-id")
    if message_id is None:
        tokens.add("message-id:none")
    elif "@" in message_id:
        left, _, right = message_id.strip().strip("<>").rpartition("@")
        tokens.add(f"message-id:@{right.lower()[:60]}")
        tokens.add(f"message-id:shape:{_shape(left)}")
    for name in _WHOLE_FIELDS:
        value = message.header(name)
        if value:
            tokens.add(f"{name}:{' '.join(value.lower().split())[:60]}")
    content_type = message.header("content-type")
    if content_type:
        for param in _PARAMS.findall(content_type[:500]):
            key, value = param
            value = value.strip('"').lower()
            if key.lower() == "boundary":
                tokens.add(f"boundary:{_shape(value)}")
            else:
                tokens.add(f"content-type:{key.lower()}={value[:40]}")
    seen: dict[str, int] = {}
    for field in message.split.headers[:200]:
        key = field.name.lower()[:40]
        seen[key] = seen.get(key, 0) + 1
    for key, count in seen.items():
        tokens.add(f"header:{key}:{min(count, 5)}")
    for received in message.headers("received")[:10]:
        text = received[:1000]
        for host in _RECEIVED_HOST.findall(text):
            labels = host.lower().split(".")
            for i in range(max(0, len(labels) - 4), len(labels) - 1):
                tokens.add("received:" + ".".join(labels[i:]))
        for a, b, c in _IPV4.findall(text):
            tokens.add(f"received:{a}")
            tokens.add(f"received:{a}.{b}")
            tokens.add(f"received:{a}.{b}.{c}")


def _address_tokens(message: ScanMessage, name: str, tokens: set[str]) -> None:
    """The addresses of a field (``to:addr:`` + domain, ``to:local:`` + local part), the
    domain's parents (``to:domain:``), the display-name words (``to:`` + word), and for
    To and Cc how many addresses, rounded down to a power of 2 (SpamBayes' tokenizer)."""
    count = 0
    for value in message.headers(name)[:5]:
        for word in _WORDS.findall(value[:1000]):
            word = word.strip(_WORD_STRIP).lower()
            if "@" in word:
                count += 1
                local, _, domain = word.rpartition("@")
                tokens.add(f"{name}:addr:{domain[:60]}")
                tokens.add(f"{name}:local:{local[:20]}")
                labels = domain.split(".")
                for i in range(1, max(1, len(labels) - 1)):
                    tokens.add(f"{name}:domain:{'.'.join(labels[i:])[:60]}")
            elif word:
                tokens.add(f"{name}:{word[:20]}")
    if name in ("to", "cc") and count:
        tokens.add(f"{name}:count:{1 << (count.bit_length() - 1)}")
    elif count == 0:
        tokens.add(f"{name}:none")


def _shape(text: str) -> str:
    """What a generated identifier looks like: runs of digits as ``9``, of letters as
    ``a`` or ``A``, other characters kept (``3D2F1.ab@x`` -> ``9A9A9.a``)."""
    return _SHAPE_DIGITS.sub("9", _SHAPE_UPPER.sub("A", _SHAPE_LOWER.sub("a", text[:60])))


def _url_tokens(url: str, tokens: set[str]) -> None:
    found = _HOST.match(url.strip())
    if found is None:
        return
    lowered = url.lower()
    tokens.add(f"proto:{lowered.split(':', 1)[0][:10]}" if "://" in lowered else "proto:none")
    host = found.group(1).lower().rstrip(".")[:100]
    if _IPV4.fullmatch(host) or host.replace(".", "").isdigit():
        tokens.add("url:ip")
    else:
        labels = host.split(".")
        for i in range(max(0, len(labels) - 4), len(labels) - 1):
            tokens.add("url:" + ".".join(labels[i:]))
    path = lowered[found.end() :][:200]
    for piece in _URL_PIECES.split(path):
        if 2 < len(piece) <= 20:
            tokens.add(f"url:/{piece}")


def _word_tokens(raw: str, prefix: str, tokens: set[str]) -> None:
    word = raw.strip(_WORD_STRIP).lower()
    n = len(word)
    if _MIN_WORD <= n <= _MAX_WORD:
        tokens.add(prefix + word)
    elif n > _MAX_WORD:
        if _ADDRESS.match(word):
            local, _, domain = word.partition("@")
            tokens.add(f"{prefix}email name:{local[:20]}")
            tokens.add(f"{prefix}email addr:{domain}")
        elif "://" not in word:  # links are tokenized from message.links
            tokens.add(f"{prefix}skip:{word[0]} {n // 10 * 10}")


def token_hash(token: str) -> int:
    """A token as the signed 64-bit integer the store keeps (BLAKE2b, 8 bytes), its lowest
    bit set for a header token (:data:`HEADER_PREFIXES`), clear for the others."""
    digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    value = int.from_bytes(digest, "big", signed=True) & ~1
    return value | 1 if token.startswith(HEADER_PREFIXES) else value


def token_hashes(message: ScanMessage) -> list[int]:
    """The hashes of :func:`tokenize`, sorted (a stable order for the store's writes)."""
    return sorted({token_hash(t) for t in tokenize(message)})


def message_digest(message: ScanMessage) -> bytes:
    """What identifies a message for the learned-messages table: SHA-256 of its
    Message-ID and its body, so the copy a user moves into Junk (with the delivery's
    Return-Path and Delivered-To on top) is the same message as the file fed to
    ``pochta spam learn``."""
    digest = hashlib.sha256()
    digest.update((message.header("message-id") or "").strip().encode("utf-8", "replace"))
    digest.update(b"\0")
    digest.update(message.split.body)
    return digest.digest()


# -- combination ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Combining:
    """The constants of the combination (defaults: the module's), a parameter so that
    ``bench/spam_accuracy.py --cv`` can compare them."""

    unknown_word_strength: float = UNKNOWN_WORD_STRENGTH
    unknown_word_prob: float = UNKNOWN_WORD_PROB
    min_prob_strength: float = MIN_PROB_STRENGTH
    max_discriminators: int = MAX_DISCRIMINATORS
    max_header_clues: int = MAX_HEADER_CLUES
    unsure_band: float = UNSURE_BAND


DEFAULT_COMBINING = Combining()


@dataclass(frozen=True, slots=True)
class Counts:
    """The learned messages of one scope (global or a user)."""

    spam: int
    ham: int


def token_probability(
    spam: int, ham: int, counts: Counts, combining: Combining = DEFAULT_COMBINING
) -> float:
    """Robinson's ``f(w)`` of a token seen in ``spam`` spam and ``ham`` ham messages."""
    spam_ratio = spam / counts.spam if counts.spam else 0.0
    ham_ratio = ham / counts.ham if counts.ham else 0.0
    x = combining.unknown_word_prob
    if spam_ratio + ham_ratio == 0:
        return x
    p = spam_ratio / (spam_ratio + ham_ratio)
    n = spam + ham
    s = combining.unknown_word_strength
    return (s * x + n * p) / (s + n)


def _chi2q(x2: float, v: int) -> float:
    """The chi-square survival function ``P(χ² ≥ x2)`` for even ``v`` degrees of freedom."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def spam_probability(
    tokens: Iterable[int],
    stats: Mapping[int, tuple[int, int]],
    counts: Counts,
    combining: Combining = DEFAULT_COMBINING,
) -> float:
    """The probability that a message with ``tokens`` is spam, from ``stats`` (token ->
    (spam, ham) messages) learned over ``counts``; 0.5 when no token says anything."""
    strong: list[tuple[float, int, float]] = []
    for token in tokens:
        seen = stats.get(token)
        if seen is None:
            continue
        f = token_probability(seen[0], seen[1], counts, combining)
        if abs(f - 0.5) >= combining.min_prob_strength:
            strong.append((abs(f - 0.5), token & 1, f))
    if not strong:
        return 0.5
    strong.sort(key=lambda clue: clue[0], reverse=True)
    clues: list[float] = []
    header_clues = 0
    for _strength, is_header, f in strong:
        if is_header:
            if header_clues >= combining.max_header_clues:
                continue
            header_clues += 1
        clues.append(f)
        if len(clues) >= combining.max_discriminators:
            break
    # f is never 0 or 1: Robinson's correction keeps it inside (0, 1).
    ln_ham = sum(math.log(f) for f in clues)
    ln_spam = sum(math.log(1.0 - f) for f in clues)
    n = len(clues)
    ham = 1.0 - _chi2q(-2.0 * ln_ham, 2 * n)  # near 1 when the clues are near 0
    spam = 1.0 - _chi2q(-2.0 * ln_spam, 2 * n)  # near 1 when the clues are near 1
    probability = (spam - ham + 1.0) / 2.0
    band = combining.unsure_band
    if abs(probability - 0.5) < band:
        # Chi-square is unsure: Robinson's geometric means of the same clues decide, inside
        # the band. Both are > 0 since every f is inside (0, 1).
        spamminess = 1.0 - math.exp(ln_spam / n)
        hamminess = 1.0 - math.exp(ln_ham / n)
        return 0.5 + band * (spamminess - hamminess) / (spamminess + hamminess)
    return probability


# -- the score ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreCurve:
    """How a probability becomes a score (``[bayes]`` settings): nothing between
    ``ham_below`` and ``spam_above``; above, BAYES_SPAM rising linearly from
    ``spam_min_score`` at ``spam_above`` to ``spam_max_score`` at 1; below, BAYES_HAM
    falling linearly from 0 at ``ham_below`` to ``ham_score`` at 0."""

    spam_above: float = 0.501
    spam_min_score: float = 6.0
    spam_max_score: float = 8.0
    ham_below: float = 0.1
    ham_score: float = -5.0


def bayes_score(probability: float, curve: ScoreCurve) -> Symbol | None:
    """The symbol of a probability, None in the undecided middle."""
    option = (f"{probability:.4f}",)
    if probability >= curve.spam_above:
        span = 1.0 - curve.spam_above
        share = (probability - curve.spam_above) / span if span > 0 else 1.0
        score = curve.spam_min_score + share * (curve.spam_max_score - curve.spam_min_score)
        return Symbol(
            name="BAYES_SPAM",
            score=round(score, 2),
            description="Bayes: the words look like the spam learned",
            options=option,
        )
    if probability <= curve.ham_below:
        share = (curve.ham_below - probability) / curve.ham_below if curve.ham_below > 0 else 1.0
        return Symbol(
            name="BAYES_HAM",
            score=round(share * curve.ham_score, 2),
            description="Bayes: the words look like the ham learned",
            options=option,
        )
    return None


# -- the check ------------------------------------------------------------------------------


class TokenSource(Protocol):
    """The statistics the check reads (``spam/bayes_store.BayesStore``): ``scope_counts``
    is a point read the check makes on the event loop, ``token_counts`` runs in a thread."""

    def scope_counts(self, scope: str) -> Counts: ...

    def token_counts(self, scope: str, tokens: Sequence[int]) -> dict[int, tuple[int, int]]: ...


@dataclass(frozen=True, slots=True)
class ScopeChoice:
    scope: str
    counts: Counts


class BayesCheck:
    """BAYES_SPAM / BAYES_HAM from the user's statistics when the message has exactly one
    local recipient whose statistics have ``min_learned`` spam and ham, else the global
    ones; none when neither has learned ``min_learned`` of each (SpamAssassin's
    ``bayes_min_spam_num`` / ``bayes_min_ham_num``)."""

    name = "bayes"

    def __init__(
        self,
        source: TokenSource,
        *,
        min_learned: int,
        curve: ScoreCurve,
        is_local: Callable[[str], str | None] = lambda _address: None,
    ) -> None:
        self.source = source
        self.min_learned = min_learned
        self.curve = curve
        self.is_local = is_local  # an envelope recipient -> its account, None when not local

    def choose_scope(self, recipients: Sequence[str]) -> ScopeChoice | None:
        """The scope to classify with, None when none has learned enough: one or two
        point reads (WAL readers never wait for a writer), quick enough for the loop."""
        accounts = {a for a in (self.is_local(r) for r in recipients) if a is not None}
        if len(accounts) == 1 and len(recipients) == 1:
            (account,) = accounts
            counts = self.source.scope_counts(account)
            if self._enough(counts):
                return ScopeChoice(account, counts)
        counts = self.source.scope_counts("")
        return ScopeChoice("", counts) if self._enough(counts) else None

    def _enough(self, counts: Counts) -> bool:
        return counts.spam >= self.min_learned and counts.ham >= self.min_learned

    def classify(self, message: ScanMessage, recipients: Sequence[str]) -> float | None:
        """Blocking: the spam probability, None when there is nothing to classify with."""
        choice = self.choose_scope(recipients)
        if choice is None:
            return None
        return self._probability(message, choice)

    def _probability(self, message: ScanMessage, choice: ScopeChoice) -> float:
        tokens = token_hashes(message)
        stats = self.source.token_counts(choice.scope, tokens)
        return spam_probability(tokens, stats, choice.counts)

    async def __call__(self, scan: ScanInput) -> Sequence[Symbol]:
        # The scope's counts are one or two point reads, done here; only a scope that has
        # learned enough costs the thread that tokenizes the message and reads its tokens.
        choice = self.choose_scope(scan.recipients)
        if choice is None:
            return ()
        probability = await asyncio.to_thread(self._probability, scan.message, choice)
        symbol = bayes_score(probability, self.curve)
        return (symbol,) if symbol is not None else ()
