"""Where the gateway's requests go: the inventory's over gRPC when the settings say so, the rest
(and, by default, the inventory's too) over the broker through the app's ``ClientProxy``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from reactive_services import ClientProxy
from reactive_services.errors import BrokerUnavailableError

from ..inventory_grpc import InventoryGrpcClient
from ._settings import GatewaySettings


class GatewayRequests:
    """A :class:`~reactive_services.gateway.Requester` routing by pattern.

    With ``settings.inventory_transport == "grpc"``, :data:`InventoryGrpcClient.PATTERNS`
    (``inventory.get_stock``, ``inventory.get_order``) go to an :class:`InventoryGrpcClient` of
    ``settings.inventory_grpc_address``, opened by :meth:`open` (the app's lifespan start: a
    grpc.aio channel belongs to the running event loop) and closed by :meth:`close`; every other
    pattern, and all of them with ``"broker"``, go to ``client``.

    Attributes:
        grpc_patterns: the patterns sent over gRPC (empty with ``"broker"``).
        grpc: the gRPC client while open (None otherwise).
    """

    def __init__(self, client: ClientProxy, settings: GatewaySettings) -> None:
        self.client = client
        self.address = settings.inventory_grpc_address
        self.grpc_patterns: frozenset[str] = (
            frozenset(InventoryGrpcClient.PATTERNS) if settings.inventory_transport == "grpc" else frozenset()
        )
        self.grpc: InventoryGrpcClient | None = None

    def send(self, pattern: str, payload: Any, *, timeout: float = 10.0, key: str | None = None) -> Awaitable[Any]:
        """One request to whichever transport answers ``pattern``; errors as
        :meth:`ClientProxy.send` (``BrokerUnavailableError``: the gRPC server cannot be reached,
        or the client is not open)."""
        if pattern in self.grpc_patterns:
            if self.grpc is None:
                return _fail(BrokerUnavailableError(f"{pattern}: the inventory's gRPC client is not open"))
            return self.grpc.send(pattern, payload, timeout=timeout, key=key)
        return self.client.send(pattern, payload, timeout=timeout, key=key)

    def open(self) -> None:
        """Open the gRPC channel (nothing with ``"broker"``); call it inside the running event loop."""
        if self.grpc_patterns and self.grpc is None and self.address is not None:
            self.grpc = InventoryGrpcClient(self.address)

    async def close(self) -> None:
        """Close the gRPC channel (the ``ClientProxy`` is its owner's to close)."""
        grpc, self.grpc = self.grpc, None
        if grpc is not None:
            await grpc.close()


async def _fail(exc: Exception) -> Any:
    raise exc
