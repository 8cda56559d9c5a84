"""What multi-tenancy costs per operation on PostgreSQL: no tenancy, the tenant condition alone
(tenant_rls=False), and the condition plus row-level security (the default).

Run as an ordinary role (superusers skip row-level security, so it would cost nothing to measure):
    PYTHONPATH=src python benchmarks/tenancy.py [admin URL, default postgresql://postgres@127.0.0.1:5432/postgres]
It makes a scratch database and role, and drops both. Prints microseconds per operation (median of 5 runs).
"""

from __future__ import annotations

import sys
import time
import uuid

import sqlalchemy as sa

from dataflow import DataFlow

N = 200


def setup(admin_url: str) -> tuple[sa.Engine, str, str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    name = f"df_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
        conn.exec_driver_sql(f"CREATE DATABASE {name} OWNER {name}")
    url = sa.make_url(admin_url).set(username=name, database=name).render_as_string(hide_password=False)
    return admin, name, url


OPS = {
    "read by id": lambda db, i: db.read("Item", 1 + i % 1000),
    "list 10": lambda db, i: db.list("Item", {"n": {"$gte": i % 900}}, limit=10),
    "count": lambda db, i: db.count("Item", {"n": {"$lt": i % 1000}}),
    "create": lambda db, i: db.create("Item", label="x", n=i),
    "update by id": lambda db, i: db.update("Item", 1 + i % 1000, {"n": i}),
}


def instance(url: str, table: str, **settings) -> DataFlow:
    db = DataFlow(url, node_prefix=table.title().replace("_", ""), **settings)

    @db.model
    class Item:
        label: str
        n: int = 0
        __dataflow__ = {"table": table}  # a table of its own per configuration

    with db.tenant("acme"):
        db.bulk_create("Item", [{"label": f"i{i}", "n": i} for i in range(1000)])
    return db


def main() -> None:
    admin_url = sys.argv[1] if len(sys.argv) > 1 else "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    admin, name, url = setup(admin_url)
    try:
        dbs = {"no tenancy": instance(url, "items_plain"),
               "tenant condition": instance(url, "items_condition", multi_tenant=True, tenant_rls=False),
               "condition + RLS": instance(url, "items_rls", multi_tenant=True)}
        # Configurations interleaved, best of 7 rounds: the machine is shared, the minimum is the least disturbed.
        best: dict[str, dict[str, float]] = {k: {} for k in dbs}
        with dbs["no tenancy"].tenant("acme"):
            for op, fn in {**OPS, "bulk create 1000 (per row)": None}.items():
                for _ in range(7):
                    for k, db in dbs.items():
                        if fn is None:
                            rows = [{"label": "b", "n": j} for j in range(1000)]
                            start = time.perf_counter()
                            db.bulk_create("Item", rows)
                            us = (time.perf_counter() - start) / 1000 * 1e6
                        else:
                            start = time.perf_counter()
                            for i in range(N):
                                fn(db, i)
                            us = (time.perf_counter() - start) / N * 1e6
                        best[k][op] = min(best[k].get(op, float("inf")), us)
        for db in dbs.values():
            db.close()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
            conn.exec_driver_sql(f"DROP ROLE {name}")
    print(f"{'operation (us/op, best of 7)':30}" + "".join(f"{k:>18}" for k in best))
    for op in best["no tenancy"]:
        print(f"{op:30}" + "".join(f"{best[k][op]:18.1f}" for k in best))


if __name__ == "__main__":
    main()
