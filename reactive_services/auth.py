"""JSON Web Tokens for the services and their gateway: issue, verify, check scopes.

A token is a JWT (RFC 7519) signed with one configured algorithm, ``HS256`` (HMAC with a
shared secret) or ``RS256`` (RSA PKCS#1 v1.5: the auth service holds the private key, the
gateway only the public one). Its claims::

    sub    the user (str, non-empty)
    scope  the granted scopes, space-separated (OAuth 2 style, RFC 6749 §3.3; may be "")
    iat    issued at, nbf not before (= iat), exp expires (= iat + ttl_s)   seconds since the epoch
    iss    JwtConfig.issuer          aud    JwtConfig.audience
    jti    a fresh uuid4 hex (a token id, for logs and revocation lists)

:func:`verify_token` accepts a token only when all of this holds, else it raises
:class:`~reactive_services.errors.AuthenticationError` with a short reason (never the token):

* its header's ``alg`` is **exactly** ``config.algorithm`` (so ``alg: none``, and the
  HS256/RS256 confusion where an HS256 token is "signed" with the RSA public key as its
  HMAC secret, are refused: ``"algorithm not allowed"``), and the signature verifies with
  the configured key (``"bad signature"``);
* ``exp``, ``nbf``, ``iat``, ``iss``, ``aud`` and ``sub`` are present (``"missing claim 'exp'"``);
* ``now < exp + leeway_s`` (``"token expired"``), ``nbf <= now + leeway_s`` and
  ``iat <= now + leeway_s`` (``"token not yet valid"``);
* ``iss == config.issuer`` (``"wrong issuer"``), ``aud`` is or contains ``config.audience``
  (``"wrong audience"``).

Signature and claim parsing are PyJWT's (``jwt.decode`` with ``algorithms=[config.algorithm]``);
the time checks are done here against ``now`` so that callers and tests can pass the time.

Scopes are names such as ``orders:write``; :func:`require_scopes` raises
:class:`~reactive_services.errors.PermissionDeniedError` naming the missing ones. No scope
implies another (``admin`` is not a wildcard). The shop's scopes and which websocket channel
needs which are in ``reactive_services.examples.shop.auth`` (``SCOPES``, ``CHANNEL_SCOPES``).

Configuration from the environment (:meth:`JwtConfig.from_env`)::

    RS_JWT_ALGORITHM          HS256 (default) | RS256
    RS_JWT_SECRET             HS256: the shared secret, >= 32 bytes (UTF-8)
    RS_JWT_PRIVATE_KEY        RS256: PEM text of the private key (to issue); or
    RS_JWT_PRIVATE_KEY_FILE     a file holding it
    RS_JWT_PUBLIC_KEY         RS256: PEM text of the public key (to verify; derived from the
    RS_JWT_PUBLIC_KEY_FILE      private key when absent); or a file holding it
    RS_JWT_ISSUER             default "reactive-services"
    RS_JWT_AUDIENCE           default "reactive-services"
    RS_JWT_TTL_S              token lifetime in seconds, integer >= 1, default 3600
    RS_JWT_LEEWAY_S           clock-skew allowance in seconds, 0..60, default 5

A missing or bad value raises :class:`~reactive_services.errors.ConfigError` whose ``key`` is
the variable's name.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import AuthenticationError, ConfigError, PermissionDeniedError, ValidationError

__all__ = [
    "Claims",
    "JwtConfig",
    "check_scopes",
    "issue_token",
    "require_scopes",
    "verify_token",
]

Algorithm = Literal["HS256", "RS256"]

#: HS256 secrets shorter than this (bytes, UTF-8) are refused (RFC 7518 §3.2: a key of at
#: least the hash output size, 256 bits).
MIN_SECRET_BYTES = 32
#: RSA keys shorter than this (bits) are refused (RFC 7518 §3.3).
MIN_RSA_BITS = 2048
#: Largest accepted clock-skew allowance, seconds.
MAX_LEEWAY_S = 60.0
#: Tokens longer than this (characters) are refused before any parsing.
MAX_TOKEN_CHARS = 8192

DEFAULT_ISSUER = "reactive-services"
DEFAULT_AUDIENCE = "reactive-services"

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_REQUIRED_CLAIMS = ["exp", "nbf", "iat", "iss", "aud", "sub"]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class JwtConfig:
    """How tokens are signed and checked. Secrets and private keys are left out of ``repr``.

    Args:
        algorithm: ``"HS256"`` or ``"RS256"``; the only algorithm :func:`verify_token` accepts.
        secret: HS256: the shared secret, at least 32 bytes once UTF-8 encoded; a PEM key is
            refused here (that is the algorithm-confusion mistake).
        private_key: RS256: PEM text of an RSA private key (>= 2048 bits), needed to issue.
        public_key: RS256: PEM text of the RSA public key, needed to verify; derived from
            ``private_key`` when not given; must match it when both are given.
        issuer: the ``iss`` claim written and required.
        audience: the ``aud`` claim written and required.
        ttl_s: lifetime of issued tokens, whole seconds >= 1 (default 3600).
        leeway_s: allowance for clock skew on ``exp``/``nbf``/``iat``, seconds in 0..60
            (default 5).

    Raises:
        ConfigError: a value is missing, of the wrong kind or out of range (``key`` is the
            field name: ``"secret"``, ``"private_key"``, ...).
    """

    algorithm: Algorithm = "HS256"
    secret: str | bytes | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)
    public_key: str | None = field(default=None, repr=False)
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    ttl_s: int = 3600
    leeway_s: float = 5.0
    # loaded keys, filled by __post_init__
    _signing_key: Any = field(default=None, init=False, repr=False, compare=False)
    _verifying_key: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.algorithm not in ("HS256", "RS256"):
            raise ConfigError("algorithm", f"must be HS256 or RS256, got {self.algorithm!r}")
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ConfigError("issuer", "must be a non-empty string")
        if not isinstance(self.audience, str) or not self.audience:
            raise ConfigError("audience", "must be a non-empty string")
        if isinstance(self.ttl_s, bool) or not isinstance(self.ttl_s, int) or self.ttl_s < 1:
            raise ConfigError("ttl_s", f"must be an integer >= 1 (seconds), got {self.ttl_s!r}")
        if (
            isinstance(self.leeway_s, bool)
            or not isinstance(self.leeway_s, (int, float))
            or not 0 <= self.leeway_s <= MAX_LEEWAY_S
        ):
            raise ConfigError("leeway_s", f"must be a number of seconds in 0..{MAX_LEEWAY_S:g}, got {self.leeway_s!r}")
        if self.algorithm == "HS256":
            self._check_hs256()
        else:
            self._check_rs256()

    def _check_hs256(self) -> None:
        for name in ("private_key", "public_key"):
            if getattr(self, name) is not None:
                raise ConfigError(name, "is for RS256; HS256 uses secret")
        if self.secret is None or self.secret in ("", b""):
            raise ConfigError("secret", "not set (HS256 needs a shared secret of at least 32 bytes)")
        if not isinstance(self.secret, (str, bytes)):
            raise ConfigError("secret", f"must be str or bytes, got {type(self.secret).__name__}")
        raw = self.secret.encode("utf-8") if isinstance(self.secret, str) else self.secret
        if len(raw) < MIN_SECRET_BYTES:
            raise ConfigError("secret", f"too short: {len(raw)} bytes, HS256 needs at least {MIN_SECRET_BYTES}")
        if b"-----BEGIN" in raw or raw.startswith(b"ssh-"):
            raise ConfigError("secret", "looks like a PEM/SSH key; an HS256 secret must not be a public key")
        object.__setattr__(self, "_signing_key", raw)
        object.__setattr__(self, "_verifying_key", raw)

    def _check_rs256(self) -> None:
        if self.secret is not None:
            raise ConfigError("secret", "is for HS256; RS256 uses private_key / public_key")
        if self.private_key is None and self.public_key is None:
            raise ConfigError("public_key", "not set (RS256 needs public_key to verify, private_key to issue)")
        private = public = None
        if self.private_key is not None:
            private = _load_private(self.private_key)
            public = private.public_key()
        if self.public_key is not None:
            given = _load_public(self.public_key)
            if public is not None and given.public_numbers() != public.public_numbers():
                raise ConfigError("public_key", "does not match private_key")
            public = given
        else:
            assert public is not None
            derived = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            object.__setattr__(self, "public_key", derived.decode("ascii"))
        object.__setattr__(self, "_signing_key", private)
        object.__setattr__(self, "_verifying_key", public)

    @property
    def can_issue(self) -> bool:
        """True when tokens can be signed (HS256, or RS256 with a private key)."""
        return self._signing_key is not None

    @classmethod
    def development(cls, **overrides: Any) -> JwtConfig:
        """An HS256 config with a fresh random 48-byte secret: **for development and tests only**.

        The secret lives in this object alone: tokens it issues cannot be verified by any
        other process, and die with it. ``overrides`` are other fields (``ttl_s``, ``issuer``...).
        """
        return cls(algorithm="HS256", secret=secrets.token_urlsafe(48), **overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, prefix: str = "RS_JWT_") -> JwtConfig:
        """Read the configuration from environment variables (table in the module docstring).

        An empty variable counts as unset. PEM text given in a variable may use literal ``\\n``
        for its line breaks.

        Args:
            environ: the variables (default ``os.environ``).
            prefix: the variables' common prefix.

        Raises:
            ConfigError: a variable is missing or bad; ``key`` is its full name, e.g.
                ``"RS_JWT_SECRET"`` or ``"RS_JWT_PRIVATE_KEY_FILE"``.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(prefix + name)
            return value if value else None

        algorithm = (get("ALGORITHM") or "HS256").strip().upper()
        if algorithm not in ("HS256", "RS256"):
            raise ConfigError(prefix + "ALGORITHM", f"must be HS256 or RS256, got {get('ALGORITHM')!r}")
        sources: dict[str, str] = {}  # field -> the variable it came from

        def pem(name: str) -> str | None:
            text, from_file = get(name), get(name + "_FILE")
            if text and from_file:
                raise ConfigError(prefix + name + "_FILE", f"set only one of {prefix}{name} and {prefix}{name}_FILE")
            if from_file:
                sources[name.lower()] = prefix + name + "_FILE"
                try:
                    return Path(from_file).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    raise ConfigError(prefix + name + "_FILE", f"cannot read {from_file}: {reason}") from exc
            if text:
                sources[name.lower()] = prefix + name
                return text.replace("\\n", "\n") if "\n" not in text else text
            return None

        kwargs: dict[str, Any] = {"algorithm": algorithm}
        if algorithm == "HS256":
            kwargs["secret"] = get("SECRET")
        else:
            kwargs["private_key"] = pem("PRIVATE_KEY")
            kwargs["public_key"] = pem("PUBLIC_KEY")
        for name in ("ISSUER", "AUDIENCE"):
            if get(name) is not None:
                kwargs[name.lower()] = get(name)
        ttl = get("TTL_S")
        if ttl is not None:
            try:
                kwargs["ttl_s"] = int(ttl)
            except ValueError:
                raise ConfigError(prefix + "TTL_S", f"must be an integer number of seconds >= 1, got {ttl!r}") from None
        leeway = get("LEEWAY_S")
        if leeway is not None:
            try:
                kwargs["leeway_s"] = float(leeway)
            except ValueError:
                raise ConfigError(prefix + "LEEWAY_S", f"must be a number of seconds, got {leeway!r}") from None
            if not math.isfinite(kwargs["leeway_s"]):
                raise ConfigError(prefix + "LEEWAY_S", f"must be a number of seconds, got {leeway!r}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            key = sources.get(exc.key) or prefix + exc.key.upper()
            raise ConfigError(key, str(exc).split(": ", 1)[1]) from None


def _load_private(text: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(text.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError("private_key", "not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("private_key", f"RS256 needs an RSA key, got {type(key).__name__}")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError("private_key", f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
    return key


def _load_public(text: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ConfigError("public_key", "not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError("public_key", f"RS256 needs an RSA key, got {type(key).__name__}")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigError("public_key", f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} needed")
    return key


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token.

    Attributes:
        sub: the user.
        scopes: the granted scopes.
        expires_at: the ``exp`` claim, seconds since the epoch.
        claims: every claim of the token, as decoded.
    """

    sub: str
    scopes: frozenset[str]
    expires_at: int
    claims: dict[str, Any]


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` validated (RFC 6749 scope-tokens: printable ASCII, no space, ``"`` or ``\\``),
    de-duplicated and sorted.

    Raises:
        ValidationError: ``scopes`` is a bare string, or a scope is not a scope-token.
    """
    if isinstance(scopes, (str, bytes)):
        raise ValidationError(f"scopes: must be a list of scope names, not a string: {scopes!r}")
    checked = set()
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE_TOKEN.fullmatch(scope):
            raise ValidationError(
                f"scope: {scope!r} is not a valid scope name (printable ASCII, no space, '\"' or '\\')"
            )
        checked.add(scope)
    return tuple(sorted(checked))


def issue_token(
    config: JwtConfig,
    sub: str,
    scopes: Iterable[str],
    *,
    ttl_s: int | None = None,
    now: float | None = None,
) -> str:
    """Sign a token for ``sub`` with ``scopes`` (claims in the module docstring).

    Args:
        config: signs with ``config.algorithm``; RS256 needs ``private_key``.
        sub: the user, a non-empty string.
        scopes: scope names; written sorted and space-separated in ``scope``.
        ttl_s: lifetime in whole seconds >= 1 (default ``config.ttl_s``).
        now: the issue time, seconds since the epoch (default: the clock); ``iat`` and
            ``nbf`` are its whole seconds, ``exp = iat + ttl_s``.

    Returns:
        The compact JWT (``header.payload.signature``).

    Raises:
        ConfigError: RS256 without a private key (``key="private_key"``); a bad ``ttl_s``.
        ValidationError: ``sub`` is empty or not a string; a scope is not a valid name.
    """
    if not config.can_issue:
        raise ConfigError("private_key", "RS256 needs the private key to issue tokens (only the public key is set)")
    if not isinstance(sub, str) or not sub:
        raise ValidationError(f"sub: must be a non-empty string, got {sub!r}")
    ttl = config.ttl_s if ttl_s is None else ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise ConfigError("ttl_s", f"must be an integer >= 1 (seconds), got {ttl!r}")
    issued = int(time.time() if now is None else now)
    payload = {
        "sub": sub,
        "scope": " ".join(check_scopes(scopes)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "iss": config.issuer,
        "aud": config.audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(payload, config._signing_key, algorithm=config.algorithm)


def verify_token(config: JwtConfig, token: str, *, now: float | None = None) -> Claims:
    """Check ``token`` against ``config`` by the rules of the module docstring.

    Args:
        config: the one algorithm, key, issuer and audience accepted.
        token: the compact JWT (without ``Bearer``).
        now: the time to check ``exp``/``nbf``/``iat`` against, seconds since the epoch
            (default: the clock).

    Returns:
        The :class:`Claims`.

    Raises:
        AuthenticationError: the token is not valid; the message is a short reason
            (``"token expired"``, ``"bad signature"``, ``"algorithm not allowed"``, ...).
    """
    if not isinstance(token, str) or not token:
        raise AuthenticationError("missing token")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("malformed token")
    try:
        payload = jwt.decode(
            token,
            config._verifying_key,
            algorithms=[config.algorithm],
            audience=config.audience,
            issuer=config.issuer,
            options={
                "require": _REQUIRED_CLAIMS,
                # checked below against ``now``
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError:
        raise AuthenticationError("algorithm not allowed") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError("bad signature") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthenticationError(f"missing claim {exc.claim!r}") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("wrong audience") from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError("wrong issuer") from None
    except (jwt.DecodeError, jwt.InvalidKeyError):
        raise AuthenticationError("malformed token") from None
    except jwt.PyJWTError:
        raise AuthenticationError("invalid token") from None
    at = time.time() if now is None else now
    times = {}
    for claim in ("exp", "nbf", "iat"):
        value = payload[claim]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AuthenticationError(f"invalid claim {claim!r}")
        times[claim] = value
    if at >= times["exp"] + config.leeway_s:
        raise AuthenticationError("token expired")
    if times["nbf"] > at + config.leeway_s or times["iat"] > at + config.leeway_s:
        raise AuthenticationError("token not yet valid")
    sub, scope = payload["sub"], payload.get("scope", "")
    if not isinstance(sub, str) or not sub:
        raise AuthenticationError("invalid claim 'sub'")
    if not isinstance(scope, str):
        raise AuthenticationError("invalid claim 'scope'")
    return Claims(sub=sub, scopes=frozenset(scope.split()), expires_at=int(times["exp"]), claims=payload)


def require_scopes(claims: Claims, *scopes: str) -> Claims:
    """Check that ``claims`` grants every one of ``scopes``; returns ``claims``.

    Raises:
        PermissionDeniedError: some are not granted; ``missing`` lists them and the message
            is ``"missing scope: a b"``.
    """
    missing = set(scopes) - claims.scopes
    if missing:
        raise PermissionDeniedError(missing)
    return claims
