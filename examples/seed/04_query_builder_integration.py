# Seed README, Quick Start: "Query Builder Integration".
# Filled in: the User model (with age and department) and some users, the workflow and runtime.
from _env import URL
from _models import declare_users

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

app = DataFlow(URL)
User = declare_users(app)
workflow = WorkflowBuilder()
runtime = LocalRuntime(enable_monitoring=False)

# --- the seed's block, as written ---
# Use MongoDB-style query builder
query = User.query_builder()
query.filter({"age": {"$gt": 18}})
query.filter({"department": {"$in": ["engineering", "sales"]}})
query.sort({"created_at": -1})
query.limit(10)

# Convert to workflow node
workflow.add_node("UserListNode", "filtered_users", query.to_params())

results, run_id = runtime.execute(workflow.build())
users = results["filtered_users"]
