"""What the seed's fragments leave out: the database URL (DATAFLOW_DATABASE_URL, default SQLite)."""

import os

URL = os.environ.get("DATAFLOW_DATABASE_URL", "sqlite:///app.db")
