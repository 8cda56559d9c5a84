"""Every REST route with good and bad input, against a real server on each backend (one per module)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from served import Served

APP = Path(__file__).resolve().parent / "apps" / "rest_app.py"


@pytest.fixture(scope="module")
def http(module_url, tmp_path_factory):
    with Served(APP, module_url, tmp_path_factory.mktemp("rest")) as app:
        yield app.http


def make(http, **fields):
    r = http.post("/users", json={"name": "N", "email": f"{fields.get('name', 'n')}@x.test", **fields})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_read_and_types(http):
    r = http.post("/users", json={"name": "  Ann ", "email": "ann@x.test", "age": 30, "score": "12.5",
                                  "birthday": "1990-05-01", "tags": ["a", "b"]})
    assert r.status_code == 201, r.text
    ann = r.json()
    assert r.headers["location"] == f"/users/{ann['id']}"
    assert ann["name"] == "Ann"  # before_create ran
    assert (ann["active"], ann["age"], ann["birthday"], ann["tags"]) == (True, 30, "1990-05-01", ["a", "b"])
    assert ann["score"].startswith("12.5")  # Decimal as a string, exact
    assert datetime.fromisoformat(ann["created_at"]).utcoffset().total_seconds() == 0
    got = http.get(f"/users/{ann['id']}")
    assert got.status_code == 200 and got.json() == ann
    assert got.headers["x-request-id"]


def test_bad_input_is_422_naming_the_field_never_the_value(http):
    cases = [
        ({"email": "x@y"}, "name"),                                   # missing required field
        ({"name": "a", "email": "b", "nope": 1}, "nope"),             # unknown field
        ({"name": "a", "email": "b", "age": "SECRET-VALUE"}, "age"),  # wrong type
        ({"name": "a", "email": "SECRET-VALUE" * 30}, "email"),       # too long
        ({"name": "a", "email": "b", "birthday": "SECRET-VALUE"}, "birthday"),
        ({"name": None, "email": "b"}, "name"),                       # null for a field that cannot be null
    ]
    for body, field in cases:
        r = http.post("/users", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.text and "SECRET-VALUE" not in r.text
    assert http.post("/users", content=b"not json", headers={"content-type": "application/json"}).status_code == 422
    assert http.post("/users", json=[1, 2]).status_code == 422


def test_duplicate_is_409_and_fk_is_422_on_create_409_on_delete(http):
    u = make(http, name="dup", email="dup@x.test")
    r = http.post("/users", json={"name": "other", "email": "dup@x.test"})
    assert r.status_code == 409 and r.json()["error"] == "duplicate_key" and "dup@x.test" not in r.text
    r = http.post("/posts", json={"title": "t", "user_id": 999999})
    assert r.status_code == 422 and r.json()["field"] == "user_id"
    post = http.post("/posts", json={"title": "t", "user_id": u["id"]})
    assert post.status_code == 201
    r = http.delete(f"/users/{u['id']}")
    assert r.status_code == 409 and r.json()["error"] == "foreign_key"


def test_patch_put_delete(http):
    u = make(http, name="pp", email="pp@x.test", age=5, tags=["t"])
    r = http.patch(f"/users/{u['id']}", json={"age": 6})
    assert r.status_code == 200 and r.json()["age"] == 6 and r.json()["tags"] == ["t"]
    assert r.json()["updated_at"] >= u["updated_at"]
    r = http.put(f"/users/{u['id']}", json={"name": "pp2", "email": "pp@x.test"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["age"], r.json()["tags"], r.json()["active"]) == ("pp2", None, [], True)
    assert http.put(f"/users/{u['id']}", json={"name": "x"}).status_code == 422  # PUT needs the whole record
    assert http.patch(f"/users/{u['id']}", json={"age": "x"}).status_code == 422
    assert http.patch(f"/users/{u['id']}", json={"id": 5}).status_code == 422
    assert http.delete(f"/users/{u['id']}").status_code == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        body = {"name": "x", "email": "y"} if method in ("PATCH", "PUT") else None
        r = http.request(method, f"/users/{u['id']}", json=body)
        assert r.status_code == 404 and r.json()["error"] == "not_found", (method, r.text)
    assert http.get("/users/not-a-number").status_code == 404  # {id:int}: not a path of this API
    assert http.get(f"/users/{2**70}").status_code == 422


def test_hook_may_refuse(http):
    root = make(http, name="root", email="root@x.test")
    r = http.delete(f"/users/{root['id']}")
    assert r.status_code == 403 and r.json()["message"] == "root cannot be deleted"
    assert http.get(f"/users/{root['id']}").status_code == 200
    admin = make(http, name="admin", email="admin@x.test")
    r = http.delete(f"/users/{admin['id']}")
    assert r.status_code == 403 and (r.json()["error"], r.json()["message"]) == ("forbidden", "admin cannot be deleted")
    assert http.get(f"/users/{admin['id']}").status_code == 200


def test_read_hooks_narrow_lists_and_refuse_reads(http):
    u = make(http, name="poster", email="poster@x.test")
    ids = {t: http.post("/posts", json={"title": t, "user_id": u["id"]}).json()["id"] for t in ("draft", "pub", "secret")}
    page = http.get("/posts", params={"user_id": u["id"]}).json()
    assert sorted(p["title"] for p in page["records"]) == ["pub", "secret"] and page["total"] == 2
    assert http.get("/posts", params={"title": "draft"}).json()["records"] == []
    r = http.get(f"/posts/{ids['secret']}")
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert http.get(f"/posts/{ids['pub']}").json()["title"] == "pub"


def test_versioned_update_conflict_is_409(http):
    d = http.post("/documents", json={"body": "v1"}).json()
    assert d["version"] == 1
    assert http.patch(f"/documents/{d['id']}", json={"body": "v2", "version": 1}).json()["version"] == 2
    r = http.patch(f"/documents/{d['id']}", json={"body": "v3", "version": 1})
    assert r.status_code == 409 and r.json()["error"] == "conflict"


def test_bulk_create(http):
    r = http.post("/users/bulk", json=[{"name": f" b{i} ", "email": f"b{i}@bulk.test", "age": 40 + i} for i in range(3)])
    assert r.status_code == 201, r.text
    assert r.json()["created"] == 3 and [u["name"] for u in r.json()["records"]] == ["b0", "b1", "b2"]
    r = http.post("/users/bulk", json=[{"name": "c", "email": "c@bulk.test"}, {"name": "d", "email": "c@bulk.test"}])
    assert r.status_code == 409  # all or nothing
    assert http.get("/users", params={"email": "c@bulk.test"}).json()["total"] == 0
    assert http.post("/users/bulk", json={"name": "x"}).status_code == 422


def test_list_filters_sort_paging(http):
    for i, (name, active) in enumerate([("la", True), ("lb", False), ("lc", True), ("ld", True)]):
        make(http, name=name, email=f"{name}@list.test", age=100 + i, active=active)
    listed = {"filter": '{"email": {"$regex": "@list\\\\.test$"}}'}
    r = http.get("/users", params={**listed, "active": "true", "sort": "-age"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [u["name"] for u in page["records"]] == ["ld", "lc", "la"]
    assert (page["total"], page["count"], page["has_more"], page["next"]) == (3, 3, False, None)
    page = http.get("/users", params={**listed, "sort": "-active,name", "limit": 2}).json()
    assert [u["name"] for u in page["records"]] == ["la", "lc"] and page["total"] == 4 and page["has_more"]
    nxt = http.get(page["next"]).json()
    assert [u["name"] for u in nxt["records"]] == ["ld", "lb"] and nxt["prev"] and not nxt["has_more"]
    assert http.get("/users", params={"age": 101}).json()["records"][0]["name"] == "lb"
    assert http.get("/users", params={**listed, "offset": 10}).json()["total"] == 4


@pytest.mark.parametrize("params, path", [
    ({"filter": "{not json"}, "filter"),
    ({"filter": "[1]"}, "filter"),
    ({"filter": '{"age": {"$bogus": 1}}'}, "filter.age.$bogus"),
    ({"filter": '{"nofield": 1}'}, "nofield"),
    ({"sort": "nofield"}, "sort"),
    ({"age": "old"}, "age"),
    ({"limit": 1001}, "limit"),
    ({"limit": -1}, "limit"),
    ({"offset": -1}, "offset"),
])
def test_list_bad_input_is_422(http, params, path):
    r = http.get("/users", params=params)
    assert r.status_code == 422, r.text
    assert path in r.text


def test_endpoints(http):
    r = http.get("/orders/7", params={"verbose": "true"})
    assert r.json() == {"order_id": 7, "verbose": True, "total": "1.10"}
    assert http.get("/orders/x").status_code == 422
    assert http.post("/echo", json={"a": [1, 2]}).json() == {"got": {"a": [1, 2]}}
    r = http.get("/whoami", headers={"X-Request-ID": "req-42"})
    assert r.json() == {"request_id": "req-42", "path": "/whoami"} and r.headers["x-request-id"] == "req-42"
    r = http.get("/boom")
    assert r.status_code == 500 and "secret" not in r.text and r.json()["error"] == "internal_error"
    assert http.get("/nowhere").status_code == 404
    assert http.delete("/orders/7").status_code == 405


def test_health_ready_and_openapi(http):
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json()["status"] == "ready"
    spec = http.get("/openapi.json").json()
    create = spec["components"]["schemas"]["UserCreate"]
    assert create["required"] == ["name", "email"]
    assert create["properties"]["active"] == {"type": "boolean", "title": "Active", "default": True}
    assert create["properties"]["email"]["maxLength"] == 100
    assert create["additionalProperties"] is False
    assert {"/users", "/users/{id}", "/users/bulk", "/orders/{order_id}"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/users"]["get"]["parameters"]}
    assert {"name", "active", "age", "filter", "sort", "limit", "offset"} <= params
    html = http.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert http.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_reflected_table_is_served_read_only(http):
    page = http.get("/legacy_items", params={"sort": "-id"}).json()
    assert [(r["id"], r["label"]) for r in page["records"]] == [(2, "two"), (1, "one")]
    assert http.get("/legacy_items", params={"label": "one"}).json()["total"] == 1
    assert http.get("/legacy_items/2").json() == {"id": 2, "label": "two"}
    assert http.get("/legacy_items/3").status_code == 404
    assert http.post("/legacy_items", json={"id": 3, "label": "x"}).status_code == 405
    assert http.delete("/legacy_items/1").status_code == 405
