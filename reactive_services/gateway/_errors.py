"""The error-to-HTTP mapping of a gateway: which failure of a service call is which status.

===========================================  ======  =====================================================
failure                                      status  built by
===========================================  ======  =====================================================
no token, or a token ``verify_token`` refuses  401     :func:`unauthorized` (``WWW-Authenticate: Bearer``)
a valid token without the route's scope      403     :func:`insufficient_scope`
a body over the limit                        413     :class:`~reactive_services.gateway.BodyLimitMiddleware`
a malformed body or parameter                422     :func:`validation_error_handler` (field paths)
the service's throttle refused               429     :func:`too_many_attempts` (``Retry-After``)
the service answered with an error           502     :func:`upstream_error` (``RemoteError``)
the broker refused or did not acknowledge    503     :func:`upstream_error` (``BrokerError``)
no answer within the call's timeout          504     :func:`upstream_error` (``TimeoutError``)
===========================================  ======  =====================================================
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from reactive_services._payloads import field_path as payload_field_path
from reactive_services.errors import BrokerError, RemoteError, RequestTimeoutError, TooManyAttemptsError

log = logging.getLogger("reactive_services.gateway")


class Problem(BaseModel):
    """The body of an error answer: ``{"detail": str}`` (FastAPI's ``HTTPException`` shape)."""

    detail: str


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for these error statuses, each with the :class:`Problem` body."""
    return {code: {"model": Problem} for code in codes}


def field_path(loc: Sequence[Any]) -> str:
    """A validation error's ``loc`` as a field path.

    ``("body", "items", 0, "quantity")`` -> ``"items[0].quantity"``; other sources keep their
    name: ``("path", "order_id")`` -> ``"path.order_id"``; ``("body",)`` -> ``"body"``.
    """
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    return payload_field_path(parts) or "body"


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """422 for a malformed body or parameter (install with
    ``app.add_exception_handler(RequestValidationError, validation_error_handler)``).

    The body is ``{"detail": [{"loc", "msg", "type"}, ...], "message": str}``: FastAPI's list
    without the offending input (it is not echoed back), and one line naming each field path,
    e.g. ``"items[0].quantity: Input should be greater than or equal to 1"``.
    """
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": _msg(e), "type": e["type"]} for e in exc.errors()]
    message = "; ".join(f"{_where(e)}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": message}, status_code=422)


def _msg(error: Mapping[str, Any]) -> str:
    """A validation error's message; for a body that is not JSON, with the decoder's reason."""
    if error["type"] == "json_invalid":
        reason = (error.get("ctx") or {}).get("error")
        return f"invalid JSON ({reason})" if reason else "invalid JSON"
    return str(error["msg"])


def _where(error: Mapping[str, Any]) -> str:
    """Where a validation error is: a field path; for a body that is not JSON, the character
    offset the decoder stopped at (its ``loc`` is ``("body", offset)``, not a field)."""
    loc = error["loc"]
    if error["type"] == "json_invalid" and len(loc) == 2 and isinstance(loc[1], int):
        return f"body (at character {loc[1]})"
    return field_path(loc)


def unauthorized(detail: str, *, error: str | None = None) -> HTTPException:
    """401 with ``WWW-Authenticate: Bearer`` (``Bearer error="<error>"`` when ``error`` is given,
    e.g. ``"invalid_token"``, RFC 6750 §3)."""
    challenge = "Bearer" if error is None else f'Bearer error="{error}"'
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def insufficient_scope(scope: str) -> HTTPException:
    """403 ``"missing scope: <scope>"`` with ``WWW-Authenticate: Bearer error="insufficient_scope"``."""
    return HTTPException(
        403,
        f"missing scope: {scope}",
        headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
    )


def too_many_attempts(exc: BaseException) -> HTTPException | None:
    """429 with ``Retry-After: <seconds>`` when ``exc`` is a :class:`TooManyAttemptsError` (also
    one carried by a :class:`RemoteError`), else None."""
    throttled = TooManyAttemptsError.from_remote(exc)
    if throttled is None:
        return None
    return HTTPException(429, str(throttled), headers={"Retry-After": str(throttled.retry_after_s)})


def upstream_error(pattern: str, exc: Exception, timeout_s: float) -> HTTPException:
    """The HTTP answer for a failed request-reply call (or publish) of ``pattern``.

    504 for ``TimeoutError`` / :class:`RequestTimeoutError` (``"<pattern>: no answer within
    <timeout_s> s"``), 502 for :class:`RemoteError` (``detail`` names the remote type only), 503
    for :class:`BrokerError`.

    Raises:
        Exception: ``exc`` itself when it is none of these (a bug, not a service failure).
    """
    if isinstance(exc, (TimeoutError, RequestTimeoutError)):
        return HTTPException(504, f"{pattern}: no answer within {timeout_s} s")
    if isinstance(exc, RemoteError):
        log.warning("%s answered with an error: %s", pattern, exc)
        return HTTPException(502, f"{pattern} failed: {exc.remote_type}")
    if isinstance(exc, BrokerError):
        log.warning("%s: broker error: %r", pattern, exc)
        return HTTPException(503, f"{pattern}: the broker is unavailable")
    raise exc
