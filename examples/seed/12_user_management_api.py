# Seed README, Production Example 2 "User Management API", as written, served for real.
# Filled in: the import of datetime, the app (DataFlow() reads DATAFLOW_DATABASE_URL), the User model
# the resource serves (with the tenant_id the middleware filters on), and app.start() to serve it
# (address from DATAFLOW_HOST/DATAFLOW_PORT).
from datetime import datetime
from typing import Optional

from dataflow import DataFlow

app = DataFlow()


@app.model
class User:
    name: str
    email: str
    active: bool = True
    tenant_id: Optional[str] = None


# --- as written ---
# Multi-tenant user management
@app.middleware("tenant_isolation")
def add_tenant_filter(query, request):
    query.where({"tenant_id": request.headers.get("X-Tenant-ID")})

# Automatic CRUD with security
@app.resource("users")
class UserResource:
    def before_create(self, data):
        data["created_at"] = datetime.utcnow()
        return data

    def before_update(self, data):
        data["updated_at"] = datetime.utcnow()
        return data
# --- end of the seed's block ---

app.start()
