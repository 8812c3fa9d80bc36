"""Request-reply aggregation: ask several services at once, each bounded, and answer with what came.

:func:`aggregate` is the body of a route such as ``GET /orders/{id}`` that joins the answers
of several services: a part that times out or fails is reported in ``missing`` / ``errors``
instead of failing the request (no 5xx because one service is slow or down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from reactive_services.errors import RemoteError, RequestTimeoutError

log = logging.getLogger("reactive_services.gateway")


class Requester(Protocol):
    """Anything that sends one request and gets its reply: ``await requester.send(pattern,
    payload, timeout=2.0, key="o-1")``.

    :class:`~reactive_services.ClientProxy` (request-reply over the broker; its ``send`` returns an
    awaitable Observable), :class:`~reactive_services.grpc.GrpcClient` and typed gRPC clients with
    the same shape (the shop's ``InventoryGrpcClient``; an ``async def send``) all fit, so a
    gateway route does not depend on the transport of its requests.

    ``send(pattern, payload, *, timeout, key)``: ``pattern`` the request pattern (str),
    ``payload`` its JSON-serialisable value, ``timeout`` seconds the reply may take (float),
    ``key`` the request key (str or None; a transport without partitions ignores it). The
    awaitable returns the reply value and raises :class:`RequestTimeoutError` past ``timeout``,
    :class:`RemoteError` when the service answered with an error, :class:`BrokerError` when the
    request could not be delivered.
    """

    def send(self, pattern: str, payload: Any, *, timeout: float = ..., key: str | None = ...) -> Awaitable[Any]:
        """Send one request; the awaitable returns its reply."""
        ...


async def send_within(
    client: Requester, pattern: str, payload: Any, *, timeout_s: float, key: str | None = None
) -> Any:
    """``client.send(pattern, payload)`` bounded by ``timeout_s`` seconds in all (the lazy start of
    the reply consumer included); returns the reply.

    ``client`` is any :class:`Requester`: a :class:`~reactive_services.ClientProxy`, a gRPC client.

    Raises:
        TimeoutError: no reply within ``timeout_s`` (also :class:`RequestTimeoutError`).
        RemoteError: the service answered with an error.
        BrokerError: the request could not be published or the reply consumer not started.
    """
    async with asyncio.timeout(timeout_s):
        return await client.send(pattern, payload, timeout=timeout_s, key=key)


def part_error(exc: BaseException, timeout_s: float) -> str:
    """What went wrong with one part, for ``errors``: ``"timed out after 2.0 s"``,
    ``"RemoteError ValidationError"`` or ``"<type>: <message>"``."""
    if isinstance(exc, (TimeoutError, RequestTimeoutError)):
        return f"timed out after {float(timeout_s)} s"
    if isinstance(exc, RemoteError):
        return f"RemoteError {exc.remote_type}"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Aggregate:
    """The answers of :func:`aggregate`.

    Attributes:
        values: ``{part: reply}``, ``None`` for a missing part (in the order the parts were given).
        missing: the parts that timed out, failed or answered with an unexpected type.
        errors: ``{part: what went wrong}`` (:func:`part_error`) for each missing part.
    """

    values: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every part answered."""
        return not self.missing

    def view(self, **extra: Any) -> dict[str, Any]:
        """``{**extra, **values, "missing": [...], "errors": {...}}``: a JSON body."""
        return {**extra, **self.values, "missing": list(self.missing), "errors": dict(self.errors)}


async def aggregate(
    client: Requester,
    parts: Mapping[str, str],
    payload: Any,
    *,
    timeout_s: float,
    key: str | None = None,
    expect: Mapping[str, type | tuple[type, ...]] | None = None,
) -> Aggregate:
    """Send ``payload`` to every part's pattern at once, each call bounded by ``timeout_s`` seconds.

    Args:
        client: the :class:`Requester` that sends the requests (a :class:`~reactive_services.ClientProxy`,
            or one routing some patterns to another transport, e.g. gRPC).
        parts: ``{part name: request pattern}``, e.g. ``{"order": "orders.get", "inventory":
            "inventory.get_order"}``.
        payload: the request payload, the same for every part.
        timeout_s: seconds each call may take (they run concurrently, so the whole takes at
            most about this long).
        key: the request key (e.g. the order id), for the partition of every request.
        expect: ``{part: type(s)}`` a non-null reply must be an instance of; another reply makes
            the part missing (``"ValueError: unexpected reply of type str"``).

    Returns:
        an :class:`Aggregate`; never raises for a part's failure (a :class:`RemoteError` is
        also logged at WARNING).
    """
    expect = expect or {}

    async def one(name: str, pattern: str) -> tuple[bool, Any]:
        try:
            return True, await send_within(client, pattern, payload, timeout_s=timeout_s, key=key)
        except Exception as exc:  # noqa: BLE001 - a failed part is reported, not raised
            if isinstance(exc, RemoteError):
                log.warning("%s (key %s): %s", pattern, key, exc)
            return False, exc

    names = list(parts)
    answers = await asyncio.gather(*(one(name, parts[name]) for name in names))
    result = Aggregate()
    for name, (ok, value) in zip(names, answers, strict=True):
        wanted = expect.get(name)
        if ok and value is not None and wanted is not None and not isinstance(value, wanted):
            ok, value = False, ValueError(f"unexpected reply of type {type(value).__name__}")
        if ok:
            result.values[name] = value
        else:
            result.values[name] = None
            result.missing.append(name)
            result.errors[name] = part_error(value, timeout_s)
    return result
