"""Route ``POST /auth/login``: a username and password for an access token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from reactive_services import ClientProxy
from reactive_services.errors import BrokerError, RemoteError
from reactive_services.gateway import Problem, problems, send_within, too_many_attempts, unauthorized, upstream_error

from ..auth import INVALID_CREDENTIALS
from ._models import LoginRequest, Token
from ._settings import GatewaySettings


def router(client: ClientProxy, settings: GatewaySettings) -> APIRouter:
    """The login route, asking the auth service (``auth.login``) through ``client``."""
    routes = APIRouter(tags=["auth"])

    @routes.post(
        "/auth/login",
        response_model=Token,
        responses={
            401: {"model": Problem, "description": "invalid username or password"},
            429: {"model": Problem, "description": "too many failed attempts; see Retry-After"},
            **problems(502, 503, 504),
        },
        summary="Exchange a username and password for an access token",
    )
    async def login(body: LoginRequest, request: Request) -> JSONResponse:
        timeout = settings.login_timeout_s
        payload: dict[str, Any] = {"username": body.username, "password": body.password.get_secret_value()}
        if request.client is not None and request.client.host:
            payload["client"] = f"ip:{request.client.host}"[:256]
        try:
            # keyed by username: one username's attempts queue behind each other
            token = await send_within(client, "auth.login", payload, timeout_s=timeout, key=body.username)
        except RemoteError as exc:
            throttled = too_many_attempts(exc)
            if throttled is not None:
                raise throttled from None
            if exc.remote_type == "AuthenticationError":
                raise unauthorized(INVALID_CREDENTIALS) from None
            if exc.remote_type == "ValidationError":
                raise HTTPException(422, exc.remote_message) from None
            raise upstream_error("auth.login", exc, timeout) from None
        except (TimeoutError, BrokerError) as exc:
            raise upstream_error("auth.login", exc, timeout) from None
        if not isinstance(token, Mapping) or not isinstance(token.get("access_token"), str):
            raise HTTPException(502, "auth.login: unexpected reply")
        return JSONResponse(
            Token.model_validate(token).model_dump(),
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},  # RFC 6749 §5.1
        )

    return routes
