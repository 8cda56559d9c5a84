# Seed README, Advanced Features: "Model Relationships".
# Filled in: the database, and a runtime to execute the workflow.
from _env import URL

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow

db = DataFlow(URL)

# --- the seed's block, as written ---
# Define related models
@db.model
class User:
    id: int
    name: str
    email: str

@db.model
class Post:
    id: int
    title: str
    content: str
    author_id: int  # Foreign key to User

# Use in workflows with proper relationships
workflow = WorkflowBuilder()
workflow.add_node("UserCreateNode", "create_author", {
    "name": "John Doe", "email": "john@example.com"
})
workflow.add_node("PostCreateNode", "create_post", {
    "title": "My First Post",
    "content": "Hello World!",
    "author_id": 1  # References created user
})

# --- filled in: run it ---
with LocalRuntime(enable_monitoring=False) as runtime:
    results, run_id = runtime.execute(workflow.build())
print(results["create_author"], results["create_post"])
