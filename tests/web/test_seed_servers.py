"""The seed's Production Examples 1 and 2 (blocks 11 and 12) run as written as real servers, on every backend."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
import signal
from pathlib import Path


from served import Served

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"
SERVED_SEED = ["11_sales_dashboard_server.py", "12_user_management_api.py"]  # tests/test_examples.py skips these


def assert_graceful(app: Served) -> None:
    """SIGTERM, as Kubernetes stops a pod: requests finish, the app's shutdown (closing the pool) runs.
    uvicorn re-raises the signal once it is done, so the exit status is -SIGTERM."""
    assert app.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in app.output()


def test_block_11_sales_dashboard(db_url, tmp_path):
    with Served(SEED / "11_sales_dashboard_server.py", db_url, tmp_path) as app:
        r = app.http.get("/metrics/sales")
        assert r.status_code == 200, r.text
        metrics = r.json()
        assert Decimal(metrics["today"]) == Decimal("150.75")  # every order was created today
        assert [(p["_id"], p["sold"]) for p in metrics["top_products"]] == [(1, 11), (2, 10), (0, 9), (3, 9)]
        assert_graceful(app)


def test_block_12_user_management(db_url, tmp_path):
    acme, beta = {"X-Tenant-ID": "acme"}, {"X-Tenant-ID": "beta"}
    with Served(SEED / "12_user_management_api.py", db_url, tmp_path) as app:
        http = app.http
        ann = http.post("/users", json={"name": "Ann", "email": "ann@acme.test"}, headers=acme)
        assert ann.status_code == 201, ann.text
        ann = ann.json()
        assert ann["tenant_id"] == "acme"  # the middleware's filter, stamped into the new record
        created = datetime.fromisoformat(ann["created_at"])  # the hook's naive utcnow(), stored as UTC
        assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
        bob = http.post("/users", json={"name": "Bob", "email": "bob@beta.test"}, headers=beta).json()
        assert bob["tenant_id"] == "beta"

        # Each tenant sees only its own rows; without the header, only rows with no tenant (none here).
        assert [u["name"] for u in http.get("/users", headers=acme).json()["records"]] == ["Ann"]
        assert [u["name"] for u in http.get("/users", headers=beta).json()["records"]] == ["Bob"]
        assert http.get("/users").json()["total"] == 0
        assert http.get("/users", headers=acme, params={"filter": '{"name": "Bob"}'}).json()["records"] == []

        # Another tenant's row can be neither read, nor changed, nor deleted.
        assert http.get(f"/users/{bob['id']}", headers=acme).status_code == 404
        assert http.patch(f"/users/{bob['id']}", json={"name": "X"}, headers=acme).status_code == 404
        assert http.put(f"/users/{bob['id']}", json={"name": "X", "email": "x"}, headers=acme).status_code == 404
        assert http.delete(f"/users/{bob['id']}", headers=acme).status_code == 404
        assert http.get(f"/users/{bob['id']}", headers=beta).json()["name"] == "Bob"

        # A record claiming another tenant is refused, naming the field.
        r = http.post("/users", json={"name": "Eve", "email": "e", "tenant_id": "beta"}, headers=acme)
        assert r.status_code == 422 and r.json()["field"] == "tenant_id"
        assert "beta" not in r.text

        # The owner can change it; before_update stamps updated_at.
        r = http.patch(f"/users/{ann['id']}", json={"active": False}, headers=acme)
        assert r.status_code == 200, r.text
        assert r.json()["active"] is False and r.json()["updated_at"] >= ann["updated_at"]
        # A PUT that leaves tenant_id out, or a PATCH clearing it, keeps the record in its tenant.
        r = http.put(f"/users/{ann['id']}", json={"name": "Ann", "email": "ann@acme.test"}, headers=acme)
        assert r.status_code == 200 and r.json()["tenant_id"] == "acme", r.text
        assert http.patch(f"/users/{ann['id']}", json={"tenant_id": None}, headers=acme).json()["tenant_id"] == "acme"
        r = http.patch(f"/users/{ann['id']}", json={"tenant_id": "beta"}, headers=acme)
        assert r.status_code == 422 and r.json()["field"] == "tenant_id"
        assert http.delete(f"/users/{ann['id']}", headers=acme).status_code == 204
        assert_graceful(app)


def test_served_blocks_are_listed():
    assert sorted(p.name for p in SEED.glob("*_server.py")) + ["12_user_management_api.py"] == sorted(SERVED_SEED)
