"""One app process starting up: migrate the shared models, print the outcome as JSON.

Run by test_concurrent_start.py as ``python concurrent_app.py URL START_AT HOLD``: every process
sleeps until START_AT (so they start at the same moment), and the one that migrates holds the lock
HOLD seconds before its DDL (so the others, which saw the tables missing, really wait for it). The
JSON says whether the tables were missing when the process started.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import sqlalchemy as sa

from dataflow import Field
from dataflow.core.config import DataFlowConfig
from dataflow.core.engine import create_engine
from dataflow.models import spec_from_class
from dataflow.schema.migrate import Migrator
from dataflow.schema.tables import build_table


class Customer:
    name: str
    email: Annotated[str, Field(unique=True)]


class Order:
    total: float = 0.0
    note: Optional[str] = None
    customer_id: Annotated[int, Field(references="Customer")]


def main() -> int:
    url, start_at, hold = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    specs = {cls.__name__: spec_from_class(cls) for cls in (Customer, Order)}
    metadata = sa.MetaData()
    for spec in specs.values():
        build_table(spec, metadata, specs.__getitem__)
    engine = create_engine(DataFlowConfig(database_url=url))
    execute = Migrator._execute

    def slow_execute(self, *args, **kw):  # runs under the lock, before the DDL
        time.sleep(hold)
        return execute(self, *args, **kw)

    Migrator._execute = slow_execute
    time.sleep(max(0.0, start_at - time.time()))
    with engine.connect() as conn:  # what this process saw as it started
        missing = not sa.inspect(conn).has_table("orders")
    try:
        plan = Migrator(engine, metadata, specs, lock_timeout=30).apply()
        out = {"applied": plan.applied, "operations": len(plan.operations), "error": None}
    except Exception as exc:  # reported to the test, which shows it
        out = {"applied": False, "operations": 0, "error": f"{type(exc).__name__}: {exc}"}
    out["missing_at_start"] = missing
    engine.dispose()
    print(json.dumps(out))
    return 0 if out["error"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
