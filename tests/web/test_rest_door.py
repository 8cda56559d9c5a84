"""The REST door reaches the policies like every other: writes are audited, cached reads go stale, timed."""

from __future__ import annotations

from starlette.testclient import TestClient

from dataflow import DataFlow


def test_rest_writes_are_audited_invalidate_the_cache_and_are_timed(db_url):
    with DataFlow(db_url, audit_log=True) as app:
        @app.model
        class Ticket:
            title: str
            status: str = "open"

        @app.resource("tickets")
        class TicketResource:
            pass

        with TestClient(app.asgi) as client:
            assert app.list("Ticket", cache=True) == []          # cached while the table is empty
            made = client.post("/tickets", json={"title": "printer"})
            assert made.status_code == 201
            key = made.json()["id"]
            assert [t["title"] for t in app.list("Ticket", cache=True)] == ["printer"]  # the POST made it stale
            assert client.patch(f"/tickets/{key}", json={"status": "closed"}).status_code == 200
            assert app.list("Ticket", cache=True)[0]["status"] == "closed"
            assert client.delete(f"/tickets/{key}").status_code == 204
            assert app.list("Ticket", cache=True) == []
        trail = app.audit_log(table="tickets")
        assert [(r["action"], r["record_id"]) for r in trail] == [
            ("delete", str(key)), ("update", str(key)), ("create", str(key))]
        assert trail[1]["before"]["status"] == "open" and trail[1]["after"]["status"] == "closed"
        timed = app.metrics.to_dict()
        assert all(timed[f"Ticket.{action}"]["count"] >= 1 for action in ("create", "update", "delete"))
