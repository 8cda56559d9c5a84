"""examples/user_management started as a real server (one per backend) and driven over HTTP: each role's
calls allowed or refused (403, changing nothing), two tenants with the same emails kept apart, the
audit trail's actors, GDPR export and anonymise, and the credentials (401) and tenant (403) checks."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from served import SRC, Served

APP = Path(__file__).resolve().parents[2] / "examples" / "user_management" / "app.py"
ROLES = ("admin", "editor", "viewer")
#: The seeded people; both tenants have them, with the same emails (names differ per tenant).
PEOPLE = {"editor": "editor@example.com", "viewer": "viewer@example.com", "ada": "ada@example.com",
          "bob": "bob@example.com"}


class Tenant:
    def __init__(self, http, name: str, admin_key: str) -> None:
        self.http, self.name = http, name
        self.keys = {"admin": admin_key}
        self.ids: dict[str, int] = {}
        self.people: dict[str, dict] = {}

    def h(self, role: str = "admin") -> dict:
        return {"Authorization": f"Bearer {self.keys[role]}", "X-Tenant-ID": self.name}

    def post(self, path: str, body=None, role: str = "admin"):
        r = self.http.post(path, json=body, headers=self.h(role))
        assert r.status_code in (200, 201), (path, r.status_code, r.text)
        return r.json()

    def get(self, path: str, role: str = "admin", **params):
        r = self.http.get(path, params=params, headers=self.h(role))
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()


@pytest.fixture(scope="module")
def app(module_url, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("usermgmt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAFLOW_")}
    env.update(DATAFLOW_DATABASE_URL=module_url, PYTHONPATH=str(SRC))
    # The operator makes each tenant's first admin (same email in both tenants): one key per line.
    made = subprocess.run([sys.executable, str(APP), "add-user", "acme", "admin", "admin@example.com", "Acme Admin",
                           "globex", "admin", "admin@example.com", "Globex Admin"],
                          env=env, cwd=cwd, capture_output=True, text=True, check=True).stdout.split()
    assert len(made) == 2 and made[0] != made[1]
    with Served(APP, module_url, cwd) as server:
        tenants = {}
        for name, key in zip(("acme", "globex"), made):
            t = tenants[name] = Tenant(server.http, name, key)
            t.ids["admin"] = t.get("/me")["user"]["id"]
            for who, email in PEOPLE.items():
                person = {"name": f"{who.title()} of {name.title()}", "email": email,
                          "role": who if who in ROLES else "viewer"}
                t.people[who] = person
                t.ids[who] = t.post("/users", person)["id"]
            for role in ("editor", "viewer", "ada"):
                t.keys[role] = t.post(f"/users/{t.ids[role]}/keys")["key"]
            t.ids["project"] = t.post("/projects", {"name": f"{name} roadmap", "owner_id": t.ids["ada"]})["id"]
        server.tenants = tenants
        yield server
    # No key ever reaches the server's output.
    log = server.output()
    assert not [k for t in tenants.values() for k in t.keys.values() if k in log]


# ---------------------------------------------------------------- roles x calls
ALL, EDITORS, ADMINS = set(ROLES), {"admin", "editor"}, {"admin"}
serial = itertools.count()


def fresh_user(t: Tenant) -> int:
    return t.post("/users", {"name": "Target", "email": f"target{next(serial)}@example.com"})["id"]


def fresh_project(t: Tenant) -> int:
    return t.post("/projects", {"name": f"target {next(serial)}"})["id"]


def nothing(t: Tenant) -> None:
    return None


#: (call, roles allowed, target made by an admin first, the call: (tenant, headers, role, target) -> response)
CALLS = [
    ("list users", ALL, nothing, lambda t, h, role, x: t.http.get("/users", headers=h)),
    ("read a user", ALL, nothing, lambda t, h, role, x: t.http.get(f"/users/{t.ids['ada']}", headers=h)),
    ("filter users", ALL, nothing,
     lambda t, h, role, x: t.http.get("/users", params={"filter": '{"role": "viewer"}'}, headers=h)),
    ("list projects", ALL, nothing, lambda t, h, role, x: t.http.get("/projects", headers=h)),
    ("read a project", ALL, nothing,
     lambda t, h, role, x: t.http.get(f"/projects/{t.ids['project']}", headers=h)),
    ("who am I", ALL, nothing, lambda t, h, role, x: t.http.get("/me", headers=h)),
    ("create a project", EDITORS, nothing,
     lambda t, h, role, x: t.http.post("/projects", json={"name": f"{role}'s project"}, headers=h)),
    ("rename a project", EDITORS, fresh_project,
     lambda t, h, role, x: t.http.patch(f"/projects/{x}", json={"name": "renamed"}, headers=h)),
    ("replace a project", EDITORS, fresh_project,
     lambda t, h, role, x: t.http.put(f"/projects/{x}", json={"name": "replaced"}, headers=h)),
    ("delete a project", ADMINS, fresh_project, lambda t, h, role, x: t.http.delete(f"/projects/{x}", headers=h)),
    ("create a user", EDITORS, nothing, lambda t, h, role, x: t.http.post(
        "/users", json={"name": "New", "email": f"{role}-made@example.com"}, headers=h)),
    ("create a user with a role", ADMINS, nothing, lambda t, h, role, x: t.http.post(
        "/users", json={"name": "New", "email": f"{role}-made-editor@example.com", "role": "editor"}, headers=h)),
    ("rename a user", EDITORS, fresh_user,
     lambda t, h, role, x: t.http.patch(f"/users/{x}", json={"name": "Renamed"}, headers=h)),
    ("change a user's role", ADMINS, fresh_user,
     lambda t, h, role, x: t.http.patch(f"/users/{x}", json={"role": "admin"}, headers=h)),
    ("deactivate a user", ADMINS, fresh_user,
     lambda t, h, role, x: t.http.patch(f"/users/{x}", json={"active": False}, headers=h)),
    ("replace a user (PUT sets role and active)", ADMINS, fresh_user, lambda t, h, role, x: t.http.put(
        f"/users/{x}", json={"name": "Put", "email": f"{role}-put@example.com"}, headers=h)),
    ("delete a user", ADMINS, fresh_user, lambda t, h, role, x: t.http.delete(f"/users/{x}", headers=h)),
    ("issue an API key", ADMINS, fresh_user, lambda t, h, role, x: t.http.post(f"/users/{x}/keys", headers=h)),
    ("read the audit trail", ADMINS, nothing, lambda t, h, role, x: t.http.get("/audit", headers=h)),
    ("GDPR export", ADMINS, fresh_user, lambda t, h, role, x: t.http.get(f"/gdpr/users/{x}/export", headers=h)),
    ("GDPR anonymise", ADMINS, fresh_user,
     lambda t, h, role, x: t.http.post(f"/gdpr/users/{x}/anonymize", headers=h)),
]


def newest_change(t: Tenant):
    """The newest record of the tenant's audit trail: every write of the app leaves one, in its transaction,
    so a refused call that changed nothing leaves this as it was."""
    return t.get("/audit", limit=1)["records"]


def test_each_role_may_do_what_its_permissions_say_and_nothing_else(app):
    t = app.tenants["acme"]
    wrong = []
    for (call, allowed, prepare, make), role in itertools.product(CALLS, ROLES):
        target = prepare(t)
        before = newest_change(t) if role not in allowed else None
        r = make(t, t.h(role), role, target)
        if role in allowed:
            ok = r.status_code in (200, 201, 204)
        else:  # refused, and nothing changed (not even the audit trail)
            ok = r.status_code == 403 and r.json()["error"] == "forbidden" and newest_change(t) == before
        if not ok:
            wrong.append((call, role, r.status_code, r.text[:200]))
    assert wrong == []
    names = {p["name"] for p in t.get("/projects", limit=1000)["records"]}
    assert {"admin's project", "editor's project"} <= names and "viewer's project" not in names
    emails = {u["email"] for u in t.get("/users", limit=1000)["records"]}
    assert {"admin-made@example.com", "editor-made@example.com", "admin-made-editor@example.com"} <= emails
    assert not {"viewer-made@example.com", "editor-made-editor@example.com", "viewer-made-editor@example.com",
                "editor-put@example.com"} & emails
    me = t.get("/me", role="viewer")
    assert me["user"]["email"] == PEOPLE["viewer"] and me["permissions"] == ["projects:read", "users:read"]
    r = t.http.post("/users", json={"name": "x", "email": "x@example.com", "role": "root"}, headers=t.h())
    assert r.status_code == 422 and "role must be one of" in r.json()["message"]


# ---------------------------------------------------------------- tenants
def test_two_tenants_with_the_same_emails_never_meet(app):
    acme, globex = app.tenants["acme"], app.tenants["globex"]
    theirs = globex.get("/users", limit=1000)["records"]
    their_project = globex.get(f"/projects/{globex.ids['project']}")
    ours = acme.get("/users", limit=1000)["records"]
    for t, users in ((acme, ours), (globex, theirs)):
        assert {u["tenant_id"] for u in users} == {t.name}
        assert {u["email"] for u in users} >= {PEOPLE["editor"], PEOPLE["viewer"], PEOPLE["bob"],
                                               "admin@example.com"}  # the same emails in both
    assert {u["id"] for u in ours}.isdisjoint(u["id"] for u in theirs)
    h = acme.h()
    other, other_project = globex.ids["ada"], globex.ids["project"]
    # by the other tenant's id: not found, whatever the method
    assert acme.http.get(f"/users/{other}", headers=h).status_code == 404
    assert acme.http.patch(f"/users/{other}", json={"name": "hacked"}, headers=h).status_code == 404
    assert acme.http.put(f"/users/{other}", json={"name": "hacked", "email": "h@example.com"},
                         headers=h).status_code == 404
    assert acme.http.delete(f"/users/{other}", headers=h).status_code == 404
    assert acme.http.get(f"/projects/{other_project}", headers=h).status_code == 404
    assert acme.http.patch(f"/projects/{other_project}", json={"name": "hacked"}, headers=h).status_code == 404
    assert acme.http.delete(f"/projects/{other_project}", headers=h).status_code == 404
    assert acme.http.post(f"/users/{other}/keys", headers=h).status_code == 404
    assert acme.http.get(f"/gdpr/users/{other}/export", headers=h).status_code == 404
    assert acme.http.post(f"/gdpr/users/{other}/anonymize", headers=h).status_code == 404
    # filters naming the other tenant find nothing
    assert acme.get("/users", tenant_id="globex")["records"] == []
    assert acme.get("/users", filter=json.dumps({"tenant_id": "globex"}))["records"] == []
    assert acme.get("/users", filter=json.dumps({"$or": [{"tenant_id": "globex"}, {"id": other}]}))["total"] == 0
    assert acme.get("/projects", tenant_id="globex")["total"] == 0
    # writes naming the other tenant are refused; a record never moves
    r = acme.http.post("/users", json={"name": "x", "email": "x@example.com", "tenant_id": "globex"}, headers=h)
    assert r.status_code == 403 and r.json()["error"] == "tenant_required"
    r = acme.http.patch(f"/users/{acme.ids['bob']}", json={"tenant_id": "globex"}, headers=h)
    assert r.status_code == 403
    # nor can a record of one tenant point at a record of the other
    r = acme.http.post("/projects", json={"name": "x", "owner_id": other}, headers=h)
    assert r.status_code == 422 and r.json()["error"] == "foreign_key", r.text
    r = acme.http.patch(f"/projects/{acme.ids['project']}", json={"owner_id": other}, headers=h)
    assert r.status_code in (409, 422) and r.json()["error"] == "foreign_key", r.text
    # the other tenant's rows are as they were
    assert globex.get("/users", limit=1000)["records"] == theirs
    assert globex.get(f"/projects/{other_project}") == their_project
    # a key works for its own tenant only
    assert acme.http.get("/me", headers={**acme.h(), "X-Tenant-ID": "globex"}).status_code == 401
    assert acme.http.get("/me", headers={**globex.h(), "X-Tenant-ID": "acme"}).status_code == 401
    # each tenant reads its own audit trail only
    for t in (acme, globex):
        assert {r["tenant"] for r in t.get("/audit", limit=1000)["records"]} == {t.name}


# ---------------------------------------------------------------- the audit trail
def test_the_audit_trail_shows_each_write_with_its_actor(app):
    t = app.tenants["globex"]
    made = t.post("/projects", {"name": "audited"}, role="editor")
    r = t.http.patch(f"/projects/{made['id']}", json={"description": "first draft"}, headers=t.h("editor"))
    assert r.status_code == 200
    assert t.http.delete(f"/projects/{made['id']}", headers=t.h()).status_code == 204
    trail = t.get("/audit", table="projects", record_id=str(made["id"]))["records"]
    editor, admin = f"user:{t.ids['editor']}", f"user:{t.ids['admin']}"
    assert [(r["action"], r["actor"], r["tenant"]) for r in trail] == [
        ("delete", admin, "globex"), ("update", editor, "globex"), ("create", editor, "globex")]
    assert trail[0]["before"]["name"] == "audited"
    assert (trail[1]["before"]["description"], trail[1]["after"]["description"]) == (None, "first draft")
    assert trail[2]["after"]["owner_id"] == t.ids["editor"]  # a new project is its maker's
    # the seeded users were made by the operator's command and by the admin
    first = t.get("/audit", table="users", record_id=str(t.ids["admin"]))["records"]
    assert [(r["action"], r["actor"]) for r in first] == [("create", "cli")]
    keys = t.get("/audit", table="api_keys", actor=f"user:{t.ids['admin']}")["records"]
    assert len(keys) == 3 and all("key_hash" not in r["after"] for r in keys)  # excluded from the trail
    assert t.get("/audit", actor=editor, action="delete")["records"] == []
    assert t.http.get("/audit", params={"limit": 0}, headers=t.h()).status_code == 422


# ---------------------------------------------------------------- GDPR
def test_gdpr_export_and_anonymise(app):
    acme, globex = app.tenants["acme"], app.tenants["globex"]
    ada, ada_key = acme.ids["ada"], acme.keys["ada"]
    assert acme.http.get("/me", headers=acme.h("ada")).status_code == 200
    out = acme.get(f"/gdpr/users/{ada}/export")
    assert out["subject"] == {"model": "User", "id": ada}
    assert [(u["id"], u["name"], u["email"]) for u in out["data"]["User"]] == [
        (ada, acme.people["ada"]["name"], PEOPLE["ada"])]
    assert [p["id"] for p in out["data"]["Project"]] == [acme.ids["project"]]  # the project she owns
    assert [k["user_id"] for k in out["data"]["ApiKey"]] == [ada] and "key_hash" not in out["data"]["ApiKey"][0]
    text = json.dumps(out)
    # nothing of anyone else: not the other tenant's Ada (same email), nor acme's other people
    assert globex.people["ada"]["name"] not in text and acme.people["bob"]["name"] not in text
    assert all(r["tenant_id"] == "acme" for rows in out["data"].values() for r in rows)

    done = acme.post(f"/gdpr/users/{ada}/anonymize")
    assert done["anonymized"]["User"] == {"records": 1, "fields": ["name", "email"]}
    after = acme.get(f"/users/{ada}")
    assert acme.people["ada"]["name"] not in json.dumps(after) and after["email"] != PEOPLE["ada"]
    assert after["active"] is False and after["role"] == "viewer"
    assert acme.http.get("/me", headers={"Authorization": f"Bearer {ada_key}", "X-Tenant-ID": "acme"}
                         ).status_code == 401  # her key is gone
    trail = json.dumps(acme.get("/audit", limit=1000)["records"])
    assert acme.people["ada"]["name"] not in trail and PEOPLE["ada"] not in trail
    assert acme.get(f"/projects/{acme.ids['project']}")["owner_id"] == ada  # keys and her projects stay
    requests = acme.get("/audit", action="gdpr_request")["records"]
    assert [(r["record_id"], r["after"]["request_type"], r["after"]["outcome"]) for r in requests[:2]] == [
        (str(ada), "delete", "completed"), (str(ada), "export", "completed")]
    assert requests[0]["actor"] == f"user:{acme.ids['admin']}"
    # the other tenant's Ada, same email, is untouched
    theirs = globex.get(f"/users/{globex.ids['ada']}")
    assert (theirs["name"], theirs["email"], theirs["active"]) == (globex.people["ada"]["name"], PEOPLE["ada"], True)
    assert globex.http.get("/me", headers=globex.h("ada")).status_code == 200
    assert PEOPLE["ada"] in json.dumps(globex.get("/audit", limit=1000)["records"])


# ---------------------------------------------------------------- credentials
def test_credentials_and_tenant(app):
    t = app.tenants["acme"]
    http, key = t.http, t.keys["viewer"]
    assert http.get("/health").status_code == 200  # open
    for headers in ({}, {"X-Tenant-ID": "acme"}, {"Authorization": "Bearer", "X-Tenant-ID": "acme"},
                    {"Authorization": f"Basic {key}", "X-Tenant-ID": "acme"},
                    {"Authorization": "Bearer umk_wrong", "X-Tenant-ID": "acme"},
                    {"Authorization": f"Bearer {key}x", "X-Tenant-ID": "acme"},
                    {"Authorization": f"Bearer {key}", "X-Tenant-ID": "initech"}):
        r = http.get("/users", headers=headers)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", headers
        assert r.headers["www-authenticate"] == "Bearer"
    r = http.get("/users", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403 and r.json()["error"] == "tenant_required"
    # a deactivated user's key stops working; reactivated, it works again
    bob = t.ids["bob"]
    made = http.post(f"/users/{bob}/keys", params={"label": "laptop"}, headers=t.h())
    assert made.status_code == 201 and made.json()["label"] == "laptop"
    bob_key = made.json()["key"]
    bob_h = {"Authorization": f"Bearer {bob_key}", "X-Tenant-ID": "acme"}
    assert http.get("/me", headers=bob_h).json()["user"]["id"] == bob
    assert http.patch(f"/users/{bob}", json={"active": False}, headers=t.h()).status_code == 200
    assert http.get("/me", headers=bob_h).status_code == 401
    assert http.patch(f"/users/{bob}", json={"active": True}, headers=t.h()).status_code == 200
    assert http.get("/me", headers=bob_h).status_code == 200
