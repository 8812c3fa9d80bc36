"""The dashboard end to end in headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

`reactive-services serve --dev` runs as a real process; the page is opened with the dev token,
orders are posted through the gateway with httpx, and the page must show them live: the order
feed with each order's outcome, stock levels with the low ones highlighted, and the log error
rate chart fed by the replayed loghub files. A screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from reactive_services.testing import wait_for_sync

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ROOT / "examples" / "shop" / "data" / "olist" / "products.csv"
ARTIFACTS = ROOT / "test-artifacts"


def until(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The kit's wait_for_sync, ``what`` first (it reads better before a long predicate)."""
    return wait_for_sync(predicate, timeout, what=what)


def start_serve(
    data_dir: Path, *, port: int = 0, replay_logs: bool = True, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """``reactive-services serve --dev`` as a process: ``{"url", "token", "proc"}`` once it printed ``ready``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RS_JWT_")}
    environ.update(env or {})
    args = ["serve", "--dev", "--port", str(port), "--grpc-port", "0", "--data-dir", str(data_dir)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactive_services.cli", *args, *(["--replay-logs"] if replay_logs else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while not lines or lines[-1] != "ready":
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited {proc.wait()}: {proc.stderr.read() if proc.stderr else ''}")
        lines.append(line.strip())
        assert time.monotonic() < deadline, lines
    text = "\n".join(lines)
    url = re.search(r"dashboard: (http://\S+)", text)
    token = re.search(r"dev token \(every scope\): (\S+)", text)
    assert url and token, text
    return {"url": url.group(1), "token": token.group(1), "proc": proc}


def stop_serve(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[dict[str, Any]]:
    started = start_serve(tmp_path / "data")
    try:
        yield started
    finally:
        stop_serve(started["proc"])


def low_stock_products(n: int) -> list[str]:
    """Products whose initial stock (product_photos_qty) is 2: one unit ordered leaves 1 < 2 -> stock.low."""
    with open(PRODUCTS, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["product_photos_qty"] == "2" and r["product_weight_g"]]
    return [r["product_id"] for r in rows[:n]]


def test_dashboard_shows_orders_stock_and_error_rate_live(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    browser.get(shop["url"] + "#token=" + shop["token"])
    until(
        "the websocket to connect",
        lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "connected",
    )

    products = low_stock_products(3)
    headers = {"Authorization": f"Bearer {shop['token']}"}
    order_ids = []
    with httpx.Client(base_url=shop["url"], headers=headers, timeout=10) as http:
        for product_id in products:
            response = http.post("orders", json={"items": [{"product_id": product_id, "quantity": 1}]})
            assert response.status_code == 202, response.text
            order_ids.append(response.json()["order_id"])
        unknown = http.post("orders", json={"items": [{"product_id": "no-such-product", "quantity": 1}]})
        assert unknown.status_code == 202
        order_ids.append(unknown.json()["order_id"])

    def status_of(order_id: str) -> str | None:
        rows = browser.find_elements(By.CSS_SELECTOR, f'#orders tr[data-order-id="{order_id}"]')
        return rows[0].get_attribute("data-status") if rows else None

    until("the orders' outcomes on the page", lambda: all(status_of(o) in ("applied", "rejected") for o in order_ids))
    assert [status_of(o) for o in order_ids] == ["applied", "applied", "applied", "rejected"]

    def stock_row(product_id: str) -> Any:
        rows = browser.find_elements(By.CSS_SELECTOR, f'#stock tr[data-product-id="{product_id}"]')
        return rows[0] if rows else None

    until(
        "low stock highlighted",
        lambda: all(stock_row(p) is not None and stock_row(p).get_attribute("data-low") == "true" for p in products),
    )
    for product_id in products:
        row = stock_row(product_id)
        assert row.find_elements(By.TAG_NAME, "td")[1].text == "1"
        assert "low" in (row.get_attribute("class") or "")

    # the replayed loghub files feed log.stats: the chart has points for the four sources
    until(
        "the error-rate chart",
        lambda: int(browser.find_element(By.ID, "error-chart").get_attribute("data-points") or 0) > 0,
        timeout=60,
    )
    until(
        "every source in the chart",
        lambda: all(
            s in browser.find_element(By.ID, "chart-legend").text for s in ("Apache", "HDFS", "Linux", "OpenSSH")
        ),
        timeout=60,
    )

    # alerts raised while the files were replayed (before the page connected) come from /logs/alerts
    until("the alerts list", lambda: int(browser.find_element(By.ID, "alerts-count").text or 0) > 0, timeout=30)
    kinds = {li.get_attribute("data-kind") for li in browser.find_elements(By.CSS_SELECTOR, "#alerts li")}
    assert kinds <= {"error_rate", "new_template", "template_rate"} and kinds

    # the system's topology, drawn by the gateway (GET /topology.svg), is shown
    until(
        "the topology picture",
        lambda: (
            browser.execute_script("const i = document.getElementById('topology'); return i.complete && i.naturalWidth")
            > 100
        ),
    )

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_a_bad_token_is_refused_with_4401(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    browser.get(shop["url"] + "#token=not.a.jwt")
    until("the refusal", lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "closed")
    assert "4401" in browser.find_element(By.ID, "status").text


def test_serve_stops_gracefully_on_sigterm(shop: dict[str, Any]) -> None:
    proc = shop["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_the_api_docs_work_offline(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    # Swagger UI's script and styles come from the gateway itself (fastapi-offline), never a CDN:
    # this machine reaches no CDN, so the page renders the operations only if that holds.
    base = shop["url"].rstrip("/")
    html = httpx.get(base + "/docs", timeout=10).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets  # every asset from this host
    browser.get(base + "/docs")
    until("Swagger UI rendered the operations", lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/orders" in paths and "/auth/login" in paths, paths


def test_a_failed_login_shows_the_apis_message(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    browser.get(shop["url"])
    status = browser.find_element(By.ID, "login-status")
    browser.find_element(By.CSS_SELECTOR, "#login-form button, #login-form input[type=submit]").click()
    until("the empty login's answer", lambda: status.text)
    shown = status.text
    # what the API says of an empty username, asked directly (not taken from the page's code)
    answer = httpx.post(shop["url"].rstrip("/") + "/auth/login", json={"username": "", "password": ""}, timeout=10)
    assert answer.status_code == 422
    assert shown.startswith("login failed (422): ") and answer.json()["message"] in shown, shown
    assert "object Object" not in shown
    browser.find_element(By.ID, "username").send_keys("nobody")
    browser.find_element(By.ID, "password").send_keys("wrong password")
    browser.find_element(By.CSS_SELECTOR, "#login-form button, #login-form input[type=submit]").click()
    until("the refused login", lambda: "(401)" in status.text)
    refused = httpx.post(
        shop["url"].rstrip("/") + "/auth/login", json={"username": "nobody", "password": "wrong password"}, timeout=10
    )
    assert status.text == f"login failed (401): {refused.json()['detail']}", status.text


# ---------------------------------------------------------------- the state on open, the layout, reconnecting

DOCS_IMAGES = ROOT / "docs" / "images"


def keep_screenshot(browser: webdriver.Chrome, name: str) -> Path:
    """A screenshot in test-artifacts/, and in docs/images/ when RS_UPDATE_DOCS_IMAGES=1
    (``scripts/dashboard_screenshots.py``: the docs' pictures come from a real run)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("RS_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMAGES / name)
    return shot


def place_orders_before_opening(shop: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any]]:
    """Three orders of low-stock products and one of an unknown product, posted through the gateway;
    returns (product ids, order ids, GET /orders's answer once every outcome is known)."""
    products = low_stock_products(3)
    headers = {"Authorization": f"Bearer {shop['token']}"}
    with httpx.Client(base_url=shop["url"], headers=headers, timeout=10) as http:
        order_ids = []
        for items in [[{"product_id": p, "quantity": 1}] for p in products] + [
            [{"product_id": "no-such-product", "quantity": 1}]
        ]:
            response = http.post("orders", json={"items": items})
            assert response.status_code == 202, response.text
            order_ids.append(response.json()["order_id"])

        def settled() -> dict[str, Any] | None:
            body: dict[str, Any] = http.get("orders", params={"limit": 100}).json()
            outcomes = {o["order_id"]: o["outcome"] for o in body["orders"]}
            return body if all(outcomes.get(o) is not None for o in order_ids) else None

        return products, order_ids, until("the orders' outcomes in the API", settled)


def test_the_page_opens_with_the_current_state(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    products, order_ids, api_orders = place_orders_before_opening(shop)
    headers = {"Authorization": f"Bearer {shop['token']}"}
    api_stock = httpx.get(shop["url"] + "inventory", params={"limit": 200}, headers=headers, timeout=10).json()
    stock_by_id = {i["product_id"]: i for i in api_stock["items"]}
    assert set(products) <= set(stock_by_id)  # sold last: on the first page of order=recent

    browser.get(shop["url"] + "#token=" + shop["token"])
    until("connected", lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "connected")

    outcome = {o["order_id"]: o["outcome"]["status"] for o in api_orders["orders"] if o["outcome"]}

    def rows_of(order_id: str) -> list[Any]:
        return browser.find_elements(By.CSS_SELECTOR, f'#orders tr[data-order-id="{order_id}"]')

    until("the orders loaded on open", lambda: all(rows_of(o) for o in order_ids))
    for order_id in order_ids:
        [row] = rows_of(order_id)  # once, not once per source (the load and a live event)
        assert row.get_attribute("data-loaded") == "true"
        assert row.get_attribute("data-status") == outcome[order_id]
    assert [outcome[o] for o in order_ids] == ["applied", "applied", "applied", "rejected"]
    assert f"of {api_orders['total']:,} orders" in browser.find_element(By.ID, "orders-summary").text

    def stock_cells(product_id: str) -> tuple[str, str | None] | None:
        rows = browser.find_elements(By.CSS_SELECTOR, f'#stock tr[data-product-id="{product_id}"]')
        return (rows[0].find_elements(By.TAG_NAME, "td")[1].text, rows[0].get_attribute("data-low")) if rows else None

    until("the stock loaded on open", lambda: all(stock_cells(p) for p in products))
    for product_id in products:
        expected = stock_by_id[product_id]
        assert stock_cells(product_id) == (str(expected["stock"]), "true" if expected["low"] else "false")
    shown = browser.find_elements(By.CSS_SELECTOR, "#stock tbody tr")
    assert len(shown) == len(api_stock["items"])
    assert f"of {api_stock['total']:,} products" in browser.find_element(By.ID, "stock-summary").text

    # the chart: plotly.js (from the gateway, not a CDN), one date axis per source, ticks with dates
    assert browser.execute_script("return typeof window.Plotly") == "object"
    until(
        "a time axis per source",
        lambda: len(browser.find_elements(By.CSS_SELECTOR, "#error-chart g.xaxislayer-above")) == 4,
        timeout=60,
    )

    def tick_labels() -> list[str]:
        return [
            t.get_attribute("textContent") or ""
            for t in browser.find_elements(By.CSS_SELECTOR, "#error-chart g.xaxislayer-above text")
        ]

    years = until(
        "date labels for the sources' years",
        lambda: {y for t in tick_labels() for y in re.findall(r"\b(?:19|20)\d\d\b", t)} or None,
    )
    assert len(years) >= 2, (years, tick_labels())  # the loghub sources span different years
    legend = browser.find_element(By.CSS_SELECTOR, "#error-chart .legend").get_attribute("textContent") or ""
    assert all(s in legend for s in ("Apache", "HDFS", "Linux", "OpenSSH")), legend
    y_ticks = [
        t.get_attribute("textContent")
        for t in browser.find_elements(By.CSS_SELECTOR, "#error-chart g.yaxislayer-above text")
    ]
    assert y_ticks and all(t.endswith("%") for t in y_ticks), y_ticks
    assert (
        httpx.get(shop["url"] + "vendor/plotly.min.js", timeout=10)
        .headers["content-type"]
        .startswith("text/javascript")
    )

    until("the alerts list", lambda: int(browser.find_element(By.ID, "alerts-count").text or 0) > 0, timeout=30)
    assert "alerts" in browser.find_element(By.ID, "alerts-note").text
    time.sleep(1.0)  # the chart's last redraw
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # no script error, no failed request
    keep_screenshot(browser, "dashboard-wide.png")


@pytest.mark.parametrize("width", [420, 400])
def test_the_narrow_layout(shop: dict[str, Any], browser: webdriver.Chrome, width: int) -> None:
    place_orders_before_opening(shop)  # a rejected order's long reason is in the status column
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 1600, "deviceScaleFactor": 1, "mobile": False}
    )
    browser.get(shop["url"] + "#token=" + shop["token"])
    until("connected", lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "connected")
    until("the orders", lambda: len(browser.find_elements(By.CSS_SELECTOR, '#orders tr[data-status="rejected"]')) > 0)
    until("the chart", lambda: int(browser.find_element(By.ID, "error-chart").get_attribute("data-points") or 0) > 0)
    assert browser.execute_script("return window.innerWidth") == width

    box = browser.execute_script(
        "const r = document.getElementById('connect').getBoundingClientRect();"
        "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width};"
    )
    assert box["width"] > 0 and box["left"] >= 0 and box["right"] <= width and box["top"] >= 0, box
    assert browser.find_element(By.ID, "connect").is_displayed()
    # the page does not scroll sideways; the tables fit their panel, the status column is whole
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
    for table in ("orders", "stock"):
        fit = browser.execute_script(
            "const t = document.getElementById(arguments[0]); const wrap = t.parentElement;"
            "const w = wrap.getBoundingClientRect(); const cells = [...t.querySelectorAll('tr > :last-child')];"
            "return {scroll: wrap.scrollWidth, client: wrap.clientWidth, cells: cells.length,"
            " clipped: cells.filter((c) => { const r = c.getBoundingClientRect();"
            "   return r.right > w.right + 0.5 || r.left < w.left - 0.5 || r.width < 20; }).length};",
            table,
        )
        assert fit["cells"] > 1 and fit["clipped"] == 0 and fit["scroll"] <= fit["client"], (table, fit)
    if width == 420:
        keep_screenshot(browser, "dashboard-narrow.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_page_reconnects_after_serve_restarts(tmp_path: Path, browser: webdriver.Chrome) -> None:
    # one secret for both processes, so that the page's token stays valid across the restart
    env = {"RS_JWT_SECRET": "a-test-secret-of-at-least-32-bytes-long!"}
    port = free_port()
    first = start_serve(tmp_path / "data", port=port, replay_logs=False, env=env)
    second: dict[str, Any] | None = None
    try:
        browser.get(first["url"] + "#token=" + first["token"])
        status = browser.find_element(By.ID, "status")
        until("connected", lambda: status.get_attribute("data-state") == "connected")
        browser.execute_script(
            "const el = document.getElementById('status'); window.__states = [];"
            "new MutationObserver(() => window.__states.push([el.dataset.state, el.textContent]))"
            ".observe(el, {attributes: true, childList: true, characterData: true, subtree: true});"
        )
        stop_serve(first["proc"])
        until("reconnecting", lambda: status.get_attribute("data-state") in ("reconnecting", "connecting"))
        second = start_serve(tmp_path / "data", port=port, replay_logs=False, env=env)
        until("connected again", lambda: status.get_attribute("data-state") == "connected", timeout=90)
        states: list[list[str]] = browser.execute_script("return window.__states")
        names = [s for s, _ in states]
        assert "reconnecting" in names and names[-1] == "connected", states
        assert any(
            re.match(r"reconnecting in \d+(\.\d)? s \(closed \d+", text) for s, text in states if s == "reconnecting"
        ), states
        # live events flow on the new connection
        product = low_stock_products(4)[3]
        response = httpx.post(
            second["url"] + "orders",
            json={"items": [{"product_id": product, "quantity": 1}]},
            headers={"Authorization": f"Bearer {second['token']}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        order_id = response.json()["order_id"]
        until(
            "the new order's outcome on the page",
            lambda: browser.find_elements(
                By.CSS_SELECTOR, f'#orders tr[data-order-id="{order_id}"][data-status="applied"]'
            ),
        )
    finally:
        for started in (first, second):
            if started is not None:
                stop_serve(started["proc"])


#: Installed before the page's scripts: records every frame the page sends.
RECORD_SENT = """
window.__sent = [];
const nativeSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) {
  window.__sent.push(JSON.parse(data));
  return nativeSend.call(this, data);
};
"""


def test_the_page_resubscribes_with_the_last_cursor_it_saw(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    # the first subscribe has no "since"; the server's frames carry a cursor, and after a dropped
    # connection the page subscribes with the last one it saw: resumed, nothing loaded again
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_SENT})
    browser.get(shop["url"] + "#token=" + shop["token"])
    status = browser.find_element(By.ID, "status")
    until("connected", lambda: status.get_attribute("data-state") == "connected")
    until("the state loaded", lambda: browser.execute_script("return document.body.dataset.loads") == "1")
    [first] = browser.execute_script("return window.__sent")
    assert first["op"] == "subscribe" and "since" not in first, first
    cursor = browser.execute_script("return state.cursor")
    assert isinstance(cursor, str) and cursor.startswith("v1."), cursor  # from the server's subscribed reply

    browser.execute_script("state.socket.close(3000, 'dropped by the test');")
    until("reconnected", lambda: browser.execute_script("return window.__sent.length") == 2, timeout=10)
    until("connected", lambda: status.get_attribute("data-state") == "connected")
    second = browser.execute_script("return window.__sent")[1]
    assert second == {"op": "subscribe", "channels": first["channels"], "since": cursor}, second
    until("resumed", lambda: "resumed" in (status.text or ""))
    assert browser.execute_script("return document.body.dataset.loads") == "1"  # resumed: nothing loaded again
    assert browser.execute_script("return state.recoveryFailed") == 0

    # a cursor the server cannot honour: it says so, and the page loads the state again
    browser.execute_script("state.cursor = 'v1.garbage'; state.socket.close(3000, 'dropped by the test');")
    until("the state loaded again", lambda: browser.execute_script("return document.body.dataset.loads") == "2")
    assert "not resumed: malformed cursor" in status.text
    assert browser.execute_script("return state.recoveryFailed") == 1


def test_a_bad_token_is_not_retried(shop: dict[str, Any], browser: webdriver.Chrome) -> None:
    browser.get(shop["url"] + "#token=not.a.jwt")
    status = browser.find_element(By.ID, "status")
    until("the refusal", lambda: status.get_attribute("data-state") == "closed")
    time.sleep(2.0)  # a retry would have started by now (the first one comes within 0.75 s)
    assert status.get_attribute("data-state") == "closed"
    assert "4401" in status.text and "not reconnecting" in status.text and "log in again" in status.text


def test_a_token_without_some_scopes_says_what_was_not_loaded(tmp_path: Path, browser: webdriver.Chrome) -> None:
    from reactive_services.auth import JwtConfig, issue_token

    secret = "a-test-secret-of-at-least-32-bytes-long!"
    started = start_serve(tmp_path / "data", replay_logs=False, env={"RS_JWT_SECRET": secret})
    try:
        token = issue_token(JwtConfig.from_env({"RS_JWT_SECRET": secret}), "eve", ["notifications:read", "orders:read"])
        browser.get(started["url"] + "#token=" + token)
        until("connected", lambda: browser.find_element(By.ID, "status").get_attribute("data-state") == "connected")
        until("the stock panel's message", lambda: browser.find_element(By.ID, "stock-error").text)
        assert browser.find_element(By.ID, "stock-error").text == (
            "the stock not loaded: the token lacks the scope inventory:read"
        )
        assert "logs:read" in browser.find_element(By.ID, "logs-error").text
        until("the orders loaded", lambda: "No orders yet" in browser.find_element(By.ID, "orders-summary").text)
        assert browser.find_element(By.ID, "orders-error").text == ""
        # a failed request reads as the API's own words (here a 403 from GET /inventory)
        shown = browser.execute_async_script(
            "const done = arguments[0]; getJson('inventory?limit=0', state.token).then(() => done('no error'),"
            " (err) => done(err.message));"
        )
        assert shown.startswith("GET inventory?limit=0 failed (403): missing scope: inventory:read"), shown
    finally:
        stop_serve(started["proc"])
