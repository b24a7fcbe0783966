"""Authentication and entitlements without a server: API keys (hashed, revocable, reloaded),
JWTs (HS256, ES256 and EdDSA from a JWKS; exp, nbf, aud, iss), anonymous policy, and what a
key may subscribe to."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from gateway.auth import Authenticator, Entitlements, KeyFile, anonymous_allowed
from gateway.tokens import JwtVerifier
from schemas.errors import ProtocolError
from schemas.protocol import ErrorCode, StreamType

NOW_MS = 1_800_000_000_000
SECRET = "a shared secret of at least 32 bytes!"


def test_a_key_is_stored_hashed_and_authenticates_until_revoked(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key, entry = keys.create("alice", Entitlements(symbols=("BTC/USDT",)))
    stored = (tmp_path / "keys.json").read_text()
    assert key not in stored and key.split("_", 2)[2] not in stored  # only a hash is kept
    principal = keys.authenticate(key)
    assert principal is not None and principal.name == "alice"
    assert principal.owner == f"key:{entry['id']}" and principal.authenticated
    assert principal.entitlements.symbols == ("BTC/USDT",)
    # a wrong secret for a real id, a malformed key, an unknown id
    assert keys.authenticate(key[:-2] + ("AA" if not key.endswith("AA") else "BB")) is None
    assert keys.authenticate("fiml_nothing") is None
    assert keys.authenticate("fiml_00000000_" + "x" * 43) is None
    # another process (fiml keys revoke) revokes it: the file is read again
    other = KeyFile(tmp_path / "keys.json")
    time.sleep(0.01)  # a distinct mtime on coarse file systems
    assert other.revoke(entry["id"]) and not other.revoke("nope")
    assert keys.authenticate(key) is None


def test_a_missing_key_file_means_no_keys(tmp_path: Path) -> None:
    assert KeyFile(tmp_path / "none.json").authenticate("fiml_a_b") is None


@pytest.mark.parametrize(
    ("policy", "host", "allowed"),
    [
        ("auto", "127.0.0.1", True),
        ("auto", "::1", True),
        ("auto", "localhost", True),
        ("auto", "0.0.0.0", False),
        ("auto", "192.168.1.5", False),
        ("auto", "gateway.example", False),
        ("allow", "0.0.0.0", True),
        ("deny", "127.0.0.1", False),
    ],
)
def test_anonymous_access_by_default_only_on_loopback(
    policy: str, host: str, allowed: bool
) -> None:
    assert anonymous_allowed(policy, host) is allowed


def test_an_unknown_anonymous_policy_is_refused_plainly() -> None:
    with pytest.raises(ValueError, match="auto, allow or deny"):
        anonymous_allowed("maybe", "127.0.0.1")


symbols = st.sampled_from(["BTC/USDT", "ETH/USDT", "BTC/EUR", "AAPL", "EUR/USD"])


@given(st.lists(symbols, min_size=1, max_size=4), st.sampled_from(StreamType))
def test_a_key_limited_to_btc_usdt_prices_gets_exactly_that(
    wanted: list[str], stream_type: StreamType
) -> None:
    granted = Entitlements(streams=frozenset({"price"}), symbols=("BTC/USDT",))
    allowed = stream_type is StreamType.PRICE and set(wanted) == {"BTC/USDT"}
    try:
        granted.check(stream_type, wanted, False, None, NOW_MS)
    except ProtocolError as exc:
        assert not allowed
        assert exc.code is ErrorCode.FORBIDDEN
        # the refusal names what was asked, never what is granted
        assert "BTC/USDT" not in exc.message or "BTC/USDT" in wanted
    else:
        assert allowed


def test_patterns_replay_and_raw_entitlements() -> None:
    granted = Entitlements(symbols=("BTC/*",), replay=True, replay_max_age_ms=3_600_000, raw=False)
    granted.check(StreamType.OHLCV, ["BTC/USDT", "BTC/EUR"], False, NOW_MS - 60_000, NOW_MS)
    for args, field in [
        ((StreamType.PRICE, ["ETH/USDT"], False, None), "symbols"),
        ((StreamType.PRICE, ["BTC/USDT"], True, None), "params.source"),
        ((StreamType.PRICE, ["BTC/USDT"], False, NOW_MS - 7_200_000), "replay_from"),
    ]:
        with pytest.raises(ProtocolError) as exc:
            granted.check(*args, NOW_MS)
        assert exc.value.code is ErrorCode.FORBIDDEN and exc.value.field == field
    with pytest.raises(ProtocolError, match="replay"):
        Entitlements(replay=False).check(StreamType.PRICE, ["A"], False, NOW_MS, NOW_MS)


def test_entitlements_round_trip_and_bad_ones_are_refused() -> None:
    e = Entitlements(frozenset({"price", "ohlcv"}), ("BTC/*",), False, 5, False, True)
    assert Entitlements.from_mapping(e.to_mapping()) == e
    for bad in (
        {"streams": "price"},
        {"symbols": [1]},
        {"replay": "yes"},
        {"replay_max_age_ms": -1},
    ):
        with pytest.raises(ValueError):
            Entitlements.from_mapping(bad)


def _hs(secret: str = SECRET, **claims: object) -> str:
    now = int(time.time())
    body = {"sub": "bob", "exp": now + 60, "nbf": now - 1, "aud": "fiml", "iss": "me", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, "HS256")


def test_hs256_tokens_are_checked_for_signature_exp_nbf_aud_and_iss() -> None:
    verify = JwtVerifier(secret=SECRET, audience="fiml", issuer="me").verify
    good = verify(_hs(fiml={"symbols": ["BTC/USDT"], "streams": ["price"]}))
    assert good is not None and good.owner == "jwt:bob" and good.expires_at_ms is not None
    assert good.entitlements.symbols == ("BTC/USDT",)
    now = int(time.time())
    for bad in (
        _hs(secret="another shared secret, 32 bytes long"),
        _hs(exp=now - 60),
        _hs(nbf=now + 600),
        _hs(aud="other"),
        _hs(iss="them"),
        _hs(exp=None),
        _hs(fiml="everything"),
        "not.a.token",
        jwt.encode({"sub": "bob", "exp": now + 60}, "", "none") if False else "e30.e30.",
    ):
        assert verify(bad) is None, bad


def test_es256_and_eddsa_tokens_verify_against_a_jwks_file(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    jwks = {
        "keys": [
            {**json.loads(ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1", "alg": "ES256"},
            {**json.loads(OKPAlgorithm.to_jwk(ed_key.public_key())), "kid": "ed1", "alg": "EdDSA"},
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    verifier = JwtVerifier(jwks_file=str(tmp_path / "jwks.json"))
    claims = {"sub": "carol", "exp": int(time.time()) + 60}
    es = jwt.encode(claims, ec_key, "ES256", headers={"kid": "ec1"})
    ed = jwt.encode(claims, ed_key, "EdDSA", headers={"kid": "ed1"})
    assert (p := verifier.verify(es)) is not None and p.owner == "jwt:carol"
    assert verifier.verify(ed) is not None
    # signed by a key the JWKS does not hold, or an HS256 token with no secret configured
    stranger = jwt.encode(
        claims, ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "ec1"}
    )
    assert verifier.verify(stranger) is None
    assert verifier.verify(_hs()) is None


def test_the_authenticator_tells_keys_from_tokens(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key, _ = keys.create("k", Entitlements())
    auth = Authenticator(keys, JwtVerifier(secret=SECRET))
    assert auth.authenticate(key) is not None
    assert auth.authenticate(_hs(aud=None, iss=None)) is not None
    assert Authenticator(keys).authenticate(_hs()) is None  # no JWT configured


def test_eddsa_tokens_verify_against_a_jwks_url(tmp_path: Path) -> None:
    """The JWKS fetched from a URL (an identity provider's endpoint; here a local server)."""
    import http.server
    import threading

    key = ed25519.Ed25519PrivateKey.generate()
    body = json.dumps(
        {
            "keys": [
                {
                    **json.loads(OKPAlgorithm.to_jwk(key.public_key())),
                    "kid": "k1",
                    "alg": "EdDSA",
                    "use": "sig",
                }
            ]
        }
    ).encode()

    class Jwks(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/jwks.json"
        verifier = JwtVerifier(jwks_url=url, audience="fiml")
        claims = {"sub": "erin", "exp": int(time.time()) + 60, "aud": "fiml"}
        good = jwt.encode(claims, key, "EdDSA", headers={"kid": "k1"})
        assert (p := verifier.verify(good)) is not None and p.owner == "jwt:erin"
        wrong_aud = jwt.encode({**claims, "aud": "x"}, key, "EdDSA", headers={"kid": "k1"})
        assert verifier.verify(wrong_aud) is None
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_a_short_hs256_secret_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        JwtVerifier(secret="short")
    with pytest.raises(ValueError, match="secret, a JWKS"):
        JwtVerifier()
