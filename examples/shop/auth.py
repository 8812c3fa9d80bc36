"""The shop's auth service: users in its own SQLite database, login over request-reply.

Request ``auth.login`` (``@message_pattern``; see :class:`AuthController`)::

    request  {"username": str, "password": str, "client": str (optional: who is calling, e.g.
              the gateway's view of the remote address; throttled too)}
    reply    {"access_token": <JWT>, "token_type": "bearer", "expires_in": <seconds>, "scope": "a b"}
    errors   (the client raises RemoteError with remote_type / remote_message)
             ValidationError       malformed payload                                    -> HTTP 400
             AuthenticationError   "invalid username or password" (the same message for
                                   an unknown user and a wrong password)                -> HTTP 401
             TooManyAttemptsError  "too many failed attempts; retry after <n> s"        -> HTTP 429,
                                   Retry-After: n (TooManyAttemptsError.from_remote(err).retry_after_s)

Login throttling (:class:`LoginThrottle`)
-----------------------------------------
Counted per username, and per ``client`` when the request names one, in a sliding window of
``window_s`` seconds (default 300):

1. An attempt is **refused** with ``TooManyAttemptsError`` -- the password is not checked --
   when its username already has ``max_failures`` (default 5) failures in the last
   ``window_s`` seconds, or its client ``max_client_failures`` (default 20). ``retry_after_s``
   is the time until the oldest of those failures leaves the window, rounded up to whole
   seconds. Refused attempts are not counted. So there are at most ``max_failures`` password
   guesses per username (and ``max_client_failures`` per client) in any ``window_s`` seconds.
2. An attempt that is admitted counts as a failure **from the moment it starts** (so parallel
   attempts cannot slip past the limit) until it succeeds; a success forgets every failure
   of that username (not of its client).
3. A failed attempt is answered after a delay of ``base_delay_s * 2 ** (n - 1)`` seconds
   (``n``: its rank among the username's failures in the window), capped at ``max_delay_s``:
   with the defaults (0.1 s, 2 s) 0.1, 0.2, 0.4, 0.8, 1.6 s, then refusals, which are
   immediate. The request source handles requests one at a time unless the service runs
   with ``concurrency > 1``; with that, send logins keyed by username (``key=username``) so
   that one username's attempts queue behind each other and a delay holds back nobody else.

No global limit across usernames: it would let anyone lock every user out. (Anyone can
still keep *one* username refused by failing on it; the per-client limit, and a gateway's
own rate limit per remote address, bound who can.) The counters are
in memory, per service instance (a restart forgets them), for at most ``max_tracked``
usernames and clients each (the least recently failed are forgotten first).

Users (:class:`UserStore`)
--------------------------
Table ``users(username PRIMARY KEY, password_hash, scopes, created_at)``: the password as an
argon2id hash (argon2-cffi's ``PasswordHasher``, RFC 9106 parameters by default), the scopes
space-separated, ``created_at`` in seconds since the epoch. An unknown username is checked
against a dummy hash of the same cost, so the time taken does not tell a wrong username from
a wrong password. A hash made with older parameters is replaced after a successful login.
Hashing runs in a worker thread, off the event loop.

The database file: ``$RS_AUTH_DB``, else ``data/auth.db`` (:func:`default_db_path`);
``reactive-services users add NAME --scope S ...`` creates users in it.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import aiosqlite
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from reactive_services import Controller, message_pattern
from reactive_services.auth import JwtConfig, check_scopes, issue_token
from reactive_services.errors import (
    AuthenticationError,
    ConfigError,
    TooManyAttemptsError,
    ValidationError,
)

from ._sqlite import SqliteStore

__all__ = [
    "CHANNEL_SCOPES",
    "DEFAULT_DB_PATH",
    "INVALID_CREDENTIALS",
    "SCOPES",
    "AuthController",
    "LoginThrottle",
    "UserStore",
    "default_db_path",
]

#: The scopes of the shop, with what each allows.
SCOPES: Mapping[str, str] = {
    "orders:write": "place orders",
    "orders:read": "read orders",
    "inventory:read": "read the stock (inventory.get_stock)",
    "notifications:read": "subscribe to the orders, inventory and stock websocket channels",
    "logs:read": "subscribe to the logs and alerts websocket channels",
    "admin": "administer the shop (users); not a wildcard: it grants no other scope",
}

#: websocket channel -> the scope a client needs to subscribe to it (channels of
#: ``reactive_services.examples.shop.notifications.CHANNELS``).
CHANNEL_SCOPES: Mapping[str, str] = {
    "orders": "notifications:read",
    "inventory": "notifications:read",
    "stock": "notifications:read",
    "logs": "logs:read",
    "alerts": "logs:read",
}

DEFAULT_DB_PATH = Path("data") / "auth.db"

#: The one message of a failed login, whichever part was wrong.
INVALID_CREDENTIALS = "invalid username or password"

MAX_USERNAME_CHARS = 64
MIN_PASSWORD_CHARS = 8
#: Longer passwords are refused (hashing cost and request size stay bounded).
MAX_PASSWORD_CHARS = 1024
MAX_CLIENT_CHARS = 256


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$RS_AUTH_DB`` if set and not empty, else ``data/auth.db`` (relative to the working directory)."""
    env = os.environ if environ is None else environ
    return Path(env["RS_AUTH_DB"]) if env.get("RS_AUTH_DB") else DEFAULT_DB_PATH


def _check_username(username: Any) -> str:
    if not isinstance(username, str):
        raise ValidationError(f"username: must be a string, got {type(username).__name__}")
    if not username:
        raise ValidationError("username: must not be empty")
    if len(username) > MAX_USERNAME_CHARS:
        raise ValidationError(f"username: too long ({len(username)} characters, at most {MAX_USERNAME_CHARS})")
    if any(c.isspace() or not c.isprintable() for c in username):
        raise ValidationError("username: must not contain spaces or control characters")
    return username


# --------------------------------------------------------------------------- the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,   -- argon2 encoded hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash)
    scopes        TEXT NOT NULL,   -- space-separated
    created_at    REAL NOT NULL    -- seconds since the epoch
);
"""


class UserStore(SqliteStore):
    """The auth service's own SQLite database (aiosqlite); no other service opens it.

    Use as ``async with UserStore(path) as store:`` or call :meth:`open` / :meth:`close`.

    Args:
        db_path: the database file (its folder and the file are created if missing), or
            ``":memory:"``.
        hasher: the argon2 ``PasswordHasher`` (default: argon2-cffi's defaults, argon2id
            with RFC 9106's low-memory profile: t=3, m=64 MiB, p=4). Tests pass cheaper ones.
    """

    schema = _SCHEMA

    def __init__(self, db_path: str | PathLike[str], *, hasher: PasswordHasher | None = None) -> None:
        super().__init__(db_path)
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        # the hash an unknown username is checked against: same parameters, so same cost
        self._dummy_hash = await asyncio.to_thread(self.hasher.hash, os.urandom(16).hex())

    async def add_user(self, username: str, password: str, scopes: Iterable[str]) -> None:
        """Create a user.

        Args:
            username: 1..64 characters, no spaces or control characters (case-sensitive).
            password: 8..1024 characters.
            scopes: scope names (any valid scope-token; the CLI checks them against :data:`SCOPES`).

        Raises:
            ValidationError: a bad username, password or scope, or the username exists already.
            RuntimeError: the store is not open.
        """
        _check_username(username)
        if not isinstance(password, str):
            raise ValidationError(f"password: must be a string, got {type(password).__name__}")
        if len(password) < MIN_PASSWORD_CHARS:
            raise ValidationError(f"password: too short (at least {MIN_PASSWORD_CHARS} characters)")
        if len(password) > MAX_PASSWORD_CHARS:
            raise ValidationError(f"password: too long (at most {MAX_PASSWORD_CHARS} characters)")
        scope_text = " ".join(check_scopes(scopes))
        db = self._conn()
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        async with self._lock:
            try:
                await db.execute(
                    "INSERT INTO users (username, password_hash, scopes, created_at) VALUES (?, ?, ?, ?)",
                    (username, password_hash, scope_text, time.time()),
                )
                await db.commit()
            except sqlite3.IntegrityError:
                await db.rollback()
                raise ValidationError(f"username: {username!r} exists already") from None

    async def scopes_of(self, username: str) -> tuple[str, ...] | None:
        """The scopes of ``username`` (sorted), or None for an unknown user."""
        row = await self._row(username)
        return None if row is None else tuple(row[1].split())

    async def usernames(self) -> list[str]:
        """Every username, sorted."""
        async with self._lock:
            async with self._conn().execute("SELECT username FROM users ORDER BY username") as cur:
                return [u for (u,) in await cur.fetchall()]

    async def _row(self, username: str) -> tuple[str, str] | None:
        async with self._lock:
            async with self._conn().execute(
                "SELECT password_hash, scopes FROM users WHERE username = ?", (username,)
            ) as cur:
                row = await cur.fetchone()
        return None if row is None else (row[0], row[1])

    async def verify(self, username: str, password: str) -> tuple[str, ...] | None:
        """The user's scopes (sorted) if ``password`` is theirs, else None.

        An unknown username costs one argon2 verification too (against a dummy hash). After
        a success with a hash whose parameters differ from the hasher's, the hash is replaced.

        Raises:
            RuntimeError: the store is not open.
        """
        self._conn()
        if not isinstance(username, str) or not isinstance(password, str):
            return None
        row = await self._row(username)
        stored = row[0] if row is not None else self._dummy_hash
        assert stored is not None
        ok = await asyncio.to_thread(self._check, stored, password)
        if row is None or not ok:
            return None
        if self.hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(self.hasher.hash, password)
            async with self._lock:
                await self._conn().execute(
                    "UPDATE users SET password_hash = ? WHERE username = ? AND password_hash = ?",
                    (new_hash, username, stored),
                )
                await self._conn().commit()
        return tuple(row[1].split())

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


# --------------------------------------------------------------------------- throttling


class LoginThrottle:
    """Failed attempts per key in a sliding window (the rule in the module docstring).

    Args:
        max_failures: failures of one key admitted per window (>= 1).
        window_s: the window, seconds (> 0).
        max_tracked: keys remembered at most; the least recently failed are forgotten first.
        clock: monotonic seconds (default ``time.monotonic``).
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 1:
            raise ConfigError("max_failures", f"must be an integer >= 1, got {max_failures!r}")
        if not window_s > 0:
            raise ConfigError("window_s", f"must be > 0 seconds, got {window_s!r}")
        if max_tracked < 1:
            raise ConfigError("max_tracked", f"must be >= 1, got {max_tracked!r}")
        self.max_failures = max_failures
        self.window_s = float(window_s)
        self.max_tracked = max_tracked
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _prune(self, now: float) -> None:
        # keys are ordered by their latest failure: drop those whose latest left the window
        horizon = now - self.window_s
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times and times[-1] > horizon:
                break
            del self._failures[key]

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        horizon = now - self.window_s
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def check(self, key: str) -> None:
        """Raise :class:`TooManyAttemptsError` if ``key`` has ``max_failures`` failures in the window."""
        now = self._clock()
        times = self._recent(key, now)
        if len(times) >= self.max_failures:
            raise TooManyAttemptsError(times[0] + self.window_s - now)

    def record(self, key: str) -> int:
        """Count a failure of ``key`` now; returns how many it has in the window (this one included)."""
        now = self._clock()
        self._prune(now)
        times = self._recent(key, now)
        times.append(now)
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_tracked:
            self._failures.popitem(last=False)
        return len(times)

    def forget(self, key: str) -> None:
        """Forget every failure of ``key`` (after a success)."""
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        """Failures of ``key`` in the window now."""
        return len(self._recent(key, self._clock()))


# --------------------------------------------------------------------------- the controller


class AuthController(Controller):
    """``auth.login``: check a username and password, answer with a signed access token.

    Args:
        store: the open :class:`UserStore`.
        jwt_config: signs the tokens (must be able to issue: HS256, or RS256 with a private key).
        max_failures: failures per username per window before refusals (default 5).
        window_s: the sliding window, seconds (default 300).
        base_delay_s: delay before answering a username's first failure in the window; it
            doubles with each further one (default 0.1; 0: no delay).
        max_delay_s: cap of that delay (default 2.0; keep it well under the clients' request
            timeout, 10 s by default).
        max_client_failures: failures per ``client`` value per window (default 20).
        clock: monotonic seconds for the windows (default ``time.monotonic``).
        sleep: ``await sleep(seconds)`` for the delays (default ``asyncio.sleep``).

    Attributes:
        succeeded: logins answered with a token.
        failed: logins answered with :class:`AuthenticationError`.
        refused: logins answered with :class:`TooManyAttemptsError`.

    Raises:
        ConfigError: ``jwt_config`` cannot issue tokens, or a limit is out of range.
    """

    def __init__(
        self,
        store: UserStore,
        jwt_config: JwtConfig,
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        base_delay_s: float = 0.1,
        max_delay_s: float = 2.0,
        max_client_failures: int = 20,
        max_tracked: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not jwt_config.can_issue:
            raise ConfigError("private_key", "the auth service signs tokens: RS256 needs the private key")
        if not (base_delay_s >= 0 and max_delay_s >= 0 and math.isfinite(base_delay_s) and math.isfinite(max_delay_s)):
            raise ConfigError(
                "base_delay_s", f"delays must be finite seconds >= 0, got {base_delay_s!r}, {max_delay_s!r}"
            )
        self.store = store
        self.jwt_config = jwt_config
        self.base_delay_s = float(base_delay_s)
        self.max_delay_s = float(max_delay_s)
        self.users = LoginThrottle(max_failures, window_s, max_tracked=max_tracked, clock=clock)
        self.clients = LoginThrottle(max_client_failures, window_s, max_tracked=max_tracked, clock=clock)
        self._sleep = sleep
        self.succeeded = 0
        self.failed = 0
        self.refused = 0

    def delay_for(self, rank: int) -> float:
        """Seconds before answering the ``rank``-th failure (1-based) of a username in the window."""
        if self.base_delay_s == 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(rank - 1, 64))

    @message_pattern("auth.login")
    async def login(self, payload: Any) -> dict[str, Any]:
        """The request ``auth.login`` (shapes and errors in the module docstring).

        Raises:
            ValidationError: the payload is not ``{"username": str, "password": str}``
                (non-empty, username <= 64 and password <= 1024 characters; optional
                ``client``: a string <= 256 characters). Not counted as a failure.
            TooManyAttemptsError: refused by the throttling rule.
            AuthenticationError: ``"invalid username or password"``.
        """
        username, password, client = _parse_login(payload)
        try:
            self.users.check(username)
            if client is not None:
                self.clients.check(client)
        except TooManyAttemptsError:
            self.refused += 1
            raise
        rank = self.users.record(username)
        if client is not None:
            self.clients.record(client)
        scopes = await self.store.verify(username, password)
        if scopes is None:
            self.failed += 1
            delay = self.delay_for(rank)
            if delay > 0:
                await self._sleep(delay)
            raise AuthenticationError(INVALID_CREDENTIALS)
        self.users.forget(username)
        self.succeeded += 1
        token = issue_token(self.jwt_config, username, scopes)
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.jwt_config.ttl_s,
            "scope": " ".join(scopes),
        }


def _parse_login(payload: Any) -> tuple[str, str, str | None]:
    if not isinstance(payload, Mapping):
        raise ValidationError(f"payload: must be a JSON object, got {type(payload).__name__}")
    username, password, client = payload.get("username"), payload.get("password"), payload.get("client")
    if not isinstance(username, str) or not username:
        raise ValidationError("username: must be a non-empty string")
    if len(username) > MAX_USERNAME_CHARS:
        raise ValidationError(f"username: too long (at most {MAX_USERNAME_CHARS} characters)")
    if not isinstance(password, str) or not password:
        raise ValidationError("password: must be a non-empty string")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValidationError(f"password: too long (at most {MAX_PASSWORD_CHARS} characters)")
    if client is not None and (not isinstance(client, str) or not client or len(client) > MAX_CLIENT_CHARS):
        raise ValidationError(f"client: must be a non-empty string of at most {MAX_CLIENT_CHARS} characters")
    return username, password, client
