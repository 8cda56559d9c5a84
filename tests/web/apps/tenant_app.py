"""The app the middleware tests serve: a tenant filter seen by every door of a request."""

from typing import Optional

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

app = DataFlow()


@app.model
class Note:
    text: str
    tenant_id: Optional[str] = None


@app.model
class Setting:  # no tenant_id: under the tenant middleware, it fails closed
    key: str


@app.middleware("tenant_isolation")
def add_tenant_filter(query, request):
    query.where({"tenant_id": request.headers.get("X-Tenant-ID")})


@app.resource("notes")
class NoteResource:
    pass


@app.resource("settings")
class SettingResource:
    pass


@app.endpoint("/via-query")
def via_query():
    return {"texts": [n["text"] for n in app.query("notes").sort({"id": 1}).all()],
            "count": app.query("notes").count(),
            "sum": app.query("notes").aggregate([{"$group": {"_id": None, "n": {"$sum": 1}}}])}


@app.endpoint("/via-direct", methods=["POST"])
def via_direct(text: str):
    changed = app.bulk_update("Note", {"text": text}, {"text": text + "!"})
    return {"changed": changed, "listed": [n["text"] for n in app.list("Note")]}


@app.endpoint("/via-node")
def via_node():
    workflow = WorkflowBuilder()
    workflow.add_node("NoteListNode", "notes", {"filter": {}})
    with LocalRuntime(enable_monitoring=False) as runtime:
        results, _ = runtime.execute(workflow.build())
    return {"texts": [n["text"] for n in results["notes"]["records"]]}


app.start()
