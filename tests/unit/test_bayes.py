"""The Bayes tokenizer, the Robinson/Fisher combination, the score curve and the check's
choice of statistics (spam/bayes.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from pochta.config.settings import BayesSettings
from pochta.spam.bayes import (
    HEADER_PREFIXES,
    MAX_HEADER_CLUES,
    MAX_TOKENS,
    UNSURE_BAND,
    BayesCheck,
    Combining,
    Counts,
    ScoreCurve,
    bayes_score,
    spam_probability,
    token_hash,
    token_hashes,
    token_probability,
    tokenize,
)
from pochta.spam.check import ScanInput
from pochta.spam.message import ScanMessage


def msg(subject: str, body: str, *, html: bool = False, extra: str = "") -> ScanMessage:
    ctype = "text/html" if html else "text/plain"
    return ScanMessage(
        (
            f"From: Bob Sender <bob@sender.example>\r\nSubject: {subject}\r\n"
            f"X-Mailer: Mass Mailer 3.1\r\nContent-Type: {ctype}; charset=utf-8\r\n{extra}\r\n"
            f"{body}\r\n"
        ).encode()
    )


SPAMMY = ["cheap pills viagra offer", "win money casino now", "free prize claim lottery"]
HAMMY = ["meeting agenda tomorrow project", "lunch with team review", "patch review build"]


# -- tokenizer ------------------------------------------------------------------------------


def test_tokens_of_headers_words_links_and_markers() -> None:
    m = msg(
        "Cheap Pills",
        "Hello WORLD, see http://shop.pills.example/buy and supercalifragilisticexpialidocious",
    )
    tokens = tokenize(m)
    assert {"subject:cheap", "subject:pills", "hello", "world", "see"} <= tokens
    assert {"from:bob", "from:addr:sender.example"} <= tokens
    assert "x-mailer:mass mailer 3.1" in tokens
    assert {"url:shop.pills.example", "url:pills.example", "proto:http"} <= tokens
    assert "skip:s 30" in tokens  # a 34-character word, summarised
    assert "charset:utf-8" in tokens
    assert "header:x-mailer:1" in tokens
    assert not any(t.startswith("http") for t in tokens)  # links come from message.links


def test_tokens_of_address_fields_message_id_and_content_type() -> None:
    m = msg(
        "x",
        "body",
        extra=(
            "To: Ann <ann@mail.corp.example>, b@other.example\r\n"
            "Reply-To: offers@deals.example\r\n"
            "Message-ID: <20020807.AB12@mx.sender.example>\r\n"
        ),
    )
    tokens = tokenize(m)
    assert {"to:ann", "to:addr:mail.corp.example", "to:domain:corp.example"} <= tokens
    assert {"to:local:b", "to:addr:other.example", "to:count:2"} <= tokens
    assert {"reply-to:addr:deals.example", "cc:none"} <= tokens
    assert "message-id:shape:9.A9" in tokens
    assert "content-type:charset=utf-8" in tokens


def test_tokens_of_url_paths() -> None:
    tokens = tokenize(msg("x", "see http://shop.example/cheap-meds/order.php?id=7"))
    assert {"url:/cheap", "url:/meds", "url:/order", "url:/php"} <= tokens
    assert "url:/7" not in tokens  # pieces of 1 or 2 characters say nothing


def test_html_is_read_as_visible_text() -> None:
    m = msg("x", "<html><style>hidden</style><p>Visible words</p></html>", html=True)
    tokens = tokenize(m)
    assert {"visible", "words", "part:html-only"} <= tokens
    assert "hidden" not in tokens


def test_eight_bit_share_and_received_hints() -> None:
    m = msg(
        "x",
        "ééééé abc",
        extra="Received: from relay.mx.example (relay [192.0.2.7]) by mx.example.org\r\n",
    )
    tokens = tokenize(m)
    (share,) = [int(t.split(":")[1]) for t in tokens if t.startswith("8bit%:")]
    assert 40 <= share <= 60  # five 8-bit characters of about ten
    assert {"received:mx.example", "received:example.org", "received:192.0.2"} <= tokens


def test_tokens_are_bounded() -> None:
    body = " ".join(f"w{i:07d}" for i in range(MAX_TOKENS * 3))
    assert len(tokenize(msg("x", body))) <= MAX_TOKENS


def test_token_hash_is_signed_64_bit_and_stable() -> None:
    h = token_hash("viagra")
    assert -(2**63) <= h < 2**63
    assert h == token_hash("viagra") != token_hash("viagrA")


# -- combination ----------------------------------------------------------------------------


def trained(
    spam_texts: Sequence[str], ham_texts: Sequence[str]
) -> tuple[dict[int, tuple[int, int]], Counts]:
    stats: dict[int, list[int]] = {}
    for texts, column in ((spam_texts, 0), (ham_texts, 1)):
        for text in texts:
            for t in token_hashes(msg("hello", text)):
                stats.setdefault(t, [0, 0])[column] += 1
    return {t: (v[0], v[1]) for t, v in stats.items()}, Counts(len(spam_texts), len(ham_texts))


def test_spam_and_ham_are_told_apart() -> None:
    stats, counts = trained(SPAMMY * 10, HAMMY * 10)
    spam = spam_probability(token_hashes(msg("hello", "casino prize money")), stats, counts)
    ham = spam_probability(token_hashes(msg("hello", "project review agenda")), stats, counts)
    assert spam > 0.99
    assert ham < 0.01


def test_unknown_words_say_nothing() -> None:
    stats, counts = trained(SPAMMY, HAMMY)
    unknown = [token_hash("zzzunknown"), token_hash("qqqnever")]
    assert spam_probability(unknown, stats, counts) == 0.5


# -- score curve ----------------------------------------------------------------------------


def test_score_curve() -> None:
    curve = ScoreCurve(
        spam_above=0.9, spam_min_score=6.0, spam_max_score=8.0, ham_below=0.1, ham_score=-3.0
    )
    assert bayes_score(0.5, curve) is None
    low = bayes_score(0.9, curve)
    high = bayes_score(1.0, curve)
    assert low is not None
    assert high is not None
    assert (low.name, low.score, high.score) == ("BAYES_SPAM", 6.0, 8.0)
    assert low.options == ("0.9000",)
    ham = bayes_score(0.0, curve)
    assert ham is not None
    assert ham.name == "BAYES_HAM"
    assert ham.score == -3.0


def test_default_curve_is_the_cross_validated_one() -> None:
    """[bayes] defaults (chosen by cross-validation on the training part, see the module
    docstring): no clue at all (0.5) gives nothing; from 0.501 (the unsure band's
    geometric-mean order leaning to spam) BAYES_SPAM is 6, the junk threshold; certain
    ham gives -5."""
    curve = ScoreCurve()
    assert curve == ScoreCurve(
        spam_above=BayesSettings().spam_probability,
        spam_min_score=BayesSettings().spam_min_score,
        spam_max_score=BayesSettings().spam_max_score,
        ham_below=BayesSettings().ham_probability,
        ham_score=BayesSettings().ham_score,
    )
    assert bayes_score(0.5, curve) is None
    unsure = bayes_score(0.501, curve)
    assert unsure is not None
    assert (unsure.name, unsure.score) == ("BAYES_SPAM", 6.0)
    ham = bayes_score(0.0, curve)
    assert ham is not None
    assert ham.score == -5.0


def test_default_combining_is_the_cross_validated_one() -> None:
    """unknown_word_strength 0.1, minimum_prob_strength 0.35, 400 discriminators: a token
    seen in one spam of 10 and no ham is a clue of 0.1·0.5 + 1·1 over 1.1 ≈ 0.955; one
    whose f is 0.8 (within 0.35 of 0.5) says nothing."""
    counts = Counts(spam=10, ham=10)
    assert abs(token_probability(1, 0, counts) - (0.05 + 1.0) / 1.1) < 1e-9
    weak = {2: (4, 1)}  # p = 0.8, f ≈ 0.794: left out, so no clue at all
    assert spam_probability([2], weak, counts) == 0.5


def test_header_tokens_are_marked_in_their_hash() -> None:
    """Header tokens (not the Subject's) have the lowest bit of their hash set, the
    others clear, so the combination can tell them apart from hashes alone."""
    for token in ("header:list-id:1", "received:example.org", "from:addr:x.example"):
        assert token.startswith(HEADER_PREFIXES)
        assert token_hash(token) & 1 == 1
    for token in ("viagra", "subject:offer", "url:example.com", "skip:a 20"):
        assert token_hash(token) & 1 == 0


def test_header_clues_are_capped() -> None:
    """A spam body sent through a mailing list: the list's header fields give more ham
    clues than the body has spam words, and chi-square combining calls it unsure (under
    BayesSettings' spam_probability: no BAYES_SPAM); with at most MAX_HEADER_CLUES of
    them the body's words decide."""
    counts = Counts(spam=100, ham=100)
    list_fields = [token_hash(f"header:list-field-{i}:1") for i in range(6 * MAX_HEADER_CLUES)]
    words = [token_hash(f"spamword{i}") for i in range(2 * MAX_HEADER_CLUES)]
    assert all(t & 1 for t in list_fields)
    stats = {t: (10, 90) for t in list_fields} | {t: (60, 1) for t in words}
    uncapped = Combining(max_header_clues=10_000)
    unsure = spam_probability(list_fields + words, stats, counts, uncapped)
    assert unsure < BayesSettings().spam_probability
    assert spam_probability(list_fields + words, stats, counts) > 0.9


def test_unsure_chi_square_is_ordered_by_geometric_means() -> None:
    """Many strong spam clues and many strong ham clues: chi-square is sure both ways and
    says 0.5 whichever side has more; inside UNSURE_BAND Robinson's geometric means decide,
    so the side with the stronger clues wins, by less than the band."""
    counts = Counts(spam=100, ham=100)
    spam_words = [token_hash(f"spamword{i}") for i in range(40)]
    ham_words = [token_hash(f"hamword{i}") for i in range(30)]
    stats = {t: (50, 1) for t in spam_words} | {t: (1, 50) for t in ham_words}
    message = spam_words + ham_words
    chi_square = spam_probability(message, stats, counts, Combining(unsure_band=0.0))
    assert abs(chi_square - 0.5) < 0.001  # unsure: no BAYES_SPAM
    assert chi_square < BayesSettings().spam_probability
    leaning = spam_probability(message, stats, counts)
    assert BayesSettings().spam_probability <= leaning < 0.5 + UNSURE_BAND
    hammy = spam_words[:30] + ham_words + [token_hash(f"more{i}") for i in range(10)]
    stats |= {token_hash(f"more{i}"): (1, 50) for i in range(10)}
    assert 0.5 - UNSURE_BAND < spam_probability(hammy, stats, counts) < 0.5
    # sure messages and clueless ones are as chi-square says
    assert spam_probability(spam_words, stats, counts) > 0.99
    assert spam_probability([token_hash("never-seen")], stats, counts) == 0.5


# -- the check: which statistics --------------------------------------------------------------


class FakeSource:
    """Statistics per scope in memory; counts the reads."""

    def __init__(self) -> None:
        self.stats: dict[str, tuple[dict[int, tuple[int, int]], Counts]] = {}
        self.token_reads: list[str] = []

    def scope_counts(self, scope: str) -> Counts:
        return self.stats[scope][1] if scope in self.stats else Counts(0, 0)

    def token_counts(self, scope: str, tokens: Sequence[int]) -> dict[int, tuple[int, int]]:
        self.token_reads.append(scope)
        known = self.stats[scope][0]
        return {t: known[t] for t in tokens if t in known}


def run_check(check: BayesCheck, message: ScanMessage, recipients: list[str]) -> list[str]:
    scan = ScanInput(message=message, sender="s@x.example", recipients=recipients)
    return [s.name for s in asyncio.run(check(scan))]


@pytest.fixture
def source() -> FakeSource:
    s = FakeSource()
    s.stats[""] = trained(SPAMMY * 5, HAMMY * 5)
    # alice thinks the "project" mail is spam: her statistics say the opposite of the global.
    s.stats["alice@example.org"] = trained(HAMMY * 5, SPAMMY * 5)
    s.stats["bob@example.org"] = trained(HAMMY, SPAMMY)  # too little to be used
    return s


def local(address: str) -> str | None:
    return address if address.endswith("@example.org") else None


def test_one_local_recipient_with_enough_training_uses_theirs(source: FakeSource) -> None:
    check = BayesCheck(source, min_learned=10, curve=ScoreCurve(), is_local=local)
    project = msg("hello", "project review agenda")
    assert run_check(check, project, ["alice@example.org"]) == ["BAYES_SPAM"]
    assert source.token_reads == ["alice@example.org"]


def test_otherwise_the_global_statistics(source: FakeSource) -> None:
    check = BayesCheck(source, min_learned=10, curve=ScoreCurve(), is_local=local)
    project = msg("hello", "project review agenda")
    assert run_check(check, project, ["bob@example.org"]) == ["BAYES_HAM"]  # bob: too few
    assert run_check(check, project, ["alice@example.org", "bob@example.org"]) == ["BAYES_HAM"]
    assert run_check(check, project, ["carol@remote.example"]) == ["BAYES_HAM"]
    assert source.token_reads == ["", "", ""]


def test_nothing_learned_gives_no_symbol() -> None:
    check = BayesCheck(FakeSource(), min_learned=1, curve=ScoreCurve(), is_local=local)
    assert run_check(check, msg("hello", "casino prize"), ["alice@example.org"]) == []


def test_too_little_learned_globally_gives_no_symbol(source: FakeSource) -> None:
    check = BayesCheck(source, min_learned=200, curve=ScoreCurve(), is_local=local)
    assert run_check(check, msg("hello", "casino prize"), ["alice@example.org"]) == []
    assert source.token_reads == []


def test_a_thread_only_when_a_scope_has_learned_enough(
    source: FakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scope's counts are read on the loop; the thread that tokenizes the message and
    reads its tokens is taken only when there is something to classify with."""
    trips: list[str] = []
    real = asyncio.to_thread

    async def counted(func: Any, /, *args: Any) -> Any:
        trips.append(getattr(func, "__name__", "?"))
        return await real(func, *args)

    monkeypatch.setattr(asyncio, "to_thread", counted)
    untrained = BayesCheck(FakeSource(), min_learned=1, curve=ScoreCurve(), is_local=local)
    assert run_check(untrained, msg("hello", "casino prize"), ["alice@example.org"]) == []
    assert trips == []
    trained_check = BayesCheck(source, min_learned=10, curve=ScoreCurve(), is_local=local)
    assert run_check(trained_check, msg("hello", "project review"), ["alice@example.org"]) == [
        "BAYES_SPAM"
    ]
    assert trips == ["_probability"]
