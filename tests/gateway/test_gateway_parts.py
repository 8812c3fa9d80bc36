"""The library's gateway parts (``reactive_services.gateway``) in a gateway of a user's own, apart from the shop.

A small FastAPI app over the in-memory broker: one route aggregates three services (one answers,
one fails, one is not running), one route needs a scope, and the body limit applies. Requests go
through httpx's ASGI transport (the shop's gateway tests run the same parts on uvicorn).
"""

# No ``from __future__ import annotations``: the routes below are defined in a fixture, and FastAPI
# must resolve their ``Annotated[..., Depends(auth.require(...))]`` parameters, which name its locals.

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from reactive_services import ClientProxy, Controller, Microservice, message_pattern
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.auth import Claims, JwtConfig, issue_token
from reactive_services.errors import RemoteError, RequestTimeoutError
from reactive_services.gateway import (
    BearerAuth,
    BodyLimitMiddleware,
    aggregate,
    field_path,
    part_error,
    validation_error_handler,
)


class Parts(Controller):
    @message_pattern("profile.get")
    def profile(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {"user": payload["user"], "name": "Ada"}

    @message_pattern("billing.get")
    def billing(self, payload: dict[str, Any]) -> dict[str, Any]:
        raise LookupError(f"no account for {payload['user']}")

    @message_pattern("avatar.get")
    def avatar(self, payload: dict[str, Any]) -> str:
        return "not a mapping"


class Greeting(BaseModel):
    name: str = Field(min_length=1)
    times: int = Field(ge=1)


@pytest.fixture
async def app_and_jwt() -> AsyncIterator[tuple[FastAPI, JwtConfig]]:
    broker = InMemoryBroker()
    await broker.start()
    service = Microservice(broker, [Parts()], name="parts")  # nobody answers "orders.list"
    await service.start()
    client = ClientProxy(broker, client_id="gateway")
    jwt = JwtConfig.development()
    auth = BearerAuth(jwt)
    app = FastAPI()
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(BodyLimitMiddleware, max_bytes=100)

    @app.get("/users/{user}")
    async def user(user: str, claims: Annotated[Claims, Depends(auth.require("users:read"))]) -> dict[str, Any]:
        parts = await aggregate(
            client,
            {"profile": "profile.get", "billing": "billing.get", "orders": "orders.list", "avatar": "avatar.get"},
            {"user": user},
            timeout_s=0.5,
            key=user,
            expect={"avatar": dict},
        )
        return parts.view(user=user)

    @app.post("/greetings")
    async def greet(body: Greeting, claims: Annotated[Claims, Depends(auth.require())]) -> dict[str, str]:
        return {"greeting": " ".join([f"hello {body.name}"] * body.times)}

    try:
        yield app, jwt
    finally:
        await client.close()
        await service.stop()
        await broker.stop()


def _http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_aggregate_reports_each_part_that_did_not_answer_and_answers_with_the_rest(app_and_jwt) -> None:
    app, jwt = app_and_jwt
    token = issue_token(jwt, "ada", ["users:read"])
    async with _http(app) as http:
        response = await http.get("/users/u1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == "u1"
    assert body["profile"] == {"user": "u1", "name": "Ada"}
    assert body["billing"] is None and body["orders"] is None and body["avatar"] is None
    assert sorted(body["missing"]) == ["avatar", "billing", "orders"]
    assert body["errors"] == {
        "billing": "RemoteError LookupError",
        "orders": "timed out after 0.5 s",
        "avatar": "ValueError: unexpected reply of type str",
    }


@pytest.mark.parametrize(
    ("headers", "status", "challenge", "detail"),
    [
        ({}, 401, "Bearer", "missing bearer token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, 'Bearer error="invalid_token"', "invalid token: "),
        ({"Authorization": "Basic YWRhOnB3"}, 401, "Bearer", "missing bearer token"),
    ],
)
async def test_bearer_auth_refuses_a_missing_or_invalid_token_with_401(
    app_and_jwt, headers: dict[str, str], status: int, challenge: str, detail: str
) -> None:
    app, _ = app_and_jwt
    async with _http(app) as http:
        response = await http.get("/users/u1", headers=headers)
    assert response.status_code == status
    assert response.headers["www-authenticate"] == challenge
    assert response.json()["detail"].startswith(detail)


async def test_bearer_auth_refuses_a_token_without_the_scope_with_403(app_and_jwt) -> None:
    app, jwt = app_and_jwt
    token = issue_token(jwt, "ada", ["orders:read"])
    async with _http(app) as http:
        response = await http.get("/users/u1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.json() == {"detail": "missing scope: users:read"}
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="users:read"'


async def test_a_route_without_a_scope_needs_only_a_valid_token(app_and_jwt) -> None:
    app, jwt = app_and_jwt
    token = issue_token(jwt, "ada", ["orders:read"])
    async with _http(app) as http:
        response = await http.post(
            "/greetings", json={"name": "Ada", "times": 2}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert response.json() == {"greeting": "hello Ada hello Ada"}


async def test_a_malformed_body_gets_422_naming_the_field_paths(app_and_jwt) -> None:
    app, jwt = app_and_jwt
    token = issue_token(jwt, "ada", [])
    async with _http(app) as http:
        response = await http.post(
            "/greetings", json={"name": "", "times": 0}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 422
    message = response.json()["message"]
    assert message.startswith("name: ")
    assert "; times: Input should be greater than or equal to 1" in message


async def test_a_body_over_the_limit_gets_413_before_the_route_runs(app_and_jwt) -> None:
    app, jwt = app_and_jwt
    token = issue_token(jwt, "ada", [])
    async with _http(app) as http:
        response = await http.post(
            "/greetings", json={"name": "x" * 200, "times": 1}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 413
    assert response.json() == {"detail": "request body too large: at most 100 bytes"}


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("body", "items", 0, "quantity"), "items[0].quantity"),
        (("path", "order_id"), "path.order_id"),
        (("body",), "body"),
        (("query", "limit"), "query.limit"),
    ],
)
def test_field_path(loc: tuple[Any, ...], path: str) -> None:
    assert field_path(loc) == path


def test_part_error_names_what_went_wrong() -> None:
    assert part_error(TimeoutError(), 2) == "timed out after 2.0 s"
    assert part_error(RequestTimeoutError("p", 1.0), 1.5) == "timed out after 1.5 s"
    assert part_error(RemoteError("KeyError", "nope"), 2) == "RemoteError KeyError"
    assert part_error(OSError("boom"), 2) == "OSError: boom"
