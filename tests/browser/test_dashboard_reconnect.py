"""The dashboard's websocket client in headless Chromium: it reconnects by itself (backoff with
jitter), resumes from the last cursor it saw (the events published while it was away appear),
shows the connection state, and says so when the missed events could not be recovered.

The page is served by a small gateway in this process (a thread of its own): the dashboard's
files, and ``/ws`` on a :class:`WebSocketServer` whose hub has a :class:`NotificationLog` over
an in-memory broker; the test can refuse new connections (closed with 1013, try again later)
and cut the open ones (1012, service restart).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
import pytest
import uvicorn
from fastapi import FastAPI, WebSocket
from selenium import webdriver
from selenium.webdriver.common.by import By
from starlette.staticfiles import StaticFiles

from reactive_services.adapters import Message
from reactive_services.adapters.memory import InMemoryBroker
from reactive_services.adapters.websocket import Notification, NotificationLog, StarletteTransport, WebSocketServer
from reactive_services.examples.shop.system import DASHBOARD_DIR
from reactive_services.testing import wait_for_sync

TOPIC = "order.created"


def until(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    return wait_for_sync(predicate, timeout, what=what)


class Gateway:
    """The dashboard and ``/ws`` on uvicorn, in a thread with its own event loop."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.refuse = False
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.broker = InMemoryBroker()
        self.server: WebSocketServer | None = None
        self.uvicorn: uvicorn.Server | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        await self.broker.start()
        await self.broker.create_topics([TOPIC])

        def to_notification(message: Message) -> Notification:
            return Notification("orders", {"topic": TOPIC, "data": message.value})

        log = NotificationLog(self.broker, [TOPIC], to_notification, epoch="browser", poll_timeout_s=0.05)
        await log.open()
        self.server = WebSocketServer(ping_interval=None, close_timeout=1.0, log=log)
        feed = log.live().subscribe(self.server.hub)
        app = FastAPI()

        @app.websocket("/ws")
        async def ws(websocket: WebSocket) -> None:
            await websocket.accept()
            if self.refuse:
                await websocket.close(1013, "try again later")
                return
            assert self.server is not None
            await self.server.serve(StarletteTransport(websocket))

        app.mount("/", StaticFiles(directory=DASHBOARD_DIR, html=True))
        config = uvicorn.Config(app, "127.0.0.1", self.port, log_level="warning", ws_per_message_deflate=False)
        self.uvicorn = uvicorn.Server(config)
        serving = asyncio.create_task(self.uvicorn.serve())
        while not self.uvicorn.started:
            await asyncio.sleep(0.01)
        self.ready.set()
        await serving
        feed.dispose()
        await self.server.stop()
        await self.broker.stop()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def order(self, order_id: str) -> None:
        self.run(self.broker.emit(TOPIC, {"order_id": order_id, "items": [{"product_id": "p", "quantity": 1}]}))

    def cut(self) -> None:
        async def close_all() -> None:
            assert self.server is not None
            await asyncio.gather(*(conn.close(1012, "service restart") for conn in self.server.clients))

        self.run(close_all())

    def stop(self) -> None:
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        self.thread.join(30)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    gw.thread.start()
    assert gw.ready.wait(30)
    try:
        yield gw
    finally:
        gw.stop()


def token(scope: str) -> str:
    """A JWT-shaped token: the page reads its scopes (this gateway does not check it)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': 'alice', 'scope': scope})}.sig"


def test_the_dashboard_reconnects_resumes_and_shows_the_connection_state(
    gateway: Gateway, browser: webdriver.Chrome
) -> None:
    def status() -> tuple[str | None, str]:
        el = browser.find_element(By.ID, "status")
        return el.get_attribute("data-state"), el.text

    def orders() -> list[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#orders tr[data-order-id]")
        return sorted(str(r.get_attribute("data-order-id")) for r in rows)

    browser.get(gateway.url + "#token=" + token("notifications:read"))
    until("connected", lambda: status()[0] == "connected")
    gateway.order("o-1")
    until("the first order on the page", lambda: orders() == ["o-1"])

    # the connection is lost, and new ones are refused for a while: the page keeps trying
    gateway.refuse = True
    gateway.cut()
    until("reconnecting", lambda: status()[0] == "reconnecting")
    assert "reconnecting" in status()[1]
    for order_id in ("o-2", "o-3", "o-4"):  # published while the page is away
        gateway.order(order_id)
    until("a refused attempt or two", lambda: browser.execute_script("return state.reconnects") >= 2)
    assert orders() == ["o-1"]

    gateway.refuse = False  # back: the page resumes from its cursor and gets the missed orders
    until("the missed orders", lambda: orders() == ["o-1", "o-2", "o-3", "o-4"])
    until("connected again", lambda: status()[0] == "connected")
    assert "(resumed)" in status()[1]
    assert browser.execute_script("return state.recoveryFailed") == 0
    gateway.order("o-5")  # then live
    until("a live order", lambda: "o-5" in orders())

    # a cursor the gateway cannot honour: the page says so and goes on live
    browser.execute_script("state.cursor = 'v1.not-a-cursor'")
    gateway.cut()
    until("the recovery failure shown", lambda: browser.execute_script("return state.recoveryFailed") == 1)
    until("connected after the failure", lambda: status()[0] == "connected")
    assert "not resumed: malformed cursor" in status()[1]
    gateway.order("o-6")
    until("live after the failure", lambda: "o-6" in orders())
