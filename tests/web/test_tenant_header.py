"""With multi_tenant on, the request's tenant comes from the tenant header; no header fails closed (403)."""

from __future__ import annotations

from starlette.testclient import TestClient

from dataflow import DataFlow


def test_the_tenant_header_scopes_each_request(db_url):
    with DataFlow(db_url, multi_tenant=True, tenant_header="X-Tenant-ID") as app:
        @app.model
        class Note:
            text: str

        @app.resource("notes")
        class NoteResource:
            pass

        with app.tenant("acme"):
            app.create("Note", text="acme's")
        with app.tenant("globex"):
            app.create("Note", text="globex's")
        with TestClient(app.asgi) as client:
            acme = client.get("/notes", headers={"X-Tenant-ID": "acme"})
            assert acme.status_code == 200
            assert [r["text"] for r in acme.json()["records"]] == ["acme's"]
            made = client.post("/notes", json={"text": "new"}, headers={"X-Tenant-ID": "globex"})
            assert made.status_code == 201 and made.json()["tenant_id"] == "globex"
            refused = client.get("/notes")
            assert refused.status_code == 403 and refused.json()["error"] == "tenant_required"
        with app.tenant("globex"):
            assert sorted(r["text"] for r in app.list("Note")) == ["globex's", "new"]
