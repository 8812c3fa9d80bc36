"""Login and bearer tokens at the HTTP level: real calls to the gateway on uvicorn, the auth
service running as a Microservice on the in-memory broker."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from gatewayshop import PASSWORD, USERS, Shop, start_shop

from reactive_services.auth import JwtConfig, issue_token, verify_token
from reactive_services.examples.shop.gateway import GatewaySettings

pytestmark = pytest.mark.timeout(60)

INVALID = {"detail": "invalid username or password"}


async def test_login_with_the_right_password_gives_a_token_with_the_users_scopes(shop: Shop) -> None:
    response = await shop.http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == shop.jwt.ttl_s
    assert body["scope"] == " ".join(sorted(USERS["alice"]))
    assert response.headers["cache-control"] == "no-store"
    claims = verify_token(shop.jwt, body["access_token"])
    assert claims.sub == "alice" and claims.scopes == set(USERS["alice"])
    # and the token opens the routes
    stock = await shop.http.get("/inventory/p-plenty", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert stock.status_code == 200


async def test_a_wrong_user_and_a_wrong_password_get_the_same_401(shop: Shop) -> None:
    wrong_password = await shop.http.post("/auth/login", json={"username": "alice", "password": PASSWORD + "!"})
    wrong_user = await shop.http.post("/auth/login", json={"username": "mallory", "password": PASSWORD})
    for response in (wrong_password, wrong_user):
        assert response.status_code == 401
        assert response.json() == INVALID
        assert response.headers["www-authenticate"] == "Bearer"
    assert PASSWORD not in wrong_password.text


async def test_repeated_failures_get_429_with_retry_after(memory_broker: Any, tmp_path: Path) -> None:
    async with start_shop(memory_broker, tmp_path, max_failures=3) as shop:
        for _ in range(3):
            response = await shop.http.post("/auth/login", json={"username": "bob", "password": "guess"})
            assert response.status_code == 401
        refused = await shop.http.post("/auth/login", json={"username": "bob", "password": PASSWORD})
        assert refused.status_code == 429
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 300
        assert refused.json() == {"detail": f"too many failed attempts; retry after {retry_after} s"}
        # another user is not locked out
        other = await shop.http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        assert other.status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"username": "alice"}, "password"),
        ({"username": "", "password": "x"}, "username"),
        ({"username": "alice", "password": 5}, "password"),
        ({"username": "alice", "password": "x", "admin": True}, "admin"),
        ({"username": "a" * 65, "password": "x"}, "username"),
    ],
)
async def test_a_malformed_login_is_422_naming_the_field_without_echoing_it(
    shop: Shop, body: dict[str, Any], field: str
) -> None:
    response = await shop.http.post("/auth/login", json=body)
    assert response.status_code == 422
    detail = response.json()
    assert detail["message"].startswith(f"{field}: ")
    assert [e["loc"] for e in detail["detail"]] == [["body", field]]
    assert "input" not in detail["detail"][0]  # the offending value is not sent back


async def test_a_silent_auth_service_is_504(memory_broker: Any, tmp_path: Path) -> None:
    settings = GatewaySettings(login_timeout_s=0.3)
    async with start_shop(memory_broker, tmp_path, settings=settings) as shop:
        await shop.auth_svc.stop()
        response = await shop.http.post("/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 504
    assert response.json() == {"detail": "auth.login: no answer within 0.3 s"}


# --------------------------------------------------------------------------- the JWT matrix


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def tampered(token: str) -> str:
    """The token with its payload changed (scope widened), signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "admin orders:read orders:write inventory:read"
    return f"{header}.{_b64(claims)}.{signature}"


def unsigned(shop: Shop) -> str:
    now = int(time.time())
    claims = {
        "sub": "alice",
        "scope": "inventory:read",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "iss": shop.jwt.issuer,
        "aud": shop.jwt.audience,
    }
    return pyjwt.encode(claims, None, algorithm="none")


def token_case(shop: Shop, case: str) -> str:
    scopes = ["inventory:read"]
    secret = shop.jwt.secret
    if case == "valid":
        return issue_token(shop.jwt, "alice", scopes)
    if case == "expired":
        return issue_token(shop.jwt, "alice", scopes, ttl_s=60, now=time.time() - 3600)
    if case == "not yet valid":
        return issue_token(shop.jwt, "alice", scopes, now=time.time() + 3600)
    if case == "wrong audience":
        return issue_token(JwtConfig(secret=secret, audience="another-shop"), "alice", scopes)
    if case == "wrong issuer":
        return issue_token(JwtConfig(secret=secret, issuer="someone-else"), "alice", scopes)
    if case == "wrong key":
        return issue_token(JwtConfig.development(), "alice", scopes)
    if case == "alg none":
        return unsigned(shop)
    if case == "tampered payload":
        return tampered(issue_token(shop.jwt, "alice", scopes))
    if case == "missing scope":
        return issue_token(shop.jwt, "alice", ["orders:read"])
    if case == "garbage":
        return "not-a-jwt"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case, status, reason",
    [
        ("valid", 200, None),
        ("expired", 401, "invalid token: token expired"),
        ("not yet valid", 401, "invalid token: token not yet valid"),
        ("wrong audience", 401, "invalid token: wrong audience"),
        ("wrong issuer", 401, "invalid token: wrong issuer"),
        ("wrong key", 401, "invalid token: bad signature"),
        ("alg none", 401, "invalid token: algorithm not allowed"),
        ("tampered payload", 401, "invalid token: bad signature"),
        ("garbage", 401, "invalid token: malformed token"),
        ("missing scope", 403, "missing scope: inventory:read"),
    ],
)
async def test_the_jwt_matrix_over_http(shop: Shop, case: str, status: int, reason: str | None) -> None:
    token = token_case(shop, case)
    response = await shop.http.get("/inventory/p-plenty", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json() == {"product_id": "p-plenty", "stock": 10}
        return
    assert response.json() == {"detail": reason}
    assert token not in response.text and token not in str(response.headers)
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    else:
        assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="inventory:read"'


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic YWxpY2U6cHc=", "Token abc"])
async def test_no_bearer_token_is_401_with_a_challenge(shop: Shop, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (("GET", "/inventory/p-plenty"), ("GET", "/orders/o-1"), ("POST", "/orders")):
        response = await shop.http.request(
            method, path, headers=headers, json={"items": [{"product_id": "p", "quantity": 1}]}
        )
        assert response.status_code == 401, (method, path)
        assert response.json() == {"detail": "missing bearer token"}
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "method, path, needed",
    [
        ("POST", "/orders", "orders:write"),
        ("GET", "/orders/o-1", "orders:read"),
        ("GET", "/inventory/p", "inventory:read"),
    ],
)
async def test_each_route_names_its_missing_scope(shop: Shop, method: str, path: str, needed: str) -> None:
    others = [
        s
        for s in ("orders:write", "orders:read", "inventory:read", "notifications:read", "logs:read", "admin")
        if s != needed
    ]
    response = await shop.http.request(
        method, path, headers=shop.headers(scopes=others), json={"items": [{"product_id": "p", "quantity": 1}]}
    )
    assert response.status_code == 403
    assert response.json() == {"detail": f"missing scope: {needed}"}
