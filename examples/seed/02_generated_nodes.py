# Seed README, Quick Start: "Using Generated Nodes in Workflows".
# Filled in: the database and the User model of the block before.
from _env import URL

from dataflow import DataFlow

db = DataFlow(URL)


@db.model
class User:
    id: int
    name: str
    email: str
    active: bool = True


# --- the seed's block, as written ---
from kailash.workflow.builder import WorkflowBuilder
from kailash.runtime.local import LocalRuntime

# Create workflow using generated nodes
workflow = WorkflowBuilder()

# Create a user
workflow.add_node("UserCreateNode", "create_user", {
    "name": "John Doe",
    "email": "john@example.com"
})

# Read the user
workflow.add_node("UserReadNode", "read_user", {
    "conditions": {"name": "John Doe"}
})

# Execute the workflow
runtime = LocalRuntime()
results, run_id = runtime.execute(workflow.build())

print(f"Created user: {results['create_user']}")
print(f"Found user: {results['read_user']}")
