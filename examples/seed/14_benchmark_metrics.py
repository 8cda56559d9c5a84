# Seed README, "Benchmarks": a named timing and the metrics summary.
# Filled in: the large_table model and its rows, and a concrete filter and pipeline for the `...`.
from _env import URL

from dataflow import DataFlow

app = DataFlow(URL)


@app.model
class LargeTable:
    id: int
    category: str
    region: str
    amount: int
    __dataflow__ = {"table": "large_table", "indexes": ["category"]}


app.bulk_create("LargeTable", [
    {"category": f"c{i % 7}", "region": ("north", "south", "east", "west")[i % 4], "amount": i % 100}
    for i in range(2000)
])

# --- as written (the `...` filled in) ---
with app.benchmark("complex_query"):
    results = app.query("large_table").where({"amount": {"$gte": 50}, "region": {"$in": ["north", "east"]}}).aggregate([
        {"$group": {"_id": "$category", "total": {"$sum": "$amount"}, "rows": {"$sum": 1}}},
        {"$sort": {"total": -1}},
    ])

print(app.metrics.summary())
# --- end of the seed's block ---
