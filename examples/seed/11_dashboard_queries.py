# Seed README, Production Examples 1 and 3: the queries of the dashboard and the health check.
# The web endpoint (@app.endpoint, app.start) and @app.cached belong to later work; the queries
# inside them, as written, run here. Filled in: the tables and rows they read.
from _models import order_app

app = order_app()

# --- from "E-commerce Analytics Dashboard", as written ---
metrics = {
    "today": app.query("orders").where({
        "created_at": {"$gte": {"$date": "today"}}
    }).aggregate([{"$sum": "$amount"}]),

    "top_products": app.query("order_items").aggregate([
        {"$group": {"_id": "$product_id", "sold": {"$sum": "$quantity"}}},
        {"$sort": {"sold": -1}},
        {"$limit": 10}
    ])
}

# --- from "Real-time Monitoring", as written ---
health = {
    "active_users": app.query("sessions").where({
        "last_seen": {"$gte": {"$date": "-5m"}}
    }).count(),

    "error_rate": app.query("logs").where({
        "level": "ERROR",
        "timestamp": {"$gte": {"$date": "-1h"}}
    }).count()
}

print(metrics, health)
