# Seed README, Advanced Features: "Schema Management".
# Filled in: the connection string (URL) for "postgresql://...", and a User model to describe.
from _env import URL

from dataflow import DataFlow

# --- the seed's block, as written ---
# DataFlow handles schema automatically
db = DataFlow(URL, auto_migrate=True)

# --- filled in: a model, created by the first instance ---
@db.model
class User:
    id: int
    name: str
    email: str
    active: bool = True

db.migrate()

# --- the seed's block, as written ---
# Or manage schema manually
db = DataFlow(URL, auto_migrate=False, existing_schema_mode=True)

# --- filled in: the same model, declared on the instance that only checks the schema ---
@db.model
class User:
    id: int
    name: str
    email: str
    active: bool = True

# --- the seed's block, as written ---
# Get schema information
models = db.list_models()
model_info = db.get_model_info("User")
generated_nodes = db.get_generated_nodes("User")

print(models, model_info["table"], generated_nodes)
