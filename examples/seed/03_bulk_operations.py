# Seed README, Quick Start: "Bulk Operations".
# Filled in: the database, the User model, and the workflow and runtime of the block before.
from _env import URL

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

db = DataFlow(URL)


@db.model
class User:
    id: int
    name: str
    email: str
    active: bool = True


workflow = WorkflowBuilder()
runtime = LocalRuntime()

# --- the seed's block, as written ---
# Bulk create multiple users
workflow.add_node("UserBulkCreateNode", "bulk_create", {
    "data": [
        {"name": "Alice Smith", "email": "alice@example.com"},
        {"name": "Bob Jones", "email": "bob@example.com"},
        {"name": "Carol White", "email": "carol@example.com"}
    ]
})

# Bulk update with conditions
workflow.add_node("UserBulkUpdateNode", "bulk_update", {
    "conditions": {"active": False},
    "data": {"active": True}
})

# Execute bulk operations
results, run_id = runtime.execute(workflow.build())
print(f"Bulk created: {results['bulk_create']}")
