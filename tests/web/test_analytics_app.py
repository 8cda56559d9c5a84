"""examples/analytics_dashboard, started once per backend as a real server with its cache in Redis:
the numbers of every endpoint against sums made here, a repeated request served from the cache, a
write through the API seen by the next request, and the page drawing its charts in a headless
Chromium that can resolve no host but 127.0.0.1."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from browser import off_host, requested_urls
from served import Served

APP = Path(__file__).resolve().parents[2] / "examples" / "analytics_dashboard" / "app.py"
REDIS = "redis://127.0.0.1:6379/0"
CENT = Decimal("0.01")

PRODUCTS = [("MUG", "Mug"), ("TEA", "Green tea"), ("POT", "Teapot"), ("CUP", "Cup")]
# (sku, days ago, quantity, amount): sums whose text order differs from their numeric order, a sale
# outside the 14-day window, and a product (CUP) that sold nothing.
SALES = [("MUG", 0, 2, "19.00"), ("TEA", 0, 1, "4.25"), ("MUG", 1, 1, "9.50"), ("POT", 1, 1, "100.00"),
         ("TEA", 3, 5, "21.25"), ("POT", 6, 1, "95.00"), ("MUG", 13, 3, "28.50"), ("TEA", 20, 2, "8.50"),
         ("MUG", 20, 1, "9.50")]


@dataclass
class Dashboard:
    app: Served
    prefix: str
    today: date
    ids: dict[str, int]
    names: dict[int, tuple[str, str]]
    sales: list[tuple[int, date, int, Decimal]] = field(default_factory=list)
    products: int = len(PRODUCTS)
    active_users: int = 0
    error_rate: int = 0


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def dashboard(module_url, tmp_path_factory):
    prefix = f"dftest:analytics:{uuid.uuid4().hex[:12]}:"
    cwd = tmp_path_factory.mktemp("analytics")
    try:
        with Served(APP, module_url, cwd, env={"DATAFLOW_REDIS_URL": REDIS, "DATAFLOW_CACHE_PREFIX": prefix}) as app:
            yield seed(app, prefix)
    finally:
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def seed(app: Served, prefix: str) -> Dashboard:
    http = app.http
    made = http.post("/api/products/bulk", json=[{"sku": s, "name": n} for s, n in PRODUCTS])
    assert made.status_code == 201, made.text
    ids = {p["sku"]: p["id"] for p in made.json()["records"]}
    today = utc_now().date()
    d = Dashboard(app, prefix, today, ids, {p["id"]: (p["sku"], p["name"]) for p in made.json()["records"]})
    rows = [{"product_id": ids[s], "sold_on": (today - timedelta(days=ago)).isoformat(), "quantity": q, "amount": a}
            for s, ago, q, a in SALES]
    assert http.post("/api/sales/bulk", json=rows).status_code == 201
    d.sales = [(ids[s], today - timedelta(days=ago), q, Decimal(a)) for s, ago, q, a in SALES]

    now = utc_now()  # seen 0 and 1 minutes ago: active; 30 minutes ago: not (the window is 5 minutes)
    sessions = [{"user_id": i, "last_seen": (now - timedelta(minutes=m)).isoformat()} for i, m in enumerate([0, 1, 30])]
    assert http.post("/api/sessions/bulk", json=sessions).status_code == 201
    logs = [{"level": lv, "message": "m", "timestamp": (now - timedelta(minutes=m)).isoformat()}
            for lv, m in [("ERROR", 1), ("ERROR", 10), ("INFO", 1), ("WARNING", 2), ("ERROR", 120)]]
    assert http.post("/api/logs/bulk", json=logs).status_code == 201
    d.active_users, d.error_rate = 2, 2
    return d


# ---------------------------------------------------------------- what the endpoints must answer
def expected_summary(d: Dashboard, day: date) -> dict:
    revenue = sum(a for *_, a in d.sales)
    return {"day": day.isoformat(), "revenue": str(revenue.quantize(CENT)), "units": sum(q for _, _, q, _ in d.sales),
            "sales": len(d.sales), "average_sale": str((revenue / len(d.sales)).quantize(CENT)),
            "today_revenue": str(sum((a for _, on, _, a in d.sales if on == day), Decimal(0)).quantize(CENT)),
            "products": d.products}


def expected_daily(d: Dashboard, end: date, days: int) -> list[dict]:
    out = []
    for i in range(days - 1, -1, -1):
        day = end - timedelta(days=i)
        rows = [(q, a) for _, on, q, a in d.sales if on == day]
        out.append({"day": day.isoformat(), "revenue": str(sum((a for _, a in rows), Decimal(0)).quantize(CENT)),
                    "units": sum(q for q, _ in rows), "sales": len(rows)})
    return out


def expected_by_product(d: Dashboard, limit: int) -> list[dict]:
    revenue: dict[int, Decimal] = defaultdict(Decimal)
    units: dict[int, int] = defaultdict(int)
    for pid, _, q, a in d.sales:
        revenue[pid] += a
        units[pid] += q
    ranked = sorted(revenue, key=lambda pid: (-revenue[pid], pid))[:limit]
    return [{"product_id": pid, "sku": d.names[pid][0], "name": d.names[pid][1],
             "revenue": str(revenue[pid].quantize(CENT)), "units": units[pid]} for pid in ranked]


def check_numbers(d: Dashboard) -> None:
    http = d.app.http
    summary = http.get("/api/sales/summary").json()
    assert summary == expected_summary(d, date.fromisoformat(summary["day"]))
    end = d.today.isoformat()
    daily = http.get("/api/sales/daily", params={"days": 14, "end": end}).json()
    assert daily == {"end": end, "days": expected_daily(d, d.today, 14)}
    assert http.get("/api/sales/daily", params={"days": 3, "end": end}).json()["days"] == expected_daily(d, d.today, 3)
    assert http.get("/api/sales/by-product").json() == {"products": expected_by_product(d, 10)}
    assert http.get("/api/sales/by-product", params={"limit": 2}).json() == {"products": expected_by_product(d, 2)}
    assert http.get("/api/health").json() == {"active_users": d.active_users, "error_rate": d.error_rate}


def cache_counts(d: Dashboard) -> tuple[int, int, float]:
    """(hits, misses) from /api/cache, and the hit counter of /metrics."""
    stats = d.app.http.get("/api/cache").json()
    assert stats["backend"] == "redis" and stats["available"] is True and stats["errors"] == 0
    metrics = d.app.http.get("/metrics").text
    hits = re.search(r'^dataflow_cache_requests_total\{result="hit"\} (\S+)$', metrics, re.M)
    return stats["hits"], stats["misses"], float(hits.group(1)) if hits else 0.0


# ---------------------------------------------------------------- tests
def test_numbers(dashboard):
    check_numbers(dashboard)
    http = dashboard.app.http
    assert http.get("/api/sales/daily", params={"days": 0}).status_code == 422
    assert http.get("/api/sales/by-product", params={"limit": 1000}).status_code == 422
    refused = http.post("/api/sales", json={"product_id": dashboard.ids["MUG"], "quantity": 0, "amount": "1.00"})
    assert refused.status_code == 422 and refused.json()["message"] == "quantity must be positive"
    assert http.post("/api/sales", json={"product_id": 999_999, "quantity": 1, "amount": "1.00"}).status_code == 422


def test_repeat_is_a_cache_hit_and_a_write_shows_on_the_next_request(dashboard):
    d, http = dashboard, dashboard.app.http
    first = http.get("/api/sales/summary").json()  # a miss or a hit, whatever ran before
    hits, misses, prom_hits = cache_counts(d)
    assert http.get("/api/sales/summary").json() == first
    assert cache_counts(d) == (hits + 1, misses, prom_hits + 1)  # served from the cache
    stored = redis.Redis.from_url(REDIS)
    try:
        assert list(stored.scan_iter(match=f"{d.prefix}e:fn:*sales_summary:*"))  # the entry is in Redis
    finally:
        stored.close()

    # A sale through the REST API, sold_on left out (today): the next request recomputes.
    made = http.post("/api/sales", json={"product_id": d.ids["CUP"], "quantity": 7, "amount": "17.50"})
    assert made.status_code == 201, made.text
    assert made.json()["sold_on"] == first["day"]
    d.sales.append((d.ids["CUP"], date.fromisoformat(made.json()["sold_on"]), 7, Decimal("17.50")))
    after = http.get("/api/sales/summary").json()
    assert cache_counts(d) == (hits + 1, misses + 1, prom_hits + 1)  # a miss: the sales table changed
    assert Decimal(after["revenue"]) == Decimal(first["revenue"]) + Decimal("17.50")
    assert (after["sales"], after["units"]) == (first["sales"] + 1, first["units"] + 7)
    assert Decimal(after["today_revenue"]) == Decimal(first["today_revenue"]) + Decimal("17.50")
    assert http.get("/api/sales/summary").json() == after
    assert cache_counts(d)[:2] == (hits + 2, misses + 1)

    # The monitoring block: a new error and a new session show on the next request too.
    assert http.get("/api/health").json() == {"active_users": d.active_users, "error_rate": d.error_rate}
    now = utc_now().isoformat()
    assert http.post("/api/logs", json={"level": "ERROR", "message": "disk full", "timestamp": now}).status_code == 201
    assert http.post("/api/sessions", json={"user_id": 99, "last_seen": now}).status_code == 201
    d.error_rate += 1
    d.active_users += 1
    check_numbers(d)  # every endpoint, the new sale included

    # The summary counts products too: a new one shows, though it sold nothing.
    hits, misses, _ = cache_counts(d)
    assert http.post("/api/products", json={"sku": "JAR", "name": "Jar"}).status_code == 201
    d.products += 1
    assert http.get("/api/sales/summary").json()["products"] == d.products
    assert cache_counts(d)[:2] == (hits, misses + 1)

    # An update and a delete through the API are writes too.
    sale = made.json()["id"]
    assert http.patch(f"/api/sales/{sale}", json={"amount": "20.00"}).status_code == 200
    d.sales[-1] = (*d.sales[-1][:3], Decimal("20.00"))
    check_numbers(d)
    assert http.delete(f"/api/sales/{sale}").status_code == 204
    d.sales.pop()
    check_numbers(d)


@pytest.mark.first_backend  # the page reads the JSON checked above on every backend; once is enough
def test_page_draws_the_charts_with_nothing_from_off_host(dashboard, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d = dashboard
    requested_urls(browser)  # drop what earlier pages asked for
    browser.get(f"{d.app.base}/")
    try:
        WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.body.dataset.loaded === 'true'"))
        summary = d.app.http.get("/api/sales/summary").json()
        health = d.app.http.get("/api/health").json()
        tiles = {el.get_attribute("id"): el.text for el in browser.find_elements(By.CSS_SELECTOR, ".tile .value")}
        shown = {k: v.replace(",", "") for k, v in tiles.items()}  # en-US: thousands separated by commas
        assert shown == {"revenue": summary["revenue"], "today-revenue": summary["today_revenue"],
                         "sales": str(summary["sales"]), "average-sale": summary["average_sale"],
                         "active-users": str(health["active_users"]), "error-rate": str(health["error_rate"])}

        # The charts are SVG drawn by plotly.js, one bar per day and per product, with the API's numbers.
        daily = d.app.http.get("/api/sales/daily", params={"days": 14}).json()["days"]
        ranked = d.app.http.get("/api/sales/by-product", params={"limit": 10}).json()["products"]
        for chart, bars in (("daily", len(daily)), ("by-product", len(ranked))):
            assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} svg.main-svg")
            assert len(browser.find_elements(By.CSS_SELECTOR, f"#{chart} .trace.bars .point")) == bars
        drawn = browser.execute_script("const g = document.getElementById('daily'); return [g.data[0].x, g.data[0].y]")
        assert drawn == [[r["day"] for r in daily], [float(r["revenue"]) for r in daily]]
        drawn = browser.execute_script("return document.getElementById('by-product').data[0].x")
        assert drawn == [float(r["revenue"]) for r in reversed(ranked)]
        assert browser.find_element(By.ID, "cache").text.startswith("redis,")

        requested = requested_urls(browser)
        assert f"{d.app.base}/static/plotly.min.js" in requested and f"{d.app.base}/api/sales/summary" in requested
        assert not off_host(requested), requested
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(u.startswith(d.app.base) for u in loaded), loaded
    finally:
        browser.get("about:blank")  # stop the page's refresh timer
