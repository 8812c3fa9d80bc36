"""The gateway's limits, timeouts and the transport of its inventory requests."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from reactive_services.errors import ConfigError

#: How the gateway asks the inventory (``inventory.get_stock``, ``inventory.get_order``).
InventoryTransport = Literal["broker", "grpc"]
INVENTORY_TRANSPORTS: tuple[str, ...] = ("broker", "grpc")

# HOST:PORT, HOST a name, an IPv4 address or a bracketed IPv6 address
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class GatewaySettings:
    """The gateway's limits, and how it asks the inventory (topics and their namespace are the
    :class:`ClientProxy`'s business).

    Args:
        call_timeout_s: seconds each request-reply call may take (> 0; default 2.0); past it
            the route answers 504 (``GET /orders/{id}``: the part is *missing*).
        login_timeout_s: seconds ``auth.login`` may take (> 0; default 5.0): the auth service
            hashes the password (argon2) and delays failed attempts (up to 2 s by default) on
            purpose, so a login gets longer than other calls.
        max_body_bytes: the largest request body accepted, bytes (>= 1; default 65536); over
            it: 413.
        readiness_timeout_s: seconds ``/readyz`` waits for ``readiness()`` (> 0; default 2.0).
        inventory_transport: how ``GET /inventory/{id}`` and the inventory part of ``GET
            /orders/{id}`` ask the inventory: ``"broker"`` (the default: request-reply over the
            broker, through the app's ``ClientProxy``) or ``"grpc"`` (``GetStock`` /
            ``GetOrderOutcome`` on the inventory's gRPC server at ``inventory_grpc_address``,
            through :class:`~reactive_services.examples.shop.inventory_grpc.InventoryGrpcClient`;
            same replies, same status codes). Why the broker is the default: ``docs/grpc.md``.
        inventory_grpc_address: ``HOST:PORT`` of the inventory's gRPC server (``serve
            --grpc-port``); needed with ``"grpc"``, refused with ``"broker"``.

    Raises:
        ConfigError: a value out of range (``key`` names it); an unknown ``inventory_transport``;
            ``"grpc"`` without ``inventory_grpc_address``, or an address that is not
            ``HOST:PORT`` (port 1..65535).
    """

    call_timeout_s: float = 2.0
    login_timeout_s: float = 5.0
    max_body_bytes: int = 65536
    readiness_timeout_s: float = 2.0
    inventory_transport: InventoryTransport = "broker"
    inventory_grpc_address: str | None = None

    def __post_init__(self) -> None:
        for key in ("call_timeout_s", "login_timeout_s", "readiness_timeout_s"):
            value = getattr(self, key)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (value > 0 and math.isfinite(value))
            ):
                raise ConfigError(key, f"must be a number of seconds > 0, got {value!r}")
        value = self.max_body_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("max_body_bytes", f"must be an integer >= 1 (bytes), got {value!r}")
        if self.inventory_transport not in INVENTORY_TRANSPORTS:
            raise ConfigError(
                "inventory_transport",
                f"must be one of {', '.join(INVENTORY_TRANSPORTS)}, got {self.inventory_transport!r}",
            )
        address = self.inventory_grpc_address
        if self.inventory_transport == "grpc" and address is None:
            raise ConfigError("inventory_grpc_address", "needed with inventory_transport 'grpc' (HOST:PORT)")
        if self.inventory_transport == "broker" and address is not None:
            raise ConfigError("inventory_grpc_address", "only used with inventory_transport 'grpc'")
        if address is not None:
            check_address("inventory_grpc_address", address)


def check_address(key: str, address: object) -> str:
    """``address`` if it is ``HOST:PORT`` (a name, an IPv4 address or ``[IPv6]``; port 1..65535).

    Raises:
        ConfigError(key, ...): anything else.
    """
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(key, f"must be HOST:PORT with a port in 1..65535, got {address!r}")
    return str(address)
