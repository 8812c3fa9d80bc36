"""The shop's auth service (``examples/shop/auth.py``): the user store, the login-throttling
rule, and ``auth.login`` through a real Microservice on the in-memory broker and on Kafka."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from reactive_services import ClientProxy, Microservice
from reactive_services.auth import JwtConfig, verify_token
from reactive_services.errors import (
    AuthenticationError,
    ConfigError,
    RemoteError,
    TooManyAttemptsError,
    ValidationError,
)
from reactive_services.examples.shop.auth import (
    CHANNEL_SCOPES,
    INVALID_CREDENTIALS,
    SCOPES,
    AuthController,
    LoginThrottle,
    UserStore,
    default_db_path,
)
from reactive_services.examples.shop.notifications import CHANNELS
from reactive_services.testing import unique_name

PASSWORD = "correct horse battery"


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    """argon2id with tiny parameters: the tests hash many times on a 2-core machine."""
    return PasswordHasher(time_cost=time_cost, memory_cost=1024, parallelism=1)


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - argon2's name
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path):
    async with UserStore(tmp_path / "data" / "auth.db", hasher=cheap_hasher()) as s:
        await s.add_user("alice", PASSWORD, ["orders:write", "orders:read"])
        await s.add_user("bob", "bobs password", [])
        yield s


# --------------------------------------------------------------------------- the store


async def test_a_user_is_stored_with_an_argon2id_hash_and_verifies(store: UserStore, tmp_path: Path) -> None:
    assert await store.verify("alice", PASSWORD) == ("orders:read", "orders:write")
    assert await store.verify("bob", "bobs password") == ()
    assert await store.verify("alice", PASSWORD + "!") is None
    assert await store.verify("carol", PASSWORD) is None
    assert await store.usernames() == ["alice", "bob"]
    assert await store.scopes_of("alice") == ("orders:read", "orders:write")
    assert await store.scopes_of("carol") is None
    async with store._conn().execute("SELECT password_hash, created_at FROM users WHERE username = 'alice'") as cur:
        password_hash, created_at = await cur.fetchone()
    assert password_hash.startswith("$argon2id$") and PASSWORD not in password_hash
    assert created_at > 1.7e9
    assert (tmp_path / "data" / "auth.db").is_file()


@pytest.mark.parametrize(
    ("username", "password", "scopes", "field"),
    [
        ("", PASSWORD, [], "username"),
        ("x" * 65, PASSWORD, [], "username"),
        ("two words", PASSWORD, [], "username"),
        ("tab\tname", PASSWORD, [], "username"),
        (None, PASSWORD, [], "username"),
        ("carol", "short", [], "password"),
        ("carol", "x" * 1025, [], "password"),
        ("carol", PASSWORD, ["not a scope"], "scope"),
        ("alice", PASSWORD, [], "username"),  # exists already
    ],
)
async def test_add_user_refuses_bad_input(
    store: UserStore, username: Any, password: str, scopes: list[str], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.add_user(username, password, scopes)
    assert str(caught.value).startswith(field)
    assert await store.usernames() == ["alice", "bob"]


async def test_an_unknown_user_still_costs_one_verification(tmp_path: Path) -> None:
    hasher = CountingHasher()
    async with UserStore(tmp_path / "auth.db", hasher=hasher) as s:
        await s.add_user("alice", PASSWORD, [])
        assert await s.verify("nobody", PASSWORD) is None
        assert await s.verify("alice", "wrong password") is None
    assert len(hasher.verified) == 2
    dummy, real = hasher.verified
    assert dummy.startswith("$argon2id$") and dummy != real  # the dummy hash, same parameters
    assert dummy.split("$")[3] == real.split("$")[3]


async def test_a_hash_with_old_parameters_is_replaced_after_a_successful_login(tmp_path: Path) -> None:
    path = tmp_path / "auth.db"
    async with UserStore(path, hasher=cheap_hasher(time_cost=1)) as old:
        await old.add_user("alice", PASSWORD, ["admin"])
    stronger = cheap_hasher(time_cost=2)
    async with UserStore(path, hasher=stronger) as new:
        assert await new.verify("alice", "wrong password") is None
        async with new._conn().execute("SELECT password_hash FROM users") as cur:
            (before,) = await cur.fetchone()
        assert stronger.check_needs_rehash(before)
        assert await new.verify("alice", PASSWORD) == ("admin",)
        async with new._conn().execute("SELECT password_hash FROM users") as cur:
            (after,) = await cur.fetchone()
        assert after != before and not stronger.check_needs_rehash(after)
        assert await new.verify("alice", PASSWORD) == ("admin",)


def test_the_database_path_comes_from_rs_auth_db() -> None:
    assert default_db_path({}) == Path("data/auth.db")
    assert default_db_path({"RS_AUTH_DB": ""}) == Path("data/auth.db")
    assert default_db_path({"RS_AUTH_DB": "/srv/auth.db"}) == Path("/srv/auth.db")


def test_every_notification_channel_needs_a_known_scope() -> None:
    assert set(CHANNEL_SCOPES) == set(CHANNELS.values())
    assert set(CHANNEL_SCOPES.values()) <= set(SCOPES)
    assert CHANNEL_SCOPES["logs"] == CHANNEL_SCOPES["alerts"] == "logs:read"
    assert {"orders:write", "orders:read", "inventory:read", "notifications:read", "admin"} <= set(SCOPES)


# --------------------------------------------------------------------------- the throttling rule


def test_the_throttle_admits_max_failures_per_sliding_window() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(3, 60.0, clock=clock)
    for rank in (1, 2, 3):
        throttle.check("alice")
        assert throttle.record("alice") == rank
        clock.now += 10  # failures at 1000, 1010, 1020
    with pytest.raises(TooManyAttemptsError) as caught:
        throttle.check("alice")  # at 1030: the oldest leaves the window at 1060
    assert caught.value.retry_after_s == 30
    throttle.check("bob")  # other usernames are not affected
    clock.now = 1059.5
    with pytest.raises(TooManyAttemptsError) as caught:
        throttle.check("alice")
    assert caught.value.retry_after_s == 1  # rounded up, never 0
    clock.now = 1060.0
    throttle.check("alice")  # one more guess admitted...
    assert throttle.record("alice") == 3
    with pytest.raises(TooManyAttemptsError) as caught:
        throttle.check("alice")  # ...then refused until 1070
    assert caught.value.retry_after_s == 10
    throttle.forget("alice")
    assert throttle.failures("alice") == 0
    throttle.check("alice")


def test_the_throttle_forgets_the_least_recently_failed_keys_beyond_its_bound() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(1, 60.0, max_tracked=2, clock=clock)
    for key in ("a", "b", "c"):
        throttle.record(key)
    assert [throttle.failures(k) for k in ("a", "b", "c")] == [0, 1, 1]
    clock.now += 61
    throttle.record("d")  # expired keys are dropped too
    assert [throttle.failures(k) for k in ("b", "c", "d")] == [0, 0, 1]
    assert len(throttle._failures) == 1


@pytest.mark.parametrize(("kwargs", "key"), [({"max_failures": 0}, "max_failures"), ({"window_s": 0}, "window_s")])
def test_bad_throttle_settings_are_config_errors(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LoginThrottle(**{"max_failures": 5, "window_s": 60.0, **kwargs})
    assert caught.value.key == key


def controller(
    store: UserStore, config: JwtConfig, clock: FakeClock, **kwargs: Any
) -> tuple[AuthController, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return AuthController(store, config, clock=clock, sleep=sleep, **kwargs), slept


async def test_login_answers_a_bearer_token_with_the_users_scopes(store: UserStore) -> None:
    config = JwtConfig.development(ttl_s=600)
    auth, _ = controller(store, config, FakeClock())
    reply = await auth.login({"username": "alice", "password": PASSWORD})
    assert set(reply) == {"access_token", "token_type", "expires_in", "scope"}
    assert (reply["token_type"], reply["expires_in"], reply["scope"]) == ("bearer", 600, "orders:read orders:write")
    claims = verify_token(config, reply["access_token"])
    assert claims.sub == "alice" and claims.scopes == {"orders:read", "orders:write"}
    assert auth.succeeded == 1


async def test_failures_are_slowed_then_refused_and_a_success_resets_the_count(store: UserStore) -> None:
    clock = FakeClock()
    auth, slept = controller(store, JwtConfig.development(), clock)  # defaults: 5 per 300 s, 0.1 s doubling
    for _ in range(5):
        with pytest.raises(AuthenticationError, match=f"^{INVALID_CREDENTIALS}$"):
            await auth.login({"username": "alice", "password": "guess"})
        clock.now += 1
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    with pytest.raises(TooManyAttemptsError) as caught:
        await auth.login({"username": "alice", "password": PASSWORD})  # refused even with the right password
    assert caught.value.retry_after_s == 295  # the first failure (t=1000) leaves the window at 1300
    assert "retry after 295 s" in str(caught.value)
    assert (auth.failed, auth.refused, len(slept)) == (5, 1, 5)  # a refusal is answered at once
    assert (await auth.login({"username": "bob", "password": "bobs password"}))["scope"] == ""  # others unaffected
    clock.now = 1300.0
    assert (await auth.login({"username": "alice", "password": PASSWORD}))["token_type"] == "bearer"
    assert auth.users.failures("alice") == 0  # the success forgot the failures
    with pytest.raises(AuthenticationError):
        await auth.login({"username": "alice", "password": "guess"})
    assert slept[-1] == pytest.approx(0.1)


async def test_the_delay_is_capped(store: UserStore) -> None:
    auth, slept = controller(
        store, JwtConfig.development(), FakeClock(), max_failures=10, base_delay_s=0.5, max_delay_s=3.0
    )
    for _ in range(6):
        with pytest.raises(AuthenticationError):
            await auth.login({"username": "nobody", "password": "guess"})
    assert slept == pytest.approx([0.5, 1.0, 2.0, 3.0, 3.0, 3.0])


async def test_parallel_attempts_cannot_slip_past_the_limit(store: UserStore) -> None:
    auth, _ = controller(store, JwtConfig.development(), FakeClock(), max_failures=3)
    results = await asyncio.gather(
        *(auth.login({"username": "alice", "password": f"guess {i}"}) for i in range(8)), return_exceptions=True
    )
    kinds = sorted(type(r).__name__ for r in results)
    assert kinds == ["AuthenticationError"] * 3 + ["TooManyAttemptsError"] * 5


async def test_a_client_is_limited_across_usernames(store: UserStore) -> None:
    auth, _ = controller(store, JwtConfig.development(), FakeClock(), max_client_failures=3, base_delay_s=0)
    for name in ("u1", "u2", "u3"):
        with pytest.raises(AuthenticationError):
            await auth.login({"username": name, "password": "guess", "client": "10.0.0.9"})
    with pytest.raises(TooManyAttemptsError):
        await auth.login({"username": "alice", "password": PASSWORD, "client": "10.0.0.9"})
    reply = await auth.login({"username": "alice", "password": PASSWORD, "client": "10.0.0.10"})
    assert reply["scope"] == "orders:read orders:write"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "alice",
        {},
        {"username": "alice"},
        {"password": PASSWORD},
        {"username": 1, "password": PASSWORD},
        {"username": "", "password": PASSWORD},
        {"username": "alice", "password": ""},
        {"username": "x" * 65, "password": PASSWORD},
        {"username": "alice", "password": "p" * 1025},
        {"username": "alice", "password": PASSWORD, "client": 7},
    ],
)
async def test_a_malformed_payload_is_a_validation_error_and_not_counted(store: UserStore, payload: Any) -> None:
    auth, _ = controller(store, JwtConfig.development(), FakeClock())
    with pytest.raises(ValidationError):
        await auth.login(payload)
    assert auth.users.failures("alice") == 0 and auth.failed == 0


async def test_the_controller_needs_a_config_that_can_issue(store: UserStore) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ConfigError) as caught:
        AuthController(store, JwtConfig(algorithm="RS256", public_key=public))
    assert caught.value.key == "private_key"


# --------------------------------------------------------------------------- over request-reply


def namespace() -> str:
    return unique_name("auth") + "."


async def test_login_over_request_reply(broker: Any, store: UserStore) -> None:
    """``auth.login`` through a Microservice and ClientProxy.send, on the memory broker and on Kafka."""
    config = JwtConfig.development()
    ns = namespace()
    auth = AuthController(store, config, max_failures=3, window_s=120.0, base_delay_s=0.01, max_delay_s=0.05)
    service = Microservice(broker, [auth], name=f"{ns}auth", namespace=ns)
    await service.start()
    try:
        async with ClientProxy(broker, namespace=ns, client_id="gateway") as client:
            client.subscribe_to_response_of("auth.login")
            await client.connect()
            reply = await client.send(
                "auth.login", {"username": "alice", "password": PASSWORD}, key="alice", timeout=20.0
            )
            assert verify_token(config, reply["access_token"]).scopes == {"orders:read", "orders:write"}
            assert reply["token_type"] == "bearer" and reply["expires_in"] == 3600

            errors = []
            for payload in (
                {"username": "alice", "password": "wrong password"},
                {"username": "mallory", "password": PASSWORD},
            ):
                with pytest.raises(RemoteError) as caught:
                    await client.send("auth.login", payload, key=payload["username"], timeout=20.0)
                errors.append((caught.value.remote_type, caught.value.remote_message))
            # the same answer whichever part was wrong
            assert errors == [("AuthenticationError", INVALID_CREDENTIALS)] * 2

            with pytest.raises(RemoteError) as caught:
                await client.send("auth.login", {"username": "alice"}, timeout=20.0)
            assert caught.value.remote_type == "ValidationError"

            for _ in range(2):  # alice's 2nd and 3rd failures in the window
                with pytest.raises(RemoteError) as caught:
                    await client.send("auth.login", {"username": "alice", "password": "guess"}, timeout=20.0)
                assert caught.value.remote_type == "AuthenticationError"
            with pytest.raises(RemoteError) as caught:
                await client.send("auth.login", {"username": "alice", "password": PASSWORD}, timeout=20.0)
            assert caught.value.remote_type == "TooManyAttemptsError"
            refused = TooManyAttemptsError.from_remote(caught.value)
            assert refused is not None and 100 <= refused.retry_after_s <= 120  # what a gateway puts in Retry-After
            assert TooManyAttemptsError.from_remote(RemoteError("AuthenticationError", "x")) is None
    finally:
        await service.stop()
    assert (auth.succeeded, auth.failed, auth.refused) == (1, 4, 1)
    assert service.error_replies == {f"{ns}auth.login": 6}
