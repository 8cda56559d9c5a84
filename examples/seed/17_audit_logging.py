# Seed README, Enterprise Features: "Audit Logging".
# Filled in: the database, a users model with a status, user 123, and who is acting ("admin", as the
# block's comment shows); then the trail is read back.
from _env import URL

from dataflow import DataFlow

app = DataFlow(URL)


@app.model
class User:
    id: int
    name: str
    status: str = "active"


app.create("User", id=123, name="Jane Roe")

with app.actor("admin"):
    # --- the seed's block, as written ---
    # Comprehensive audit trails
    app.enable_audit_log()

    # All data changes automatically logged
    app.update("users", {"id": 123}, {"status": "inactive"})
    # Audit log: {"user": "admin", "action": "update", "table": "users", ...}
    # --- end of the block ---

trail = app.audit_log(table="users", record_id=123)
print("Audit log:", {k: trail[0][k] for k in ("user", "action", "table", "record_id", "before", "after")})
