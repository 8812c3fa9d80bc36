"""``reactive-services serve`` split over real processes on a real Kafka broker.

One deployment (one ``--namespace``, one ``RS_JWT_SECRET`` shared through the environment):

- P1 runs ``--only orders,inventory,auth,logs`` (no gateway: no URL printed);
- G1 and G2 run ``--only gateway --instance g1`` / ``g2`` on ``--port 0``, each with a
  notification hub fed by a consumer group of its own (``notifications.<instance>``).

A websocket client on each gateway subscribes to ``orders`` and ``inventory``; five orders are
posted through G1 (four that fit the stock, one that asks for more than there is) and both
clients must get every ``order.created`` and exactly one outcome per order
(``inventory.updated`` or ``order.rejected``), whichever hub instance they are on (in either
order: the hub consumes several topics, and Kafka orders records within a partition only).
``GET /orders/{id}`` through G2 aggregates each order. Then SIGTERM: every process exits 0
within 30 s and the websocket clients are closed with 1001 (going away).

Also the configuration errors of ``serve``: exit 2 and one ``error: ...`` line.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from reactive_services.auth import JwtConfig, issue_token
from reactive_services.testing import unique_name

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ROOT / "examples" / "shop" / "data" / "olist" / "products.csv"

START_TIMEOUT_S = 40.0  # all three processes printed "ready" (2 cores, three interpreters starting)
RUN_BUDGET_S = 55.0  # start, readiness, events and aggregation together (about 10 s when all is well)
EVENTS_TIMEOUT_S = 20.0  # every expected event reached both websocket clients
STOP_TIMEOUT_S = 30.0  # the three processes exited after SIGTERM (sent at once): at most 85 s in all


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child: no RS_JWT_* of ours, unbuffered output, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RS_JWT_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _products(n: int) -> list[tuple[str, int]]:
    """``n`` products the inventory seeds with stock >= 1 (stock = product_photos_qty when
    product_weight_g is set: reactive_services.examples.shop.inventory.initial_stock)."""
    out: list[tuple[str, int]] = []
    with open(PRODUCTS, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            qty, weight = row["product_photos_qty"].strip(), row["product_weight_g"].strip()
            if qty.isdigit() and int(qty) >= 1 and weight.isdigit():
                out.append((row["product_id"], int(qty)))
            if len(out) == n:
                return out
    raise AssertionError(f"fewer than {n} products with stock in {PRODUCTS}")


class Serve:
    """One ``python -m reactive_services.cli serve ...`` child; stdout and stderr go to files."""

    def __init__(self, name: str, args: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reactive_services.cli", "serve", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    @property
    def lines(self) -> list[str]:
        return self.out_path.read_text(encoding="utf-8", errors="replace").splitlines()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    async def ready(self, deadline: float) -> list[str]:
        """The lines printed up to and including ``ready``."""
        while True:
            lines = self.lines
            if "ready" in lines:
                return lines[: lines.index("ready") + 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode} before ready: {lines} {self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {START_TIMEOUT_S:.0f} s: {lines} {self.stderr}")
            await asyncio.sleep(0.1)

    def url(self) -> str:
        match = re.fullmatch(r"serving gateway at (http://127\.0\.0\.1:\d+/)", self.lines[0])
        assert match, self.lines
        return match.group(1)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a zombie we cannot help
            pass


class WsClient:
    """A websocket client subscribed to some channels; records every event until closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.others: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.error: BaseException | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, url: str, token: str, channels: list[str]) -> None:
        ws_url = url.replace("http://", "ws://", 1) + "ws?token=" + token
        self._ws = await websockets.connect(ws_url, open_timeout=10, max_size=2**22)
        await self._ws.send(orjson.dumps({"op": "subscribe", "channels": channels}).decode())
        reply = orjson.loads(await asyncio.wait_for(self._ws.recv(), 10))
        # the gateway's hub has a notification log: the reply carries the cursor to resume from
        assert reply.pop("cursor", "").startswith("v1."), (self.name, reply)
        assert reply == {"type": "subscribed", "channels": sorted(channels)}, (self.name, reply)
        self._task = asyncio.create_task(self._read(), name=f"ws-{self.name}")

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                frame = orjson.loads(raw)
                (self.events if frame.get("type") == "event" else self.others).append(frame)
        except ConnectionClosed:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.close_code = self._ws.close_code  # the code of the server's close frame
            self.close_reason = self._ws.close_reason

    def events_of(self, order_id: str) -> list[tuple[str, str]]:
        """(channel, topic) of every event naming ``order_id``, in arrival order."""
        return [
            (e["channel"], e["event"]["topic"])
            for e in self.events
            if isinstance(e["event"].get("data"), dict) and e["event"]["data"].get("order_id") == order_id
        ]

    async def closed(self, timeout: float) -> None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def abort(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _until(what: str, check: Any, timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


@pytest.mark.timeout(300)  # the body is bounded below 90 s; the rest is for a kafka_bootstrap started here
async def test_services_and_two_gateways_as_processes(kafka_bootstrap: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    secret = secrets.token_urlsafe(48)  # 64 characters
    jwt = JwtConfig(secret=secret)
    env = _env(RS_JWT_SECRET=secret)
    ns = unique_name("serve") + "."
    budget_end = t0 + RUN_BUDGET_S

    def left(cap: float) -> float:
        """At most ``cap`` seconds, and not past the run budget."""
        return max(0.5, min(cap, budget_end - time.monotonic()))

    common = ["--bootstrap-servers", kafka_bootstrap, "--namespace", ns]

    procs: list[Serve] = []
    clients: list[WsClient] = []
    try:
        p1 = Serve(
            "p1",
            ["--only", "orders,inventory,auth,logs", "--grpc-port", "0", *common, "--data-dir", str(tmp_path / "p1")],
            tmp_path,
            env,
        )
        g1 = Serve(
            "g1",
            ["--only", "gateway", "--instance", "g1", "--port", "0", *common, "--data-dir", str(tmp_path / "g1")],
            tmp_path,
            env,
        )
        g2 = Serve(
            "g2",
            ["--only", "gateway", "--instance", "g2", "--port", "0", *common, "--data-dir", str(tmp_path / "g2")],
            tmp_path,
            env,
        )
        procs += [p1, g1, g2]
        deadline = time.monotonic() + START_TIMEOUT_S
        p1_lines, g1_lines, g2_lines = [await p.ready(deadline) for p in procs]
        timings["ready"] = time.monotonic() - t0

        # 1. no gateway: no URL, no dashboard, no dev token (not --dev); the inventory's gRPC server
        assert len(p1_lines) == 3 and p1_lines[0] == "serving orders, inventory, auth, logs", p1_lines
        assert re.fullmatch(r"inventory gRPC: 127\.0\.0\.1:\d+", p1_lines[1]) and p1_lines[2] == "ready", p1_lines
        # 2. each gateway on a port of its own
        for lines in (g1_lines, g2_lines):
            assert len(lines) == 3 and lines[2] == "ready", lines
            assert re.fullmatch(r"serving gateway at http://127\.0\.0\.1:\d+/", lines[0]), lines
            assert lines[1].startswith("dashboard: " + lines[0].rsplit(" ", 1)[1]), lines
        url1, url2 = g1.url(), g2.url()
        assert url1 != url2
        async with httpx.AsyncClient(timeout=10) as http:
            for url in (url1, url2):
                assert (await http.get(url + "healthz")).json() == {"status": "ok"}

                async def ready(url: str = url) -> bool:  # reply consumers and the hub's services started
                    return (await http.get(url + "readyz")).status_code == 200

                await _until(f"{url}readyz to answer 200", ready, left(20), interval=0.25)
        timings["readyz"] = time.monotonic() - t0

        # 3. one websocket client per gateway, subscribed to orders and inventory
        ws_token = issue_token(jwt, "watcher", ["notifications:read"])
        for name, url in (("on-g1", url1), ("on-g2", url2)):
            client = WsClient(name)
            clients.append(client)
            await client.open(url, ws_token, ["orders", "inventory"])
        timings["subscribed"] = time.monotonic() - t0

        # 4. five orders through G1: four fit the stock, the fifth asks for one unit more than there is
        products = _products(5)
        orders = [(pid, 1) for pid, _ in products[:4]] + [(products[4][0], products[4][1] + 1)]
        expected_outcome = ["applied"] * 4 + ["rejected"]
        writer = issue_token(jwt, "buyer", ["orders:write"])
        reader = issue_token(jwt, "reader", ["orders:read"])
        order_ids: list[str] = []
        async with httpx.AsyncClient(base_url=url1, timeout=10, headers={"Authorization": f"Bearer {writer}"}) as http:
            for product_id, quantity in orders:
                response = await http.post("orders", json={"items": [{"product_id": product_id, "quantity": quantity}]})
                assert response.status_code == 202, response.text
                body = response.json()
                assert body["status"] == "accepted" and response.headers["location"] == f"/orders/{body['order_id']}"
                order_ids.append(body["order_id"])
        assert len(set(order_ids)) == 5
        timings["posted"] = time.monotonic() - t0

        outcome_event = {"applied": ("inventory", "inventory.updated"), "rejected": ("orders", "order.rejected")}

        async def all_events_arrived() -> bool:
            return all(
                ("orders", "order.created") in c.events_of(o) and outcome_event[s] in c.events_of(o)
                for c in clients
                for o, s in zip(order_ids, expected_outcome, strict=True)
            )

        try:
            await _until("every order's events on both websocket clients", all_events_arrived, left(EVENTS_TIMEOUT_S))
        except AssertionError:
            seen = {c.name: {o[:8]: c.events_of(o) for o in order_ids} for c in clients}
            raise AssertionError(f"events missing: {seen}; stderr: {[p.stderr for p in procs]}") from None
        timings["events"] = time.monotonic() - t0
        await asyncio.sleep(0.5)  # a duplicate or a second outcome would show up now
        for client in clients:
            assert client.error is None, (client.name, client.error)
            assert {e["channel"] for e in client.events} <= {"orders", "inventory"}, client.name
            for order_id, status in zip(order_ids, expected_outcome, strict=True):
                got = client.events_of(order_id)
                # exactly one order.created and one outcome. In either order: the hub consumes
                # several topics, and Kafka orders records within a partition only.
                assert sorted(got) == sorted([("orders", "order.created"), outcome_event[status]]), (
                    client.name,
                    order_id,
                    got,
                )
                created = next(
                    e["event"]["data"]
                    for e in client.events
                    if e["event"]["topic"] == "order.created" and e["event"]["data"]["order_id"] == order_id
                )
                product_id, quantity = orders[order_ids.index(order_id)]
                assert created["items"] == [{"product_id": product_id, "quantity": quantity}]

        # GET /orders/{id} through G2: the order and its inventory outcome, from the services in P1
        async with httpx.AsyncClient(base_url=url2, timeout=15, headers={"Authorization": f"Bearer {reader}"}) as http:
            for order_id, status, (product_id, quantity) in zip(order_ids, expected_outcome, orders, strict=True):

                async def aggregated(order_id: str = order_id) -> dict[str, Any] | None:
                    response = await http.get(f"orders/{order_id}")
                    if response.status_code != 200:
                        return None
                    view = response.json()
                    ok = view["order"] is not None and view["inventory"] is not None
                    return view if ok and not {"order", "inventory"} & set(view["missing"]) else None

                view = await _until(f"GET /orders/{order_id} with its parts", aggregated, left(20), interval=0.5)
                assert view["order_id"] == order_id
                assert view["order"]["order_id"] == order_id
                assert view["order"]["items"] == [{"product_id": product_id, "quantity": quantity}]
                assert view["inventory"]["status"] == status, view
                items = view["inventory"]["items"]
                assert [(i["product_id"], i["quantity"]) for i in items] == [(product_id, quantity)], view
                if status == "applied":  # seeded with product_photos_qty units, one taken
                    assert items[0]["remaining"] == dict(products)[product_id] - quantity, view
                else:
                    assert view["inventory"]["reason"], view
                notes = view["notifications"]
                if notes is not None:  # a hub's index (G1's or G2's, whichever answered first)
                    # stock.low carries the order that took the product low
                    assert {n["topic"] for n in notes} <= {"order.created", outcome_event[status][1], "stock.low"}, (
                        notes
                    )
        timings["aggregated"] = time.monotonic() - t0

        # 5. SIGTERM all three at once: exit 0 each, websocket clients closed with 1001
        stop_started = time.monotonic()
        for proc in procs:
            proc.terminate()
        exits: dict[str, tuple[int, float]] = {}
        for proc in procs:
            remaining = max(0.1, stop_started + STOP_TIMEOUT_S - time.monotonic())
            try:
                code = await asyncio.to_thread(proc.proc.wait, remaining)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"{proc.name} still running {STOP_TIMEOUT_S:.0f} s after SIGTERM: {proc.stderr}"
                ) from None
            exits[proc.name] = (code, time.monotonic() - stop_started)
        timings["stopped"] = time.monotonic() - t0
        for client in clients:
            await client.closed(timeout=5)
        for proc in procs:
            assert exits[proc.name][0] == 0, (proc.name, exits[proc.name], proc.stderr)
            assert "Traceback" not in proc.stderr, (proc.name, proc.stderr)
        for client in clients:
            assert client.error is None, (client.name, client.error)
            assert client.close_code == 1001, (client.name, client.close_code, client.close_reason)
        print(
            f"\ntimings (s since start): {', '.join(f'{k} {v:.1f}' for k, v in timings.items())}; "
            f"exits after SIGTERM: {', '.join(f'{k} {c} in {s:.1f} s' for k, (c, s) in exits.items())}; "
            f"close: {[(c.name, c.close_code, c.close_reason) for c in clients]}"
        )
        assert time.monotonic() - t0 < 90, timings
    finally:
        for client in clients:
            await client.abort()
        for proc in procs:
            proc.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


def _run_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactive_services.cli", "serve", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_some_services_without_kafka_is_a_configuration_error(tmp_path: Path) -> None:
    env = _env(RS_JWT_SECRET=secrets.token_urlsafe(48), PYTHONPATH=str(ROOT))
    done = _run_serve(["--only", "gateway", "--port", "0", "--data-dir", str(tmp_path / "data")], env, tmp_path)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad configuration: only: "), done.stderr
    assert "--bootstrap-servers" in lines[0]


def test_no_token_settings_outside_dev_mode_is_a_configuration_error(tmp_path: Path) -> None:
    env = _env(PYTHONPATH=str(ROOT))  # no RS_JWT_* at all, and no --dev
    done = _run_serve(["--port", "0", "--data-dir", str(tmp_path / "data")], env, tmp_path)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: bad configuration: RS_JWT_SECRET: "), lines[0]
