"""JWT issue / verify (``reactive_services.auth``): the acceptance matrix on HS256 and RS256,
the algorithm-confusion and ``alg: none`` attacks, scopes, and the environment configuration."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from reactive_services.auth import Claims, JwtConfig, check_scopes, issue_token, require_scopes, verify_token
from reactive_services.errors import AuthenticationError, ConfigError, PermissionDeniedError, ValidationError

NOW = 1_800_000_000.0  # a fixed "now" (2027-01-15) so that no test depends on the clock
SECRET = "s" * 20 + "-0123456789abcdef-test"  # 42 bytes


def rsa_pems(bits: int = 2048) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_keys() -> dict[str, tuple[str, str]]:
    """Two RSA key pairs: ``"a"`` (the configured one) and ``"b"`` (another)."""
    return {"a": rsa_pems(), "b": rsa_pems()}


@pytest.fixture(params=["HS256", "RS256"])
def configs(request: pytest.FixtureRequest, rsa_keys: dict[str, tuple[str, str]]) -> tuple[JwtConfig, JwtConfig]:
    """(the config under test, the same config with another key)."""
    if request.param == "HS256":
        return JwtConfig(secret=SECRET), JwtConfig(secret=SECRET.upper())
    (private_a, _), (private_b, _) = rsa_keys["a"], rsa_keys["b"]
    return JwtConfig(algorithm="RS256", private_key=private_a), JwtConfig(algorithm="RS256", private_key=private_b)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(config: JwtConfig, **changes: Any) -> dict[str, Any]:
    claims = {
        "sub": "alice",
        "scope": "orders:read",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "iss": config.issuer,
        "aud": config.audience,
        "jti": "j1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def reason(config: JwtConfig, token: str, now: float = NOW) -> str:
    with pytest.raises(AuthenticationError) as caught:
        verify_token(config, token, now=now)
    assert not token or token not in str(caught.value)
    assert caught.value.reason == str(caught.value)
    return str(caught.value)


# --------------------------------------------------------------------------- the matrix, both algorithms


def test_a_valid_token_is_accepted_with_its_claims(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    token = issue_token(config, "alice", ["orders:write", "orders:read", "orders:read"], now=NOW + 0.7)
    claims = verify_token(config, token, now=NOW + 10)
    assert isinstance(claims, Claims)
    assert claims.sub == "alice"
    assert claims.scopes == frozenset({"orders:read", "orders:write"})
    assert claims.expires_at == int(NOW) + 3600
    c = claims.claims
    assert c["scope"] == "orders:read orders:write"  # sorted, space-separated, no duplicates
    assert (c["iat"], c["nbf"], c["exp"]) == (int(NOW), int(NOW), int(NOW) + 3600)
    assert (c["iss"], c["aud"]) == ("reactive-services", "reactive-services")
    assert (
        len(c["jti"]) == 32
        and c["jti"] != verify_token(config, issue_token(config, "alice", [], now=NOW), now=NOW).claims["jti"]
    )
    assert jwt.get_unverified_header(token)["alg"] == config.algorithm


def test_an_expired_token_is_refused_after_the_leeway(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    token = issue_token(config, "alice", [], ttl_s=60, now=NOW)
    exp = int(NOW) + 60
    assert verify_token(config, token, now=exp + config.leeway_s - 0.5).sub == "alice"  # within the leeway
    assert reason(config, token, now=exp + config.leeway_s) == "token expired"
    assert reason(config, token, now=exp + 3600) == "token expired"
    strict = dataclasses.replace(config, leeway_s=0)
    assert reason(strict, issue_token(strict, "alice", [], ttl_s=60, now=NOW), now=exp) == "token expired"


def test_a_token_not_yet_valid_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    token = issue_token(config, "alice", [], now=NOW)
    assert verify_token(config, token, now=NOW - config.leeway_s).sub == "alice"  # clock skew allowed
    assert reason(config, token, now=NOW - config.leeway_s - 1) == "token not yet valid"


def test_a_token_for_another_audience_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    other = dataclasses.replace(config, audience="billing")
    assert reason(config, issue_token(other, "alice", [], now=NOW)) == "wrong audience"
    assert reason(other, issue_token(config, "alice", [], now=NOW)) == "wrong audience"


def test_a_token_from_another_issuer_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    other = dataclasses.replace(config, issuer="someone-else")
    assert reason(config, issue_token(other, "alice", [], now=NOW)) == "wrong issuer"


def test_a_token_signed_with_another_key_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, other_key = configs
    assert reason(config, issue_token(other_key, "alice", ["admin"], now=NOW)) == "bad signature"


def test_an_unsigned_alg_none_token_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    for alg in ("none", "None", "NONE"):
        token = ".".join(
            [b64(json.dumps({"alg": alg, "typ": "JWT"}).encode()), b64(json.dumps(claims_of(config)).encode()), ""]
        )
        assert reason(config, token) == "algorithm not allowed"
    # and as PyJWT itself would write it
    assert reason(config, jwt.encode(claims_of(config), None, algorithm="none")) == "algorithm not allowed"


def test_a_tampered_payload_is_refused(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    header, payload, signature = issue_token(config, "alice", ["orders:read"], now=NOW).split(".")
    claims = json.loads(unb64(payload))
    claims["scope"] = "orders:read admin"
    forged = ".".join([header, b64(json.dumps(claims).encode()), signature])
    assert reason(config, forged) == "bad signature"
    claims["scope"], claims["sub"] = "orders:read", "mallory"
    assert reason(config, ".".join([header, b64(json.dumps(claims).encode()), signature])) == "bad signature"


def test_a_token_of_the_other_algorithm_is_refused(
    configs: tuple[JwtConfig, JwtConfig], rsa_keys: dict[str, tuple[str, str]]
) -> None:
    config, _ = configs
    if config.algorithm == "HS256":
        other = JwtConfig(algorithm="RS256", private_key=rsa_keys["a"][0])
    else:
        other = JwtConfig(secret=SECRET)
    assert reason(config, issue_token(other, "alice", [], now=NOW)) == "algorithm not allowed"


def test_a_missing_scope_is_refused_and_named(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    claims = verify_token(config, issue_token(config, "alice", ["orders:read", "inventory:read"], now=NOW), now=NOW)
    assert require_scopes(claims, "orders:read") is claims
    assert require_scopes(claims) is claims
    with pytest.raises(PermissionDeniedError) as caught:
        require_scopes(claims, "orders:read", "orders:write", "admin")
    assert caught.value.missing == ("admin", "orders:write")
    assert str(caught.value) == "missing scope: admin orders:write"
    assert not caught.value.retriable


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat", "iss", "aud", "sub"])
def test_a_token_without_a_required_claim_is_refused(configs: tuple[JwtConfig, JwtConfig], claim: str) -> None:
    config, _ = configs
    token = jwt.encode(claims_of(config, **{claim: None}), config._signing_key, algorithm=config.algorithm)
    assert reason(config, token) == f"missing claim {claim!r}"


def test_garbage_is_refused_as_malformed(configs: tuple[JwtConfig, JwtConfig]) -> None:
    config, _ = configs
    for token in ("abc", "a.b.c", "....", "x" * 9000):
        assert reason(config, token) == "malformed token"
    assert reason(config, "") == "missing token"
    bad_exp = jwt.encode(claims_of(config, exp="tomorrow"), config._signing_key, algorithm=config.algorithm)
    assert reason(config, bad_exp) == "invalid claim 'exp'"
    bad_sub = jwt.encode(claims_of(config, sub=""), config._signing_key, algorithm=config.algorithm)
    assert reason(config, bad_sub) in ("missing claim 'sub'", "invalid claim 'sub'")


# --------------------------------------------------------------------------- algorithm confusion


def test_algorithm_confusion_an_hs256_token_keyed_with_the_rsa_public_key_is_refused(
    rsa_keys: dict[str, tuple[str, str]],
) -> None:
    private, public = rsa_keys["a"]
    verifier = JwtConfig(algorithm="RS256", public_key=public)
    assert verifier.public_key == public
    # The classic attack: the attacker knows the public PEM and uses it as an HMAC secret,
    # hoping the verifier feeds "its key" to whatever algorithm the header names.
    signing_input = ".".join(
        [
            b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            b64(json.dumps(claims_of(verifier, scope="admin")).encode()),
        ]
    )
    for key in (public, public.strip(), public.encode()):
        raw = key if isinstance(key, bytes) else key.encode()
        signature = hmac.new(raw, signing_input.encode(), hashlib.sha256).digest()
        assert reason(verifier, signing_input + "." + b64(signature)) == "algorithm not allowed"
    # and the genuine RS256 token still passes
    issuer = JwtConfig(algorithm="RS256", private_key=private)
    assert verify_token(verifier, issue_token(issuer, "alice", ["admin"], now=NOW), now=NOW).scopes == {"admin"}


def test_a_pem_key_cannot_be_configured_as_an_hs256_secret(rsa_keys: dict[str, tuple[str, str]]) -> None:
    with pytest.raises(ConfigError) as caught:
        JwtConfig(secret=rsa_keys["a"][1])
    assert caught.value.key == "secret"


def test_a_verify_only_rs256_config_cannot_issue(rsa_keys: dict[str, tuple[str, str]]) -> None:
    verifier = JwtConfig(algorithm="RS256", public_key=rsa_keys["a"][1])
    assert not verifier.can_issue
    with pytest.raises(ConfigError) as caught:
        issue_token(verifier, "alice", [])
    assert caught.value.key == "private_key"


# --------------------------------------------------------------------------- configuration


def test_the_repr_shows_no_secret_and_no_private_key(rsa_keys: dict[str, tuple[str, str]]) -> None:
    assert SECRET not in repr(JwtConfig(secret=SECRET))
    text = repr(JwtConfig(algorithm="RS256", private_key=rsa_keys["a"][0]))
    assert "PRIVATE" not in text and "RS256" in text


def test_development_configs_have_random_secrets_of_their_own() -> None:
    a, b = JwtConfig.development(), JwtConfig.development(ttl_s=60)
    assert a.algorithm == "HS256" and a != b and b.ttl_s == 60
    assert len(str(a.secret).encode()) >= 32
    assert reason(b, issue_token(a, "alice", [], now=NOW)) == "bad signature"


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"secret": "short"}, "secret"),
        ({}, "secret"),
        ({"algorithm": "ES256", "secret": SECRET}, "algorithm"),
        ({"algorithm": "none", "secret": SECRET}, "algorithm"),
        ({"algorithm": "RS256"}, "public_key"),
        (
            {"algorithm": "RS256", "private_key": "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"},
            "private_key",
        ),
        ({"algorithm": "RS256", "public_key": "nope"}, "public_key"),
        ({"secret": SECRET, "ttl_s": 0}, "ttl_s"),
        ({"secret": SECRET, "ttl_s": 1.5}, "ttl_s"),
        ({"secret": SECRET, "leeway_s": -1}, "leeway_s"),
        ({"secret": SECRET, "leeway_s": 3600}, "leeway_s"),
        ({"secret": SECRET, "issuer": ""}, "issuer"),
        ({"secret": SECRET, "audience": ""}, "audience"),
    ],
)
def test_a_bad_config_names_its_field(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        JwtConfig(**kwargs)
    assert caught.value.key == key


def test_rs256_keys_must_match_and_be_long_enough(rsa_keys: dict[str, tuple[str, str]]) -> None:
    with pytest.raises(ConfigError) as caught:
        JwtConfig(algorithm="RS256", private_key=rsa_keys["a"][0], public_key=rsa_keys["b"][1])
    assert (caught.value.key, str(caught.value)) == ("public_key", "public_key: does not match private_key")
    small_private, _ = rsa_pems(1024)
    with pytest.raises(ConfigError) as caught:
        JwtConfig(algorithm="RS256", private_key=small_private)
    assert caught.value.key == "private_key" and "2048" in str(caught.value)


def test_from_env_reads_every_setting(tmp_path: Path, rsa_keys: dict[str, tuple[str, str]]) -> None:
    hs = JwtConfig.from_env(
        {
            "RS_JWT_SECRET": SECRET,
            "RS_JWT_ISSUER": "shop-auth",
            "RS_JWT_AUDIENCE": "shop",
            "RS_JWT_TTL_S": "900",
            "RS_JWT_LEEWAY_S": "2.5",
            "RS_JWT_PRIVATE_KEY": "",
        }
    )
    assert (hs.algorithm, hs.issuer, hs.audience, hs.ttl_s, hs.leeway_s) == ("HS256", "shop-auth", "shop", 900, 2.5)
    private, public = rsa_keys["a"]
    (tmp_path / "private.pem").write_text(private)
    issuer = JwtConfig.from_env({"RS_JWT_ALGORITHM": "rs256", "RS_JWT_PRIVATE_KEY_FILE": str(tmp_path / "private.pem")})
    # a PEM in a variable may have literal \n for its line breaks (docker --env-file, CI secrets)
    verifier = JwtConfig.from_env({"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PUBLIC_KEY": public.replace("\n", "\\n")})
    assert issuer.can_issue and not verifier.can_issue
    assert verify_token(verifier, issue_token(issuer, "bob", ["orders:write"], now=NOW), now=NOW).sub == "bob"
    custom = JwtConfig.from_env({"APP_SECRET": SECRET, "APP_TTL_S": "5"}, prefix="APP_")
    assert custom.ttl_s == 5


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({}, "RS_JWT_SECRET"),
        ({"RS_JWT_SECRET": ""}, "RS_JWT_SECRET"),
        ({"RS_JWT_SECRET": "too-short"}, "RS_JWT_SECRET"),
        ({"RS_JWT_ALGORITHM": "ES256", "RS_JWT_SECRET": SECRET}, "RS_JWT_ALGORITHM"),
        ({"RS_JWT_ALGORITHM": "RS256"}, "RS_JWT_PUBLIC_KEY"),
        ({"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PRIVATE_KEY": "garbage"}, "RS_JWT_PRIVATE_KEY"),
        ({"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PUBLIC_KEY": "garbage"}, "RS_JWT_PUBLIC_KEY"),
        ({"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"}, "RS_JWT_PRIVATE_KEY_FILE"),
        ({"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PUBLIC_KEY_FILE": "/nonexistent/key.pem"}, "RS_JWT_PUBLIC_KEY_FILE"),
        (
            {"RS_JWT_ALGORITHM": "RS256", "RS_JWT_PRIVATE_KEY": "x", "RS_JWT_PRIVATE_KEY_FILE": "y"},
            "RS_JWT_PRIVATE_KEY_FILE",
        ),
        ({"RS_JWT_SECRET": SECRET, "RS_JWT_TTL_S": "1h"}, "RS_JWT_TTL_S"),
        ({"RS_JWT_SECRET": SECRET, "RS_JWT_TTL_S": "0"}, "RS_JWT_TTL_S"),
        ({"RS_JWT_SECRET": SECRET, "RS_JWT_LEEWAY_S": "soon"}, "RS_JWT_LEEWAY_S"),
        ({"RS_JWT_SECRET": SECRET, "RS_JWT_LEEWAY_S": "nan"}, "RS_JWT_LEEWAY_S"),
        ({"RS_JWT_SECRET": SECRET, "RS_JWT_LEEWAY_S": "600"}, "RS_JWT_LEEWAY_S"),
    ],
)
def test_from_env_errors_name_the_variable(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        JwtConfig.from_env(env)
    assert caught.value.key == key
    assert str(caught.value).startswith(key + ": ")
    if "RS_JWT_SECRET" in env and env["RS_JWT_SECRET"]:
        assert env["RS_JWT_SECRET"] not in str(caught.value)


def test_from_env_names_the_mismatching_key_file(tmp_path: Path, rsa_keys: dict[str, tuple[str, str]]) -> None:
    (tmp_path / "public.pem").write_text(rsa_keys["b"][1])
    with pytest.raises(ConfigError) as caught:
        JwtConfig.from_env(
            {
                "RS_JWT_ALGORITHM": "RS256",
                "RS_JWT_PRIVATE_KEY": rsa_keys["a"][0],
                "RS_JWT_PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
            }
        )
    assert caught.value.key == "RS_JWT_PUBLIC_KEY_FILE"


# --------------------------------------------------------------------------- scopes and inputs


def test_scopes_are_oauth_scope_tokens() -> None:
    assert check_scopes(["b", "a:x", "b"]) == ("a:x", "b")
    for bad in (["two words"], [""], ['quo"te'], ["back\\slash"], ["é"], [3]):
        with pytest.raises(ValidationError):
            check_scopes(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        check_scopes("orders:read")  # a bare string is a mistake, not a list of letters
    config = JwtConfig(secret=SECRET)
    with pytest.raises(ValidationError):
        issue_token(config, "alice", ["a b"])
    with pytest.raises(ValidationError):
        issue_token(config, "", [])
    with pytest.raises(ConfigError):
        issue_token(config, "alice", [], ttl_s=0)


def test_the_clock_is_used_when_no_time_is_given() -> None:
    config = JwtConfig(secret=SECRET, ttl_s=120)
    claims = verify_token(config, issue_token(config, "alice", []))
    assert abs(claims.expires_at - (time.time() + 120)) < 5


def test_the_auth_errors_are_not_retriable_and_carry_their_details_across_request_reply() -> None:
    from reactive_services.errors import ReactiveServicesError, RemoteError, TooManyAttemptsError

    for cls in (AuthenticationError, PermissionDeniedError, TooManyAttemptsError):
        assert issubclass(cls, ReactiveServicesError) and cls.retriable is False
    refused = TooManyAttemptsError(41.2)
    assert (refused.retry_after_s, str(refused)) == (42, "too many failed attempts; retry after 42 s")
    assert TooManyAttemptsError(0).retry_after_s == 1
    assert TooManyAttemptsError.from_remote(refused) is refused
    # what the client of a request gets: RemoteError(type name, str(exc))
    assert TooManyAttemptsError.from_remote(RemoteError("TooManyAttemptsError", str(refused))).retry_after_s == 42
    assert TooManyAttemptsError.from_remote(RemoteError("TooManyAttemptsError", "garbled")).retry_after_s == 1
    assert TooManyAttemptsError.from_remote(RemoteError("AuthenticationError", "retry after 5 s")) is None
    assert TooManyAttemptsError.from_remote(ValueError("x")) is None
