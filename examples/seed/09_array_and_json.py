# Seed README, MongoDB-Style Query Builder: "Array and JSON Operations".
# Filled in: the users table (metadata JSON, tags and skills arrays) with rows; reading the result.
from _models import user_app

app = user_app()

# --- the seed's block, as written ---
# JSON/JSONB operations (PostgreSQL, MySQL 5.7+)
profiles = app.query("users").where({
    "metadata.preferences.theme": "dark",   # JSON path queries
    "tags": {"$contains": "premium"},       # Array contains
    "skills": {"$size": {"$gt": 3}}         # Array size > 3
})

# --- filled in: run it ---
names = [p["name"] for p in profiles]
print(names)
