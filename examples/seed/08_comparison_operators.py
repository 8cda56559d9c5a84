# Seed README, MongoDB-Style Query Builder: "Comparison Operators".
# Filled in: the User model (age, name, department, status) and users, the workflow and runtime.
from _env import URL
from _models import declare_users

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

app = DataFlow(URL)
User = declare_users(app)
workflow = WorkflowBuilder()

# --- the seed's block, as written ---
# Build complex queries with MongoDB-style operators
query = User.query_builder()
query.filter({
    "age": {"$gt": 18, "$lt": 65},           # age > 18 AND age < 65
    "name": {"$regex": "^John"},             # name LIKE 'John%'
    "department": {"$in": ["eng", "sales"]}, # department IN ('eng', 'sales')
    "status": {"$ne": "inactive"}            # status != 'inactive'
})

# Use in workflow
workflow.add_node("UserListNode", "filtered_users", query.to_params())

# --- filled in: run it ---
with LocalRuntime(enable_monitoring=False) as runtime:
    results, run_id = runtime.execute(workflow.build())
users = results["filtered_users"]
