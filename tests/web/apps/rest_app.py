"""The app the REST tests serve: models of every field kind, a foreign key, a versioned model, hooks."""

from datetime import date
from decimal import Decimal
from typing import Annotated, Optional

from fastapi import HTTPException

from dataflow import DataFlow, ForbiddenError
from dataflow.models import Field
from dataflow.operations.context import current

app = DataFlow()


@app.model
class User:
    name: str
    email: Annotated[str, Field(unique=True, max_length=100)]
    active: bool = True
    age: Optional[int] = None
    score: Optional[Decimal] = None
    birthday: Optional[date] = None
    tags: list = []


@app.model
class Post:
    title: str
    user_id: Annotated[int, Field(references="User")]


@app.model
class Doc:
    __dataflow__ = {"versioned": True}
    body: str


@app.resource("users")
class UserResource:
    def before_create(self, data):
        data["name"] = data["name"].strip()
        return data

    def before_delete(self, id):
        found = app.read("User", id, raise_on_not_found=False, fields=["name"])
        if found == {"name": "root"}:
            raise HTTPException(403, "root cannot be deleted")
        if found == {"name": "admin"}:
            raise ForbiddenError("admin cannot be deleted")


@app.resource("posts")
class PostResource:
    def before_list(self, filter):  # drafts are never listed
        not_draft = {"title": {"$ne": "draft"}}
        return {"$and": [filter, not_draft]} if filter else not_draft

    def before_read(self, id):
        if app.read("Post", id, raise_on_not_found=False, fields=["title"]) == {"title": "secret"}:
            raise ForbiddenError("this post is not for you")


@app.resource("docs", path="/documents")
class DocResource:
    pass


@app.endpoint("/orders/{order_id}")
def order(order_id: int, verbose: bool = False):
    return {"order_id": order_id, "verbose": verbose, "total": Decimal("1.10")}


@app.endpoint("/echo", methods=["POST"])
async def echo(payload: dict):
    return {"got": payload}


@app.endpoint("/whoami")
def whoami():
    ctx = current()  # set by the web layer, seen in the thread pool
    return {"request_id": ctx.request_id, "path": ctx.request.url.path if ctx.request else None}


@app.endpoint("/boom")
def boom():
    raise RuntimeError("secret detail that must not leak")


# A table no model declares: served read-only through reflection.
app.migrate()
with app.engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS legacy_items (id INTEGER PRIMARY KEY, label VARCHAR(50))")
    if not conn.exec_driver_sql("SELECT count(*) FROM legacy_items").scalar():
        conn.exec_driver_sql("INSERT INTO legacy_items (id, label) VALUES (1, 'one'), (2, 'two')")


@app.resource("legacy_items")
class LegacyResource:
    pass


app.start()
