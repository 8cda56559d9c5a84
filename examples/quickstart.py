"""The Quick Start: declare a model, then create and read a record through generated Kailash nodes.

Runs on the embedded default (a SQLite file ``dataflow.db`` in the working directory) unless
DATAFLOW_DATABASE_URL names another database.
"""

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

db = DataFlow()  # DATAFLOW_DATABASE_URL, else sqlite:///dataflow.db


@db.model
class User:
    id: int
    name: str
    email: str
    active: bool = True


print(f"Database: {db.safe_url}")
print(f"Nodes generated for User: {', '.join(db.get_generated_nodes('User'))}")

workflow = WorkflowBuilder()
workflow.add_node("UserCreateNode", "create_user", {"name": "John Doe", "email": "john@example.com"})
workflow.add_node("UserReadNode", "read_user", {"conditions": {"name": "John Doe"}})
workflow.add_connection("create_user", "id", "read_user", "id")

# enable_monitoring=False: Kailash's default runtime records every node's output in clear text
# under ~/.kailash/tracking/.
with LocalRuntime(enable_monitoring=False) as runtime:
    results, run_id = runtime.execute(workflow.build())

print(f"Created user: {results['create_user']}")
print(f"Found user:   {results['read_user']}")
print(f"Users stored: {db.count('User')}")
db.close()
