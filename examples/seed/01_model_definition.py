# Seed README, Quick Start: "Model Definition and Node Generation".
# Filled in: the connection string (URL, from DATAFLOW_DATABASE_URL) in place of the placeholder.
from _env import URL

from dataflow import DataFlow

# Connect to database
db = DataFlow(URL)
# For development: db = DataFlow("sqlite:///app.db")

# Define your model
@db.model
class User:
    id: int        # Primary key (auto-generated)
    name: str      # Required field
    email: str     # Required field
    active: bool = True  # Optional with default

# DataFlow automatically generates 9 workflow nodes:
# UserCreateNode, UserReadNode, UserUpdateNode, UserDeleteNode,
# UserListNode, UserBulkCreateNode, UserBulkUpdateNode,
# UserBulkDeleteNode, UserBulkUpsertNode
