"""GET /logs/stats and /logs/alerts: the log-analytics history behind the gateway."""

from __future__ import annotations

from pathlib import Path

from gatewayshop import Shop, until

from reactive_services.examples.shop.log_sources import SOURCES
from reactive_services.logs import replay_logs


def apache(hour: int, minute: int, level: str, text: str, second: int = 0) -> str:
    return f"[Sun Dec 04 {hour:02d}:{minute:02d}:{second:02d} 2005] [{level}] {text}"


async def replay(shop: Shop, tmp_path: Path) -> None:
    # 10-minute windows (the shipped sources'): [04:00, 04:10) 12 lines, one every 45 s, 6 errors
    # (>= 10 lines, >= 5 errors, rate 0.5 >= 0.1, the source's first window: an alert);
    # [04:10, 04:20) 1 line
    lines = [
        apache(4, 45 * m // 60, "error" if m % 2 else "notice", f"child {m} in error state", 45 * m % 60)
        for m in range(12)
    ]
    lines += [apache(4, 11, "notice", "workerEnv.init() ok"), apache(4, 30, "notice", "workerEnv.init() ok")]
    path = tmp_path / "Apache_small.log"
    path.write_text("\n".join(lines) + "\n")
    await replay_logs(shop.client, {"Apache": path}, formats=SOURCES)
    # [04:30, 04:40) stays open: the stream of a running service does not complete
    await until(lambda: len(shop.analytics.recent) >= 2, what="two closed windows")


async def test_recent_stats_and_alerts(shop: Shop, tmp_path: Path) -> None:
    await replay(shop, tmp_path)
    headers = shop.headers("carol")  # logs:read
    stats = (await shop.http.get("/logs/stats", headers=headers)).json()
    assert [(s["source"], s["window_start"], s["lines"], s["errors"]) for s in stats] == [
        ("Apache", "2005-12-04T04:00:00Z", 12, 6),
        ("Apache", "2005-12-04T04:10:00Z", 1, 0),
    ]
    alerts = (await shop.http.get("/logs/alerts", headers=headers)).json()
    assert [(a["kind"], a["window_start"]) for a in alerts] == [("error_rate", "2005-12-04T04:00:00Z")]
    last = (await shop.http.get("/logs/stats", params={"limit": 1, "source": "Apache"}, headers=headers)).json()
    assert [s["window_start"] for s in last] == ["2005-12-04T04:10:00Z"]
    assert (await shop.http.get("/logs/stats", params={"source": "HDFS"}, headers=headers)).json() == []
    # a source named in another case is the same source (as `logs analyze --format apache`)
    lower = (await shop.http.get("/logs/alerts", params={"source": "apache"}, headers=headers)).json()
    assert [(a["source"], a["window_start"]) for a in lower] == [("Apache", "2005-12-04T04:00:00Z")]


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
