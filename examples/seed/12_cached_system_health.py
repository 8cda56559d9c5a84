# Seed README, "Real-time Monitoring": the health check cached for a minute with @app.cached.
# Filled in: the sessions and logs tables it reads, with rows (examples/seed/_models.py), and the calls.
from _models import order_app

app = order_app()

# --- as written ---
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

first = system_health()   # runs the two counts and stores the result
second = system_health()  # served from the cache until a session or a log is written, or 60 s pass
print(first, second, app.cache.stats())
