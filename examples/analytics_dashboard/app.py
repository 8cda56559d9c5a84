"""Analytics dashboard (issue 11, "Operations"): the seed's Real-time Monitoring block and sales
aggregations served as JSON, cached with ``@app.cached`` (in Redis when DATAFLOW_REDIS_URL is set),
and a page at ``/`` that charts them with plotly.js, served by this app from the installed ``plotly``
package: no CDN, no request leaves the host.

Run: ``python examples/analytics_dashboard/app.py`` (SQLite ``./dataflow.db``), or with
``DATAFLOW_DATABASE_URL=postgresql://...`` and ``DATAFLOW_REDIS_URL=redis://127.0.0.1:6379/0``;
address from DATAFLOW_HOST/DATAFLOW_PORT (0.0.0.0:8000).
JSON: /api/health, /api/sales/summary, /api/sales/daily, /api/sales/by-product, /api/cache;
REST: /api/products, /api/sales, /api/sessions, /api/logs; Prometheus: /metrics; page: /.
"""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import HTTPException, Query
from starlette.responses import FileResponse

from dataflow import DataFlow
from dataflow.models import Field

HERE = Path(__file__).resolve().parent
CENT = Decimal("0.01")

# Database, Redis and key prefix from DATAFLOW_DATABASE_URL, DATAFLOW_REDIS_URL, DATAFLOW_CACHE_PREFIX.
app = DataFlow(enable_metrics=True)


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


@app.model
class Product:
    sku: Annotated[str, Field(unique=True, max_length=64)]
    name: str
    category: str = "general"


@app.model
class Sale:
    product_id: Annotated[int, Field(references="Product", index=True)]
    quantity: int
    amount: Annotated[Decimal, Field(precision=12, scale=2)]  # what the customer paid for the line
    sold_on: Annotated[date, Field(index=True)] = utc_today   # left out: today (UTC)


# The tables the seed's monitoring block reads.
@app.model
class Session:
    user_id: int
    last_seen: datetime


@app.model
class Log:
    level: str
    message: str
    timestamp: datetime


@app.resource("products", path="/api/products")
class ProductResource:
    pass


@app.resource("sales", path="/api/sales")
class SaleResource:
    def before_create(self, data):
        if data["quantity"] <= 0:
            raise HTTPException(422, "quantity must be positive")
        if data["amount"] < 0:
            raise HTTPException(422, "amount must not be negative")
        return data


@app.resource("sessions", path="/api/sessions")
class SessionResource:
    pass


@app.resource("logs", path="/api/logs")
class LogResource:
    pass


# --- the seed's "Real-time Monitoring" block, as written ---
# Performance monitoring with caching
@app.cached(ttl=60)  # Cache for 1 minute
def system_health():
    return {
        "active_users": app.query("sessions").where({
            "last_seen": {"$gte": {"$date": "-5m"}}
        }).count(),

        "error_rate": app.query("logs").where({
            "level": "ERROR",
            "timestamp": {"$gte": {"$date": "-1h"}}
        }).count()
    }
# --- end of the seed's block ---


def money(value) -> Decimal:
    return Decimal(value or 0).quantize(CENT)


# Each aggregation is cached per arguments until a write to a table it read commits (any door:
# REST, direct calls, nodes, another process sharing the Redis server), or its TTL runs out.
@app.cached(ttl=300)
def sales_summary(day: date) -> dict:
    totals = app.query("sales").aggregate([
        {"$group": {"_id": None, "revenue": {"$sum": "$amount"}, "units": {"$sum": "$quantity"},
                    "sales": {"$sum": 1}, "average": {"$avg": "$amount"}}},
    ])
    t = totals[0] if totals else {}
    today = app.query("sales").where({"sold_on": day}).aggregate([{"$sum": "$amount"}])
    return {"day": day, "revenue": money(t.get("revenue")), "units": t.get("units", 0), "sales": t.get("sales", 0),
            "average_sale": money(t.get("average")), "today_revenue": money(today), "products": app.count("Product")}


@app.cached(ttl=300)
def daily_sales(start: date, end: date) -> list[dict]:
    rows = app.query("sales").where({"sold_on": {"$gte": start, "$lte": end}}).aggregate([
        {"$group": {"_id": "$sold_on", "revenue": {"$sum": "$amount"}, "units": {"$sum": "$quantity"},
                    "sales": {"$sum": 1}}},
        {"$sort": {"_id": 1}},
    ])
    found = {r["_id"]: r for r in rows}
    out = []
    for i in range((end - start).days + 1):  # every day of the range, days without sales as zeros
        day = start + timedelta(days=i)
        r = found.get(day, {})
        out.append({"day": day, "revenue": money(r.get("revenue")), "units": r.get("units", 0),
                    "sales": r.get("sales", 0)})
    return out


@app.cached(ttl=300)
def sales_by_product(limit: int) -> list[dict]:
    rows = app.query("sales").aggregate([
        {"$group": {"_id": "$product_id", "revenue": {"$sum": "$amount"}, "units": {"$sum": "$quantity"}}},
        {"$sort": {"revenue": -1, "_id": 1}},
        {"$limit": limit},
    ])
    ids = [r["_id"] for r in rows]
    names = {p["id"]: p for p in app.list("Product", {"id": {"$in": ids}}, fields=["id", "sku", "name"],
                                           limit=None)} if ids else {}
    return [{"product_id": r["_id"], "sku": names[r["_id"]]["sku"], "name": names[r["_id"]]["name"],
             "revenue": money(r["revenue"]), "units": r["units"]} for r in rows]


@app.endpoint("/api/health")
def health():
    """Active sessions (last 5 minutes) and errors logged in the last hour: the seed's system_health()."""
    return system_health()


@app.endpoint("/api/sales/summary")
def summary():
    """Revenue, units, number of sales and average sale over all time, and today's revenue (UTC)."""
    return sales_summary(utc_today())


@app.endpoint("/api/sales/daily")
def daily(days: Annotated[int, Query(ge=1, le=366)] = 14,
          end: Annotated[date | None, Query(description="the last day (default: today, UTC)")] = None):
    """Revenue, units and sales per day, for the ``days`` days up to ``end``."""
    end = end or utc_today()
    return {"end": end, "days": daily_sales(end - timedelta(days=days - 1), end)}


@app.endpoint("/api/sales/by-product")
def by_product(limit: Annotated[int, Query(ge=1, le=100)] = 10):
    """The products with the highest revenue, with their units sold."""
    return {"products": sales_by_product(limit)}


@app.endpoint("/api/cache")
def cache_stats():
    """The query cache of this process: hits, misses, hit rate, entries and bytes stored, backend."""
    return app.cache.stats()


# --- the page and its assets, all served from here ---
def plotly_js() -> Path:
    try:
        path = resources.files("plotly") / "package_data" / "plotly.min.js"
    except ModuleNotFoundError:
        raise SystemExit("the dashboard charts with plotly.js from the plotly package: "
                         "pip install -e '.[examples]'") from None
    return Path(str(path))


ASSETS = {"plotly.min.js": plotly_js(), "dashboard.js": HERE / "static" / "dashboard.js",
          "dashboard.css": HERE / "static" / "dashboard.css"}
for _asset in ASSETS.values():
    if not _asset.is_file():
        raise SystemExit(f"missing asset {_asset.name}: reinstall plotly or restore static/")


@app.endpoint("/", include_in_schema=False)
def page():
    return FileResponse(HERE / "static" / "index.html", headers={"Cache-Control": "no-cache"})


@app.endpoint("/static/{name}", include_in_schema=False)
def asset(name: str):
    path = ASSETS.get(name)  # a fixed list: nothing else on disk is reachable
    if path is None:
        raise HTTPException(404, "no such asset")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


if __name__ == "__main__":
    app.start()
