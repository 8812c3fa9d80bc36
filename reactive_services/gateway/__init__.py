"""Building blocks of an API gateway on FastAPI: the single HTTP and websocket entry point in
front of services that talk over the broker.

A gateway turns HTTP requests into events (``ClientProxy.emit``) and requests
(``ClientProxy.send``), joins several services' answers into one response, and hands websocket
connections to the notification server. These are the parts of that job that do not depend on
what the services are (the shop's gateway, ``reactive_services.examples.shop.gateway``, is
built from them):

- authentication: :class:`BearerAuth` (JWT bearer tokens as FastAPI dependencies, scopes);
- errors: the mapping of service failures to HTTP statuses (:func:`upstream_error`,
  :func:`unauthorized`, :func:`insufficient_scope`, :func:`too_many_attempts`), 422s that name
  field paths (:func:`validation_error_handler`), the :class:`Problem` body and
  :func:`problems` for a route's ``responses=``;
- aggregation: :func:`aggregate` asks several services at once, each call bounded, and reports
  the parts that did not answer instead of failing the request; :func:`send_within` is one
  bounded call; both take any :class:`Requester` (a ``ClientProxy``, a gRPC client);
- ASGI middleware: :class:`BodyLimitMiddleware` (413 for bodies over a size) and
  :class:`RequestMetricsMiddleware` (latency per route);
- readiness: :class:`ReplyWarmup` and :func:`readiness_report` for ``GET /readyz``;
- description: :func:`describe_router` serves the AsyncAPI document and the topology SVG of a
  :class:`~reactive_services.asyncapi.Deployment`;
- notifications: :func:`serve_notifications` authenticates a websocket and serves it with a
  :class:`~reactive_services.adapters.websocket.WebSocketServer`, channels allowed by scopes.
"""

from ._aggregate import Aggregate, Requester, aggregate, part_error, send_within
from ._auth import BearerAuth, bearer_token
from ._describe import describe_router
from ._errors import (
    Problem,
    field_path,
    insufficient_scope,
    problems,
    too_many_attempts,
    unauthorized,
    upstream_error,
    validation_error_handler,
)
from ._middleware import BodyLimitMiddleware, RequestMetricsMiddleware, plain_response
from ._readiness import ReplyWarmup, readiness_report
from ._websocket import close_at_expiry, serve_notifications

__all__ = [
    "Aggregate",
    "BearerAuth",
    "BodyLimitMiddleware",
    "Problem",
    "ReplyWarmup",
    "RequestMetricsMiddleware",
    "Requester",
    "aggregate",
    "bearer_token",
    "close_at_expiry",
    "describe_router",
    "field_path",
    "insufficient_scope",
    "part_error",
    "plain_response",
    "problems",
    "readiness_report",
    "send_within",
    "serve_notifications",
    "too_many_attempts",
    "unauthorized",
    "upstream_error",
    "validation_error_handler",
]
