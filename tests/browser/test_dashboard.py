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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from reactive_services.testing import wait_for_sync

ROOT = Path(__file__).resolve().parents[2]
PRODUCTS = ROOT / "examples" / "shop" / "data" / "olist" / "products.csv"
ARTIFACTS = ROOT / "test-artifacts"


def until(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    """The kit's wait_for_sync, ``what`` first (it reads better before a long predicate)."""
    return wait_for_sync(predicate, timeout, what=what)


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RS_JWT_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reactive_services.cli",
            "serve",
            "--dev",
            "--port",
            "0",
            "--replay-logs",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
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
    try:
        yield {"url": url.group(1), "token": token.group(1), "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        yield driver
    finally:
        driver.quit()


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
