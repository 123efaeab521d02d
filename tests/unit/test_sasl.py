"""SASL mechanisms, bytes in and steps out: PLAIN, LOGIN, SCRAM-SHA-256."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
import scramp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pochta.directory.passwords import make_scram_sha256
from pochta.directory.sasl import (
    MAX_RESPONSE_BYTES,
    MECHANISMS,
    Challenge,
    Failure,
    LoginMechanism,
    Mechanism,
    NeedPassword,
    NeedScramKeys,
    PlainMechanism,
    ScramSha256Mechanism,
    Step,
    Success,
    server_mechanism,
)
from tests.scram_authzid import scram_client

# -- PLAIN (RFC 4616) --


def test_plain_initial_response() -> None:
    mech = PlainMechanism()
    step = mech.start(b"\x00alice@example.org\x00secret pw")
    assert step == NeedPassword("alice@example.org", "", "secret pw")
    assert "secret pw" not in repr(step)
    assert mech.password_result(True) == Success("alice@example.org", "", None)
    assert mech.done
    assert isinstance(mech.respond(b"again"), Failure)


def test_plain_after_empty_challenge() -> None:
    mech = PlainMechanism()
    assert mech.start(None) == Challenge(b"")
    assert mech.respond(b"alice\x00alice\x00pw") == NeedPassword("alice", "alice", "pw")
    assert mech.password_result(False) == Failure("invalid credentials")


def test_plain_rfc4616_example() -> None:
    # RFC 4616 §4: "\0tim\0tanstaaftanstaaf"
    mech = PlainMechanism()
    assert mech.start(b"\x00tim\x00tanstaaftanstaaf") == NeedPassword("tim", "", "tanstaaftanstaaf")


def test_plain_proxy_refused() -> None:
    # RFC 4616 §4: "Ursel\0Kurt\0xipj3plmq" asks to act as Ursel.
    mech = PlainMechanism()
    step = mech.start(b"Ursel\x00Kurt\x00xipj3plmq")
    assert isinstance(step, Failure)
    assert step.reason.startswith("proxy authorisation is not allowed")
    assert "must be empty or the user name itself" in step.reason


def test_plain_authzid_equal_to_authcid_accepted() -> None:
    mech = PlainMechanism()
    assert mech.start(b"Kurt@x.test\x00kurt@X.test\x00pw") == NeedPassword(
        "kurt@X.test", "Kurt@x.test", "pw"
    )
    assert mech.password_result(True) == Success("kurt@X.test", "")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"alice",
        b"\x00alice",
        b"\x00alice\x00",
        b"\x00\x00pw",
        b"\x00alice\x00pw\x00more",
        b"\x00al\xffice\x00pw",
        b"\x00alice\x00" + b"p" * MAX_RESPONSE_BYTES,
    ],
)
def test_plain_malformed(message: bytes) -> None:
    mech = PlainMechanism()
    step = mech.start(message)
    assert isinstance(step, Failure)
    assert mech.done


def test_plain_out_of_sequence() -> None:
    mech = PlainMechanism()
    assert isinstance(mech.password_result(True), Failure)
    mech = PlainMechanism()
    assert isinstance(mech.scram_keys("x"), Failure)
    mech = PlainMechanism()
    mech.start(b"\x00a\x00b")
    assert isinstance(mech.start(b"\x00a\x00b"), Failure)


# -- LOGIN (draft-murchison-sasl-login) --


def test_login_flow() -> None:
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.respond(b"bob@example.org") == Challenge(b"Password:")
    assert mech.authcid == "bob@example.org"
    step = mech.respond(b"hunter2!")
    assert step == NeedPassword("bob@example.org", "", "hunter2!")
    assert mech.password_result(True) == Success("bob@example.org", "", None)


def test_login_initial_response_is_username() -> None:
    mech = LoginMechanism()
    assert mech.start(b"bob") == Challenge(b"Password:")
    assert mech.respond(b"pw") == NeedPassword("bob", "", "pw")
    assert mech.password_result(False) == Failure("invalid credentials")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (b"", b"pw"),
        (b"bo\x00b", b"pw"),
        (b"bob", b""),
        (b"bob", b"p\x00w"),
        (b"\xff", b"pw"),
        (b"bob", b"\xc3"),
        (b"b" * (MAX_RESPONSE_BYTES + 1), b"pw"),
    ],
)
def test_login_malformed(username: bytes, password: bytes) -> None:
    mech = LoginMechanism()
    mech.start(None)
    step = mech.respond(username)
    if isinstance(step, Challenge):
        step = mech.respond(password)
    assert isinstance(step, Failure)
    assert mech.done


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) --


def _keys(password: str) -> str:
    return make_scram_sha256(password)


def _run_scram(
    mech: Mechanism, client: scramp.ScramClient, keys: Callable[[str], str | None]
) -> Step:
    step = mech.start(client.get_client_first().encode())
    assert isinstance(step, NeedScramKeys)
    step = mech.scram_keys(keys(step.authcid))
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    step = mech.respond(client.get_client_final().encode())
    if isinstance(step, Success):
        assert step.final_data is not None
        client.set_server_final(step.final_data.decode())  # verifies the server signature
    return step


def test_rfc7677_example_exchange() -> None:
    # RFC 7677 §3, user "user", password "pencil".
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    salt_, stored, server, i = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
        "pencil", iteration_count=4096, salt=salt
    )
    b64 = base64.b64encode
    keys = f"{i},{b64(salt_).decode()},{b64(stored).decode()},{b64(server).decode()}"

    mech = ScramSha256Mechanism(server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    assert mech.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == NeedScramKeys("user", "")
    assert mech.scram_keys(keys) == Challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    step = mech.respond(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert step == Success("user", "", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_end_to_end_with_scramp_client() -> None:
    keys = _keys("correct horse")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "carol@example.org", "correct horse")
    step = _run_scram(server_mechanism("SCRAM-SHA-256"), client, lambda _u: keys)
    assert isinstance(step, Success)
    assert (step.authcid, step.authzid) == ("carol@example.org", "")
    assert step.final_data is not None
    assert step.final_data.startswith(b"v=")


def test_scram_wrong_password() -> None:
    keys = _keys("correct horse")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "carol@example.org", "wrong horse")
    assert _run_scram(ScramSha256Mechanism(), client, lambda _u: keys) == Failure(
        "invalid credentials"
    )


def test_scram_unknown_user_fails_only_after_client_final() -> None:
    client = scramp.ScramClient(["SCRAM-SHA-256"], "ghost@example.org", "whatever")
    mech = ScramSha256Mechanism()
    step = mech.start(client.get_client_first().encode())
    assert isinstance(step, NeedScramKeys)
    step = mech.scram_keys(None)
    assert isinstance(step, Challenge)  # looks like a real account
    client.set_server_first(step.data.decode())
    assert mech.respond(client.get_client_final().encode()) == Failure("invalid credentials")


def test_scram_unknown_user_salt_is_stable_and_looks_real() -> None:
    def server_first(user: str, keys: str | None) -> dict[str, str]:
        mech = ScramSha256Mechanism(server_nonce="fixed")
        mech.start(f"n,,n={user},r=abc".encode())
        step = mech.scram_keys(keys)
        assert isinstance(step, Challenge)
        return dict(a.split("=", 1) for a in step.data.decode().split(","))

    a1, a2 = server_first("ghost", None), server_first("ghost", None)
    b = server_first("phantom", None)
    real = server_first("alice", _keys("pw"))
    assert a1["s"] == a2["s"] != b["s"]
    assert len(base64.b64decode(a1["s"])) == len(base64.b64decode(real["s"]))
    assert a1["i"] == real["i"] == "4096"
    # A malformed stored value is treated as no keys.
    assert server_first("ghost", "garbage")["s"] == a1["s"]


def test_scram_channel_binding_required_is_refused() -> None:
    mech = ScramSha256Mechanism()
    step = mech.start(b"p=tls-exporter,,n=user,r=abc")
    assert isinstance(step, Failure)
    assert "channel binding" in step.reason


def test_scram_y_flag_accepted() -> None:
    # RFC 5802 §6: "y" = client supports channel binding but thinks we do not; fine.
    client = scramp.ScramClient(["SCRAM-SHA-256"], "u", "pw")
    first = client.get_client_first()
    assert first.startswith("n,,")
    mech = ScramSha256Mechanism()
    assert isinstance(mech.start(b"y,," + first[3:].encode()), NeedScramKeys)


def test_scram_proxy_refused() -> None:
    mech = ScramSha256Mechanism()
    step = mech.start(b"n,a=admin,n=user,r=abc")
    assert isinstance(step, Failure)
    assert step.reason.startswith("proxy authorisation is not allowed")


def test_scram_authzid_equal_to_user_name_accepted() -> None:
    # isync 1.4 (mbsync) sends "n,a=USER,n=USER,r=...": RFC 5802 §5.1/§7 allow it.
    keys = _keys("correct horse")
    first = scram_client("carol@example.org", "x", "carol@example.org").get_client_first()
    assert first.startswith("n,a=carol@example.org,n=carol@example.org,r=")
    client = scram_client("carol@example.org", "correct horse", "carol@example.org")
    step = _run_scram(server_mechanism("SCRAM-SHA-256"), client, lambda _u: keys)
    assert isinstance(step, Success)  # and the client checked the server signature
    assert (step.authcid, step.authzid) == ("carol@example.org", "")


def test_scram_authzid_equal_after_escaping_and_case() -> None:
    # "=2C"/"=3D" unescaped (RFC 5802 §7), then compared as an account address.
    keys = _keys("pw")
    for user, authzid in (("a,b=c", "a,b=c"), ("carol@example.org", "Carol@Example.ORG")):
        client = scram_client(user, "pw", authzid)
        assert isinstance(_run_scram(ScramSha256Mechanism(), client, lambda _u: keys), Success)


def test_scram_authzid_different_refused_with_wrong_password_too() -> None:
    client = scram_client("carol@example.org", "pw", "admin@example.org")
    step = ScramSha256Mechanism().start(client.get_client_first().encode())
    assert isinstance(step, Failure)
    assert step.reason.startswith("proxy authorisation is not allowed")


@pytest.mark.parametrize("first", [b"n,a=,n=user,r=abc", b"n,a=us=2Xer,n=user,r=abc"])
def test_scram_malformed_authzid(first: bytes) -> None:
    step = ScramSha256Mechanism().start(first)
    assert step == Failure("malformed SCRAM client-first message: bad authzid")


@pytest.mark.parametrize(
    "sent_header",
    [
        "n,,",  # the header without the authzid it had
        "y,a=carol@example.org,",  # another flag
        "n,a=admin@example.org,",  # another authzid
        "n,a=carol@example.org",  # cut short
    ],
)
def test_scram_tampered_channel_binding_refused(sent_header: str) -> None:
    # RFC 5802 §7: c= is the base64 of the gs2-header the client sent, authzid included.
    keys = _keys("pw")
    client = scram_client("carol@example.org", "pw", "carol@example.org")
    mech = ScramSha256Mechanism()
    assert isinstance(mech.start(client.get_client_first().encode()), NeedScramKeys)
    step = mech.scram_keys(keys)
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    final = client.get_client_final()
    right = "c=" + base64.b64encode(b"n,a=carol@example.org,").decode() + ","
    assert final.startswith(right)
    tampered = "c=" + base64.b64encode(sent_header.encode()).decode() + "," + final[len(right) :]
    step = mech.respond(tampered.encode())
    assert isinstance(step, Failure)
    assert "channel bindings don't match" in step.reason


def test_scram_without_authzid_c_must_be_plain_header() -> None:
    # A client that sent no authzid cannot claim one in c= either.
    keys = _keys("pw")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "carol@example.org", "pw")
    mech = ScramSha256Mechanism()
    mech.start(client.get_client_first().encode())
    step = mech.scram_keys(keys)
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    final = client.get_client_final()
    assert final.startswith("c=biws,")
    forged = "c=" + base64.b64encode(b"n,a=carol@example.org,").decode() + final[6:]
    assert isinstance(mech.respond(forged.encode()), Failure)


_SASLNAME = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Co", "Cn")),
    min_size=1,
    max_size=20,
)


@given(user=_SASLNAME, other=_SASLNAME)
@settings(max_examples=30, deadline=None)
def test_scram_authzid_property(user: str, other: str) -> None:
    """Any user name SASLprep keeps as it is logs in with itself as authzid; any other
    authzid fails, whatever the escaping."""
    try:
        if scramp.utils.saslprep(user) != user or scramp.utils.saslprep(other) != other:
            return
    except scramp.ScramException:
        return
    keys = _keys("pw")
    step = _run_scram(ScramSha256Mechanism(), scram_client(user, "pw", user), lambda _u: keys)
    assert isinstance(step, Success)
    if other.lower() != user.lower():
        client = scram_client(user, "pw", other)
        assert isinstance(ScramSha256Mechanism().start(client.get_client_first().encode()), Failure)


def test_scram_username_escapes() -> None:
    mech = ScramSha256Mechanism()
    assert mech.start(b"n,,n=a=2Cb=3Dc,r=abc") == NeedScramKeys("a,b=c", "")
    mech = ScramSha256Mechanism()
    assert isinstance(mech.start(b"n,,n=a=2Db,r=abc"), Failure)


@pytest.mark.parametrize(
    "first",
    [
        b"",
        b"n",
        b"n,",
        b"x,,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=us\x00er,r=abc",
        b"n,,n=\xff,r=abc",
        b"n,b=x,n=user,r=abc",
    ],
)
def test_scram_malformed_client_first(first: bytes) -> None:
    mech = ScramSha256Mechanism()
    assert isinstance(mech.start(first), Failure)


def test_scram_malformed_rest_of_client_first_fails_after_keys() -> None:
    # The user name is fine, the nonce is missing: scramp rejects it once it has keys,
    # whether or not the account exists.
    for keys in (None, _keys("pw")):
        mech = ScramSha256Mechanism()
        assert isinstance(mech.start(b"n,,n=user"), NeedScramKeys)
        assert isinstance(mech.scram_keys(keys), Failure)


@pytest.mark.parametrize(
    "final",
    [b"", b"c=biws", b"c=biws,r=wrong,p=AAAA", b"\xff", b"c=bad,r=x,p=y"],
)
def test_scram_malformed_client_final(final: bytes) -> None:
    mech = ScramSha256Mechanism()
    mech.start(b"n,,n=user,r=abc")
    assert isinstance(mech.scram_keys(_keys("pw")), Challenge)
    assert isinstance(mech.respond(final), Failure)


def test_scram_client_first_with_initial_challenge() -> None:
    mech = ScramSha256Mechanism()
    assert mech.start(None) == Challenge(b"")
    assert isinstance(mech.respond(b"n,,n=user,r=abc"), NeedScramKeys)
    assert isinstance(mech.password_result(True), Failure)


def test_factory() -> None:
    assert MECHANISMS == ("SCRAM-SHA-256", "PLAIN", "LOGIN")
    for name in MECHANISMS:
        mech = server_mechanism(name.lower())
        assert mech.name == name
    with pytest.raises(ValueError, match="CRAM-MD5"):
        server_mechanism("CRAM-MD5")


# -- property: arbitrary bytes into every state never raise --


def _drive(name: str, state: int) -> Mechanism:
    """A mechanism moved ``state`` steps into a well-formed exchange."""
    mech = server_mechanism(name)
    scripts: dict[str, list[Callable[[Mechanism], Step]]] = {
        "PLAIN": [lambda m: m.start(None)],
        "LOGIN": [lambda m: m.start(None), lambda m: m.respond(b"user")],
        "SCRAM-SHA-256": [
            lambda m: m.start(None),
            lambda m: m.respond(b"n,,n=user,r=abc"),
            lambda m: m.scram_keys(_SCRAM_KEYS),
        ],
    }
    for action in scripts[name][:state]:
        action(mech)
    return mech


_SCRAM_KEYS = make_scram_sha256("pw")


@given(
    name=st.sampled_from(MECHANISMS),
    state=st.integers(min_value=0, max_value=3),
    inputs=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    initial=st.one_of(st.none(), st.binary(max_size=100)),
    keys=st.one_of(st.none(), st.text(max_size=80)),
    ok=st.booleans(),
)
@settings(max_examples=400, deadline=None)
@example(
    name="SCRAM-SHA-256",
    state=3,
    inputs=[b"c=biws,r=abc,p=\x00"],
    initial=None,
    keys=None,
    ok=True,
)
def test_arbitrary_input_never_raises(
    name: str, state: int, inputs: list[bytes], initial: bytes | None, keys: str | None, ok: bool
) -> None:
    kinds = (Challenge, NeedPassword, NeedScramKeys, Success, Failure)
    mech = _drive(name, state)
    if state == 0:
        assert isinstance(mech.start(initial), kinds)
    for data in inputs:
        assert isinstance(mech.respond(data), kinds)
        assert isinstance(mech.scram_keys(keys), kinds)
        assert isinstance(mech.password_result(ok), kinds)
    assert isinstance(mech.start(initial), kinds)
