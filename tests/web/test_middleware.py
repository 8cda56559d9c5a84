"""@app.middleware narrows every door a request can use: REST, app.query, the direct API, nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from served import Served

APP = Path(__file__).resolve().parent / "apps" / "tenant_app.py"


A, B = {"X-Tenant-ID": "a"}, {"X-Tenant-ID": "b"}


@pytest.fixture(scope="module")
def http(module_url, tmp_path_factory):
    with Served(APP, module_url, tmp_path_factory.mktemp("tenant")) as app:
        for text, who in (("a1", A), ("a2", A), ("b1", B)):
            assert app.http.post("/notes", json={"text": text}, headers=who).status_code == 201
        yield app.http


def test_every_door_is_narrowed(http):
    assert http.get("/via-query", headers=A).json() == {"texts": ["a1", "a2"], "count": 2, "sum": [{"_id": None, "n": 2}]}
    assert http.get("/via-query", headers=B).json()["texts"] == ["b1"]
    assert http.get("/via-node", headers=B).json() == {"texts": ["b1"]}
    r = http.post("/via-direct", params={"text": "b1"}, headers=A).json()
    assert r == {"changed": 0, "listed": ["a1", "a2"]}  # tenant a cannot change b's row, even by filter
    assert http.get("/notes", headers=B).json()["records"][0]["text"] == "b1"


def test_a_model_without_the_field_fails_closed(http):
    r = http.get("/settings", headers=A)
    assert r.status_code == 422
    assert "tenant_isolation" in r.json()["message"] and r.json()["field"] == "tenant_id"
    assert http.post("/settings", json={"key": "k"}, headers=A).status_code == 422
