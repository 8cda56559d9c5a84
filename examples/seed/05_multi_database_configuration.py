# Seed README, Advanced Features: "Multi-Database Configuration".
# Filled in: the connection string (URL) in place of the placeholder.
from _env import URL

from dataflow import DataFlow

# --- the seed's block, as written ---
# Configure with connection string
db = DataFlow(URL,
             pool_size=20, max_overflow=10)

# Or with explicit configuration
from dataflow.core.config import DataFlowConfig

config = DataFlowConfig(
    database_url=URL,
    pool_size=20,
    max_overflow=10,
    auto_migrate=True,
    existing_schema_mode=False
)
db = DataFlow(config=config)
