"""What the audit log costs a write: the same bulk update (and bulk create, bulk delete, 1,000 single
creates) with and without ``audit_log``, on a table of N rows; the median of several repeats.
Measures, never asserts.

    python benchmarks/audit.py [--backend postgresql|sqlite|mysql|all] [--rows 10000] [--repeat 5]

Target (issue 10): a bulk update of 10,000 rows on PostgreSQL costs at most 3x the same update without
audit. Each backend uses a database ``dataflow_bench_audit`` on the local server (created when
missing; its tables are dropped first) and ``dataflow_bench_noaudit`` next to it, or temporary SQLite
files; the two run in turns within each repeat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import _create_database, workdir  # noqa: E402

from dataflow import DataFlow  # noqa: E402

SERVERS = {"postgresql": "postgresql://postgres@127.0.0.1:5432/dataflow_bench_audit",
           "mysql": "mysql://root@127.0.0.1:3306/dataflow_bench_audit"}


def url_for(backend: str, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir() / (name + '.db')}"
    url = os.environ.get(f"DATAFLOW_BENCH_{backend.upper()}_URL", SERVERS[backend])
    url = make_url(url).set(database=name).render_as_string(hide_password=False)
    _create_database(backend, url)
    return url


def fresh(url: str, audit: bool) -> DataFlow:
    db = DataFlow(url, audit_log=audit, node_prefix="Audited" if audit else "")
    engine = sa.create_engine(db.engine.url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        for table in ("bench_accounts", "dataflow_audit", "dataflow_migrations"):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()

    @db.model
    class BenchAccount:
        owner: str
        balance: int
        status: str = "open"

    db.migrate()
    return db


def run(backend: str, rows: int, repeat: int) -> dict:
    """Both instances open at once, each on a database of its own, taking turns within every repeat,
    so that whatever else the machine is doing weighs on both alike."""
    dbs = {False: fresh(url_for(backend, "dataflow_bench_noaudit"), False),
           True: fresh(url_for(backend, "dataflow_bench_audit"), True)}
    data = [{"owner": f"owner{i}", "balance": i} for i in range(rows)]
    times = {audit: {"bulk_create": [], "bulk_update": [], "bulk_delete": [], "create x1000": []} for audit in dbs}
    try:
        for r in range(repeat):
            for audit, db in dbs.items():
                t = time.perf_counter()
                for row in data[:1000]:
                    db.create("BenchAccount", row)
                times[audit]["create x1000"].append(time.perf_counter() - t)
                db.bulk_delete("BenchAccount", {"balance": {"$gte": 0}})
            for audit, db in dbs.items():
                t = time.perf_counter()
                db.bulk_create("BenchAccount", data)
                times[audit]["bulk_create"].append(time.perf_counter() - t)
            for audit, db in dbs.items():
                t = time.perf_counter()
                n = db.bulk_update("BenchAccount", {"balance": {"$gte": 0}}, {"status": f"s{r}"})
                times[audit]["bulk_update"].append(time.perf_counter() - t)
                assert n == rows
            for audit, db in dbs.items():
                t = time.perf_counter()
                db.bulk_delete("BenchAccount", {"balance": {"$gte": 0}})
                times[audit]["bulk_delete"].append(time.perf_counter() - t)
        assert len(dbs[True].audit_log(action="bulk_update", limit=None)) == rows * repeat
    finally:
        for db in dbs.values():
            db.close()
    return {audit: {k: statistics.median(v) for k, v in t.items()} for audit, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="postgresql")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    backends = ["sqlite", "postgresql", "mysql"] if a.backend == "all" else a.backend.split(",")
    print(f"audit cost, {a.rows:,} rows, median of {a.repeat}")
    print(f"{'backend':<11} {'operation':<12} {'no audit':>10} {'audit':>10} {'ratio':>7}")
    for backend in backends:
        try:
            res = run(backend, a.rows, a.repeat)
        except Exception as exc:  # a server that does not answer
            print(f"{backend:<11} skipped: {type(exc).__name__}: {exc}")
            continue
        for op in ("bulk_create", "bulk_update", "bulk_delete", "create x1000"):
            off, on = res[False][op], res[True][op]
            print(f"{backend:<11} {op:<12} {off * 1000:>8.1f}ms {on * 1000:>8.1f}ms {on / off:>6.2f}x")


if __name__ == "__main__":
    main()
