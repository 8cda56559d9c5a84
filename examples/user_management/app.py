"""User management (the seed's "Examples Repository"): multi-tenant users with roles (RBAC), an
audit trail and GDPR export/anonymise, over REST.

Run: ``python examples/user_management/app.py`` (SQLite ``./dataflow.db``), or with
``DATAFLOW_DATABASE_URL=postgresql://...``; address from DATAFLOW_HOST/DATAFLOW_PORT (0.0.0.0:8000).
The first admin of a tenant: ``python examples/user_management/app.py add-user TENANT admin EMAIL NAME``
prints an API key, once (only its SHA-256 is stored).

Every request but /health, /ready and the docs carries ``Authorization: Bearer <key>`` and
``X-Tenant-ID: <tenant>``. No key, a malformed one, or one unknown to that tenant (or whose user is
inactive): 401. A key but no tenant header: 403 ``tenant_required``, the framework's answer to an
operation without a tenant. A role's missing permission (table ``PERMISSIONS``): 403 ``forbidden``.

REST: /users, /projects (GET/POST/PATCH/PUT/DELETE), GET /me, POST /users/{id}/keys, GET /audit,
GET /gdpr/users/{id}/export, POST /gdpr/users/{id}/anonymize; docs at /docs.
"""

import hashlib
import secrets
import sys
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Optional

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from dataflow import DataFlow, DataFlowError, Field, NotFoundError
from dataflow.web.errors import error_response

# The seed's "Multi-Tenant Architecture" block: every query is scoped to the request's tenant,
# taken from the X-Tenant-ID header (the tenant_id column is added to every model).
app = DataFlow({
    "multi_tenant": True,
    "tenant_header": "X-Tenant-ID"
})
# The seed's "Audit Logging" block: every write is recorded, in its transaction, with the actor.
app.enable_audit_log()

ROLES = ("admin", "editor", "viewer")

#: What each role may do. "<resource>:<verb>" for the data (checked on every operation of a request,
#: whichever door it takes), and the governance permissions the endpoints below ask for.
PERMISSIONS = {
    "viewer": {"users:read", "projects:read"},
    "editor": {"users:read", "projects:read",
               "users:create", "users:update", "projects:create", "projects:update"},
    "admin": {"users:read", "projects:read",
              "users:create", "users:update", "projects:create", "projects:update",
              "users:delete", "projects:delete",
              "users:access",            # set a user's role or active flag; issue API keys
              "api_keys:read", "api_keys:create", "api_keys:delete",
              "audit:read", "gdpr:export", "gdpr:anonymize"},
}
#: Model -> the resource name its permissions use.
RESOURCES = {"User": "users", "Project": "projects", "ApiKey": "api_keys"}
#: Operation -> the verbs it needs (an upsert both creates and updates).
VERBS = {"read": ("read",), "list": ("read",), "count": ("read",), "aggregate": ("read",), "include": ("read",),
         "create": ("create",), "bulk_create": ("create",), "update": ("update",), "bulk_update": ("update",),
         "upsert": ("create", "update"), "bulk_upsert": ("create", "update"),
         "delete": ("delete",), "bulk_delete": ("delete",)}
#: User fields only user management may set.
ACCESS_FIELDS = ("role", "active")
OPEN_PATHS = ("/health", "/ready", "/openapi.json", "/docs", "/redoc")


@app.model
class User:
    name: Annotated[str, Field(pii=True)]
    email: Annotated[str, Field(unique=True, pii=True)]   # unique within a tenant
    role: Annotated[str, Field(max_length=16)] = "viewer"
    active: bool = True


@app.model
class ApiKey:
    __dataflow__ = {"table": "api_keys", "audit_exclude": ["key_hash"]}
    user_id: Annotated[int, Field(references="User", on_delete="cascade")]
    key_hash: Annotated[str, Field(unique=True, max_length=64)]
    label: Annotated[str, Field(max_length=100)] = "default"


@app.model
class Project:
    name: str
    description: Optional[str] = None
    owner_id: Annotated[Optional[int], Field(references="User", on_delete="set_null")] = None


# ---------------------------------------------------------------- who is calling
@dataclass(frozen=True)
class Caller:
    tenant: str
    user_id: int
    role: str

    @property
    def actor(self) -> str:
        """The audit trail's actor: the user's id, never their email (the trail keeps actors after a GDPR erasure)."""
        return f"user:{self.user_id}"


CALLER: ContextVar[Optional[Caller]] = ContextVar("caller", default=None)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(user_id: int, label: str = "default") -> str:
    """A new API key for a user of the current tenant; only its hash is stored."""
    key = "umk_" + secrets.token_urlsafe(32)
    app.create("ApiKey", {"user_id": user_id, "key_hash": digest(key), "label": label})
    return key


def authenticate(tenant: str, key: str) -> Optional[Caller]:
    """The active user of ``tenant`` holding ``key``, or None. Keys are looked up within the tenant only."""
    with app.tenant(tenant):
        found = app.read("ApiKey", {"key_hash": digest(key)}, raise_on_not_found=False)
        user = app.read("User", found["user_id"], raise_on_not_found=False) if found else None
    if user is None or not user["active"] or user["role"] not in PERMISSIONS:
        return None
    return Caller(tenant, user["id"], user["role"])


def refuse(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status, headers=headers or None)


class Authenticate:
    """ASGI middleware: ``Authorization: Bearer <key>`` + tenant header -> the caller (and the audit actor)."""

    def __init__(self, asgi) -> None:
        self.asgi = asgi

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith("/docs/"):
            await self.asgi(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, key = headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or len(key) > 200:
            response = refuse(401, "unauthorized", "send your API key as 'Authorization: Bearer <key>'",
                              **{"WWW-Authenticate": "Bearer"})
        elif not (tenant := headers.get(app.tenant_header, "").strip()):
            response = refuse(403, "tenant_required", f"send the tenant in the {app.tenant_header} header")
        else:
            try:
                caller = await run_in_threadpool(authenticate, tenant, key)
            except DataFlowError as exc:   # database down (503), a tenant name too long for its column (422)
                response = error_response(exc)
            else:
                if caller is not None:
                    token = CALLER.set(caller)
                    try:
                        with app.actor(caller.actor):
                            await self.asgi(scope, receive, send)
                    finally:
                        CALLER.reset(token)
                    return
                response = refuse(401, "unauthorized", "unknown or revoked API key for this tenant",
                                  **{"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


app.add_middleware(Authenticate)


def caller() -> Caller:
    who = CALLER.get()
    if who is None:  # only the open paths run without one
        raise HTTPException(401, "not authenticated")
    return who


def require(permission: str) -> Caller:
    """The caller, if their role has ``permission``; else 403."""
    who = caller()
    if permission not in PERMISSIONS[who.role]:
        raise HTTPException(403, f"role {who.role!r} may not {permission.replace(':', ' ')}")
    return who


# ---------------------------------------------------------------- RBAC on every operation of a request
# The seed's middleware shape (f(query, request)); tenant isolation itself is the framework's
# (multi_tenant above), so this one checks the caller's role for the operation's model and action.
@app.middleware("rbac")
def enforce_roles(query, request):
    resource, verbs = RESOURCES.get(query.model), VERBS.get(query.action)
    if resource is None or verbs is None:  # a model or action this table does not know: refused
        raise HTTPException(403, f"no permission covers {query.action} on {query.model}")
    for verb in verbs:
        require(f"{resource}:{verb}")


def guard_access_fields(data: dict) -> dict:
    """Only user management (admins) sets a role or the active flag; roles are one of ROLES."""
    if any(f in data for f in ACCESS_FIELDS):
        require("users:access")
    if "role" in data and data["role"] not in ROLES:
        raise HTTPException(422, f"role must be one of {', '.join(ROLES)}")
    return data


@app.resource("users")
class UserResource:
    # Editors may create users (as viewers) and change names and emails. A PUT sets every field,
    # role and active included, so for editors it is refused: they use PATCH.
    def before_create(self, data):
        return guard_access_fields(data)

    def before_update(self, data):
        return guard_access_fields(data)


@app.resource("projects")
class ProjectResource:
    def before_create(self, data):
        if data.get("owner_id") is None:
            data["owner_id"] = caller().user_id
        return data


# ---------------------------------------------------------------- accounts
@app.endpoint("/me")
def me():
    """The caller: their user record, role and permissions."""
    who = caller()
    return {"user": app.read("User", who.user_id), "tenant": who.tenant,
            "permissions": sorted(PERMISSIONS[who.role])}


@app.endpoint("/users/{user_id}/keys", methods=["POST"], status_code=201)
def create_key(user_id: int, label: str = "default"):
    """Issue an API key for a user of this tenant (admins); the key is shown once."""
    require("users:access")
    try:
        app.read("User", user_id)
    except NotFoundError:
        raise HTTPException(404, "no such user") from None
    if not 1 <= len(label) <= 100:
        raise HTTPException(422, "label: 1 to 100 characters")
    return {"user_id": user_id, "label": label, "key": issue_key(user_id, label)}


# ---------------------------------------------------------------- governance
@app.endpoint("/audit")
def audit(table: Optional[str] = None, record_id: Optional[str] = None, actor: Optional[str] = None,
          action: Optional[str] = None, since: Optional[str] = None, limit: int = 100):
    """The audit trail of this tenant, newest first (admins). The framework scopes it to the request's tenant."""
    require("audit:read")
    if not 1 <= limit <= 1000:
        raise HTTPException(422, "limit: 1 to 1000")
    return {"records": app.audit_log(table=table, record_id=record_id, actor=actor, action=action, since=since,
                                     limit=limit)}


# The seed's "Security & Compliance" block: each call is recorded in the audit trail (who, which
# subject, which request, whether it completed), with no personal value.
@app.compliance("gdpr")
def handle_data_request(user_id, request_type):
    if request_type == "export":
        return app.export_user_data(user_id)
    elif request_type == "delete":
        return app.anonymize_user_data(user_id)


@app.endpoint("/gdpr/users/{user_id}/export")
def gdpr_export(user_id: int):
    """Everything stored about a user of this tenant (their user record, API keys, projects they own)."""
    require("gdpr:export")
    try:
        out = handle_data_request(user_id, "export")
    except NotFoundError:
        raise HTTPException(404, "no such user") from None
    for key in out["data"].get("ApiKey", []):
        key.pop("key_hash", None)  # a credential, not the subject's data
    return out


@app.endpoint("/gdpr/users/{user_id}/anonymize", methods=["POST"])
def gdpr_anonymize(user_id: int):
    """Erase a user: revoke their access (deactivated, keys deleted), then replace every personal value
    (name, email) in their records and in the audit trail. Keys and projects stay; it cannot be undone."""
    require("gdpr:anonymize")
    try:
        with app.transaction():
            app.update("User", user_id, {"active": False})
            app.bulk_delete("ApiKey", {"user_id": user_id})
    except NotFoundError:
        raise HTTPException(404, "no such user") from None
    return handle_data_request(user_id, "delete")


def add_user(tenant: str, role: str, email: str, name: str) -> str:
    """A user of ``tenant`` with an API key (the operator's way to make a tenant's first admin)."""
    if role not in ROLES:
        raise SystemExit(f"role must be one of {', '.join(ROLES)}")
    with app.tenant(tenant), app.actor("cli"), app.transaction():
        user = app.create("User", {"name": name, "email": email, "role": role})
        return issue_key(user["id"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["add-user"]:
        args = sys.argv[2:]
        if not args or len(args) % 4:
            raise SystemExit("usage: app.py add-user TENANT ROLE EMAIL NAME [TENANT ROLE EMAIL NAME ...]")
        for i in range(0, len(args), 4):
            print(add_user(*args[i:i + 4]))
    else:
        app.start()
