"""GET /logs/stats and /logs/alerts: the log-analytics history behind the gateway."""

from __future__ import annotations

from pathlib import Path

from gatewayshop import Shop, until

from reactive_services.examples.shop.log_sources import SOURCES
from reactive_services.logs import replay_logs


def apache(hour: int, minute: int, level: str, text: str) -> str:
    return f"[Sun Dec 04 {hour:02d}:{minute:02d}:00 2005] [{level}] {text}"


async def replay(shop: Shop, tmp_path: Path) -> None:
    # hour 4: 12 lines, 6 errors (error rate 0.5 >= 0.3 with >= 10 lines: an alert); hour 5: 2 lines
    lines = [apache(4, m, "error" if m % 2 else "notice", f"child {m} in error state") for m in range(12)]
    lines += [apache(5, 1, "notice", "workerEnv.init() ok"), apache(6, 30, "notice", "workerEnv.init() ok")]
    path = tmp_path / "Apache_small.log"
    path.write_text("\n".join(lines) + "\n")
    await replay_logs(shop.client, {"Apache": path}, formats=SOURCES)
    # [06:00, 07:00) stays open: the stream of a running service does not complete
    await until(lambda: len(shop.analytics.recent) >= 2, what="two closed windows")


async def test_recent_stats_and_alerts(shop: Shop, tmp_path: Path) -> None:
    await replay(shop, tmp_path)
    headers = shop.headers("carol")  # logs:read
    stats = (await shop.http.get("/logs/stats", headers=headers)).json()
    assert [(s["source"], s["window_start"], s["lines"], s["errors"]) for s in stats] == [
        ("Apache", "2005-12-04T04:00:00Z", 12, 6),
        ("Apache", "2005-12-04T05:00:00Z", 1, 0),
    ]
    alerts = (await shop.http.get("/logs/alerts", headers=headers)).json()
    assert [(a["kind"], a["window_start"]) for a in alerts] == [("error_rate", "2005-12-04T04:00:00Z")]
    last = (await shop.http.get("/logs/stats", params={"limit": 1, "source": "Apache"}, headers=headers)).json()
    assert [s["window_start"] for s in last] == ["2005-12-04T05:00:00Z"]
    assert (await shop.http.get("/logs/stats", params={"source": "HDFS"}, headers=headers)).json() == []


async def test_logs_routes_need_logs_read(shop: Shop) -> None:
    response = await shop.http.get("/logs/stats", headers=shop.headers("alice"))
    assert response.status_code == 403 and "logs:read" in response.json()["detail"]
    assert (await shop.http.get("/logs/alerts")).status_code == 401


async def test_bad_limit_is_422(shop: Shop) -> None:
    response = await shop.http.get("/logs/stats", params={"limit": 0}, headers=shop.headers("carol"))
    assert response.status_code == 422 and "limit" in response.text


async def test_logs_service_down_is_504(shop: Shop) -> None:
    await shop.logs_svc.stop()
    response = await shop.http.get("/logs/stats", headers=shop.headers("carol"))
    assert response.status_code == 504 and "logs.recent_stats" in response.json()["detail"]
