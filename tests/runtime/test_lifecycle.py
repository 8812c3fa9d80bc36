"""Graceful shutdown on SIGTERM (``reactive_services.serve``): pipelines complete, the hub flushes and
closes websocket clients with 1001, then the callbacks run."""

from __future__ import annotations

import asyncio
import os
import signal

from reactive_services import Microservice, serve
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import WebSocketServer, connect
from reactive_services.examples.shop.notifications import NotificationController
from reactive_services.testing import wait_for

ORDER = {"order_id": "o1", "items": [{"product_id": "p1", "quantity": 1}]}


async def test_sigterm_stops_the_services_and_closes_websocket_clients_with_1001() -> None:
    async with InMemoryBroker() as broker, WebSocketServer("127.0.0.1", 0) as server:
        service = Microservice(broker, [NotificationController(server.hub)], name="notifications")
        frames: list[dict] = []
        subscribed, closed = asyncio.Event(), asyncio.Event()
        outcome: dict = {}

        def on_next(frame: dict) -> None:
            frames.append(frame)
            if frame["type"] == "subscribed":
                subscribed.set()

        connect(server.url, subscribe=["orders"]).subscribe(
            on_next,
            lambda e: (outcome.setdefault("error", e), closed.set()),
            lambda: (outcome.setdefault("completed", True), closed.set()),
        )
        await asyncio.wait_for(subscribed.wait(), 10)
        stopped_after: list[str] = []

        async def after() -> None:
            stopped_after.append("callbacks run after the services stopped")

        running = asyncio.ensure_future(serve(service, on_stopped=[after], shutdown_timeout_s=10))
        await wait_for(lambda: service.started, what="the service to start")
        await broker.emit("order.created", ORDER, key="o1")
        for _ in range(200):
            if any(f["type"] == "event" for f in frames):
                break
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop's signal handler, not the default action
        assert await asyncio.wait_for(running, 20) == 0
        await asyncio.wait_for(closed.wait(), 10)
        assert outcome == {"completed": True}  # a 1001 close completes the client Observable
        events = [f for f in frames if f["type"] == "event"]
        assert events == [{"type": "event", "channel": "orders", "event": {"topic": "order.created", "data": ORDER}}]
        assert stopped_after and not service.started
