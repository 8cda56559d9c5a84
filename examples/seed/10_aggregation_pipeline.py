# Seed README, MongoDB-Style Query Builder: "Aggregation Pipeline".
# Filled in: the orders table with rows.
from _models import order_app

app = order_app()

# --- the seed's block, as written ---
# Complex aggregations with automatic SQL optimization
results = app.query("orders").aggregate([
    {"$match": {"status": "completed"}},
    {"$group": {
        "_id": "$customer_id",
        "total_spent": {"$sum": "$amount"},
        "order_count": {"$sum": 1}
    }},
    {"$sort": {"total_spent": -1}},
    {"$limit": 100}
])

print(results)
