# Seed README, Migration Guide: the "After: DataFlow" halves (the "before" halves are raw SQL and
# the SQLAlchemy ORM, not our API). Filled in: the users table with rows.
from _models import user_app

app = user_app()

# --- From Raw SQL, after, as written ---
results = app.query("users").where({"age": {"$gt": 18}}).aggregate([
    {"$group": {"_id": "$department", "count": {"$sum": 1}}},
    {"$sort": {"count": -1}}
])

# --- From ORM, after, as written ---
users = app.query("users").where({
    "age": {"$gt": 18},
    "department": {"$in": ["eng", "sales"]}
}).sort({"created_at": -1}).limit(10)

print(results, [u["name"] for u in users])
