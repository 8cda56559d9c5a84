# Seed README, Enterprise Features: "Multi-Tenant Architecture".
# Filled in: the database URL (DATAFLOW_DATABASE_URL, read by DataFlow itself), the users table the
# query names (with its 'active' field), two tenants' users with the same emails, and running the
# query inside a tenant.
from dataflow import DataFlow

# --- the seed's block, as written ---
app = DataFlow({"multi_tenant": True, "tenant_header": "X-Tenant-ID"})
# --- filled in: the model behind "users" (it gets the tenant_id column) ---


@app.model
class User:
    name: str
    email: str
    active: bool = True


for tenant in ("acme", "globex"):
    with app.tenant(tenant):
        app.bulk_create("User", [{"name": f"{tenant} ann", "email": "ann@example.com"},
                                 {"name": f"{tenant} bob", "email": "bob@example.com", "active": False}])

# --- the seed's block, as written ---
users = app.query("users").where({"active": True})
# Becomes: SELECT * FROM users WHERE tenant_id = ? AND active = true

# --- filled in: the query runs for the tenant of the block it runs in ---
with app.tenant("acme"):
    sql = users.to_sql()
    acme_users = users.all()
with app.tenant("globex"):
    globex_users = users.all()
print(sql)
print([u["name"] for u in acme_users], [u["name"] for u in globex_users])
