"""Bearer-token authentication for a gateway's routes (FastAPI dependencies over PyJWT).

::

    auth = BearerAuth(JwtConfig.from_env())

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, claims: Annotated[Claims, Depends(auth.require("orders:read"))]): ...

The token comes from ``Authorization: Bearer <token>``; it is checked by
:func:`reactive_services.auth.verify_token`. No token, or one it refuses: **401** with
``WWW-Authenticate: Bearer`` (``error="invalid_token"`` for a refused one, RFC 6750 §3); a
valid token without the route's scope: **403** with ``error="insufficient_scope"``.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency's ``Annotated[...,
# Depends(self.scheme)]`` parameter at definition time, and it names an attribute of the
# instance that a string annotation could not be resolved against.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reactive_services.auth import Claims, JwtConfig, verify_token
from reactive_services.errors import AuthenticationError

from ._errors import insufficient_scope, unauthorized


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (scheme case-insensitive),
    or None when the header is missing, of another scheme or empty."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerAuth:
    """FastAPI dependencies that verify a bearer JWT and, optionally, require a scope.

    Args:
        jwt: how tokens are verified (the public key is enough for RS256).
        description: the security scheme's description in the OpenAPI document.

    FastAPI resolves a route's annotations when the route is declared: in a module with ``from
    __future__ import annotations`` keep the dependencies at module level (``require_read =
    auth.require("orders:read")``, then ``Annotated[Claims, Depends(require_read)]``), since a
    string annotation cannot name a local variable.

    Attributes:
        scheme: the ``HTTPBearer`` security scheme (``bearerFormat: JWT``) the dependencies use;
            it puts the bearer scheme into the OpenAPI document.
    """

    def __init__(
        self, jwt: JwtConfig, *, description: str = "A JWT access token: `Authorization: Bearer <token>`."
    ) -> None:
        self.jwt = jwt
        self.scheme = HTTPBearer(auto_error=False, bearerFormat="JWT", description=description)

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Claims:
        """The verified claims of ``credentials``.

        Raises:
            HTTPException: 401 when there is no token or :func:`verify_token` refuses it
                (``detail``: ``"missing bearer token"`` / ``"invalid token: <reason>"``; the token
                itself is never echoed).
        """
        if credentials is None:
            raise unauthorized("missing bearer token")
        try:
            return verify_token(self.jwt, credentials.credentials)
        except AuthenticationError as exc:
            raise unauthorized(f"invalid token: {exc.reason}", error="invalid_token") from None

    def require(self, scope: str | None = None) -> Callable[..., Awaitable[Claims]]:
        """A dependency returning the verified :class:`Claims`, which must grant ``scope`` (when given).

        Raises:
            HTTPException: 401 (see :meth:`authenticate`); 403 ``"missing scope: <scope>"``.
        """
        scheme = self.scheme

        async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(scheme)]) -> Claims:
            claims = self.authenticate(credentials)
            if scope is not None and scope not in claims.scopes:
                raise insufficient_scope(scope)
            return claims

        check.__name__ = "authenticated" if scope is None else f"scope_{scope.replace(':', '_')}"
        return check
