"""What the audit log costs a write: the same bulk update (and bulk create, bulk delete, 1,000 single
creates) with and without ``audit_log``, on a table of N rows; medians of several repeats.
Measures, never asserts.

    python benchmarks/audit.py [--backend postgresql|sqlite|mysql|all] [--rows 10000] [--repeat 7]
                               [--ops bulk_update,bulk_create,bulk_delete,create] [--database-prefix NAME]

Target (issue 10): a bulk update of 10,000 rows on PostgreSQL costs at most 3x the same update without
audit. Each backend uses a database ``<prefix>_audit`` on the local server (created when missing; its
tables are dropped first) and ``<prefix>_noaudit`` next to it (prefix ``dataflow_bench``), or temporary
SQLite files. Both instances are open at once and take turns within every repeat (which goes first
alternates), so whatever else the machine is doing weighs on both alike; one untimed round warms both up.

Per operation it prints the median wall-clock time of each side, the ratio of the medians, and the
median of the per-repeat ratios (audit / no audit of the same repeat) with their range: on a shared
machine the range says how noisy the run was. Next to it, the median CPU time of each side and their
ratio (this process plus, on PostgreSQL, the server processes of the instance's connections; SQLite
runs in this process; not shown for MySQL): waiting for a CPU is left out, so other work on the
machine moves it far less than the wall clock. The load average before and after the run is printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import _create_database, workdir  # noqa: E402

from dataflow import DataFlow  # noqa: E402

SERVERS = {"postgresql": "postgresql://postgres@127.0.0.1:5432/dataflow_bench_audit",
           "mysql": "mysql://root@127.0.0.1:3306/dataflow_bench_audit"}
OPS = ("bulk_update", "bulk_create", "bulk_delete", "create")
LABELS = {"create": "create x1000"}
TARGET = ("postgresql", "bulk_update", 3.0)


def url_for(backend: str, name: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{workdir() / (name + '.db')}"
    url = os.environ.get(f"DATAFLOW_BENCH_{backend.upper()}_URL", SERVERS[backend])
    url = make_url(url).set(database=name).render_as_string(hide_password=False)
    _create_database(backend, url)
    return url


class CpuClock:
    """CPU seconds spent on an operation: this process's, plus (PostgreSQL on this machine) those of the
    server processes serving the instance's connections, read from ``/proc/<pid>/schedstat``. Unlike the
    wall clock it does not count waiting for a CPU, so other work on a shared machine moves it far less;
    it leaves out what the server does in other processes (WAL writer, fsync at commit)."""

    def __init__(self, db: DataFlow) -> None:
        self.pids: set[int] = set()
        if db.backend == "postgresql" and Path("/proc/self/schedstat").exists():
            sa.event.listen(db.engine, "connect", self._connected)

    def _connected(self, dbapi_conn, record) -> None:
        pid = getattr(getattr(dbapi_conn, "info", None), "backend_pid", None)
        if pid and Path(f"/proc/{pid}/schedstat").exists():  # a server on this machine
            self.pids.add(pid)

    def now(self) -> float:
        total = time.process_time()
        for pid in list(self.pids):
            try:
                with open(f"/proc/{pid}/schedstat") as f:
                    total += int(f.read().split()[0]) / 1e9
            except OSError:  # the connection was closed
                self.pids.discard(pid)
        return total


def fresh(url: str, audit: bool) -> DataFlow:
    db = DataFlow(url, audit_log=audit, node_prefix="Audited" if audit else "")
    db.cpu_clock = CpuClock(db)  # type: ignore[attr-defined]
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


def settle(db: DataFlow) -> None:
    """PostgreSQL: vacuum the freshly loaded table (untimed), so both sides update the same physical
    state and autovacuum does not pick one side's timing to clean up the previous repeat's rows."""
    if db.backend == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE bench_accounts")


def timed(db: DataFlow, fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn()``."""
    gc.collect()
    clock = db.cpu_clock  # type: ignore[attr-defined]
    c, t = clock.now(), time.perf_counter()
    fn()
    return time.perf_counter() - t, clock.now() - c


def run(backend: str, rows: int, repeat: int, ops: tuple[str, ...], prefix: str) -> dict:
    """Per side (False: no audit, True: audit), per operation, (wall, CPU) seconds of every repeat."""
    dbs = {False: fresh(url_for(backend, f"{prefix}_noaudit"), False),
           True: fresh(url_for(backend, f"{prefix}_audit"), True)}
    data = [{"owner": f"owner{i}", "balance": i} for i in range(rows)]
    everything = {"balance": {"$gte": 0}}
    times: dict = {audit: {op: [] for op in ops} for audit in dbs}
    updates = 0
    try:
        for r in range(-1, repeat):  # round -1 warms up, untimed
            order = list(dbs.items()) if r % 2 == 0 else list(reversed(dbs.items()))
            if "create" in ops:
                for audit, db in order:
                    took = timed(db, lambda db=db: [db.create("BenchAccount", row) for row in data[:1000]])
                    if r >= 0:
                        times[audit]["create"].append(took)
                    db.bulk_delete("BenchAccount", everything)
            for audit, db in order:
                took = timed(db, lambda db=db: db.bulk_create("BenchAccount", data))
                if r >= 0 and "bulk_create" in ops:
                    times[audit]["bulk_create"].append(took)
            if "bulk_update" in ops:
                for _, db in order:
                    settle(db)
                for audit, db in order:
                    took = timed(db, lambda db=db: db.bulk_update("BenchAccount", everything, {"status": f"s{r}"}))
                    if r >= 0:
                        times[audit]["bulk_update"].append(took)
                updates += 1
            for audit, db in order:
                took = timed(db, lambda db=db: db.bulk_delete("BenchAccount", everything))
                if r >= 0 and "bulk_delete" in ops:
                    times[audit]["bulk_delete"].append(took)
        if updates:  # every updated row got its record
            assert len(dbs[True].audit_log(action="bulk_update", limit=None)) == rows * updates
    finally:
        for db in dbs.values():
            db.close()
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--backend", default="postgresql")
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--ops", default=",".join(OPS), help=f"comma-separated, of {', '.join(OPS)}")
    p.add_argument("--database-prefix", default="dataflow_bench",
                   help="server databases <prefix>_audit and <prefix>_noaudit")
    a = p.parse_args(argv)
    backends = ["sqlite", "postgresql", "mysql"] if a.backend == "all" else a.backend.split(",")
    ops = tuple(op for op in OPS if op in a.ops.split(","))
    load = os.getloadavg()
    print(f"audit cost, {a.rows:,} rows, {a.repeat} repeats; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'':<24} {'wall clock':-^53}   {'CPU (client + server)':-^28}")
    print(f"{'backend':<11} {'operation':<12} {'no audit':>9} {'audit':>9} {'ratio':>6}  "
          f"{'per repeat: median (range)':<26} {'no audit':>9} {'audit':>9} {'ratio':>6}")
    for backend in backends:
        try:
            res = run(backend, a.rows, a.repeat, ops, a.database_prefix)
        except Exception as exc:  # a server that does not answer
            print(f"{backend:<11} skipped: {type(exc).__name__}: {exc}")
            continue
        for op in ops:
            off, on = [w for w, _ in res[False][op]], [w for w, _ in res[True][op]]
            paired = [y / x for x, y in zip(off, on)]
            m_off, m_on = statistics.median(off), statistics.median(on)
            line = (f"{backend:<11} {LABELS.get(op, op):<12} {m_off * 1000:>7.1f}ms {m_on * 1000:>7.1f}ms "
                    f"{m_on / m_off:>5.2f}x  {statistics.median(paired):>5.2f}x ({min(paired):.2f}-{max(paired):.2f}){'':<7}")
            if backend == "mysql":  # the server's threads are not ours to read: CPU would be the client's only
                line += f" {'-':>9} {'-':>9} {'-':>6}"
            else:
                c_off = statistics.median(c for _, c in res[False][op])
                c_on = statistics.median(c for _, c in res[True][op])
                line += f" {c_off * 1000:>7.1f}ms {c_on * 1000:>7.1f}ms {c_on / c_off:>5.2f}x"
            if (backend, op) == TARGET[:2]:
                line += f"  target <= {TARGET[2]:.0f}x (wall): {'PASS' if m_on / m_off <= TARGET[2] else 'MISS'}"
            print(line)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
