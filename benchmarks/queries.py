"""The query language's cases: DataFlow's queries against the seed's hand-written SQL.

Two cases on one table of 100,000 employees (``BenchEmployee``, indexes on ``age``,
``department`` and ``created_at``), both sides reading the same rows through the same indexes:

* ``query``: the Migration Guide's ORM example, ``age > 18 AND department IN ('eng', 'sales')
  ORDER BY created_at DESC LIMIT 10``, as ``db.query(...).where(...).sort(...).limit(10).all()``
  and as ``db.list(...)``;
* ``aggregate``: the Migration Guide's raw SQL, ``SELECT department, COUNT(*) ... GROUP BY
  department ORDER BY count DESC``, as ``db.query(...).where(...).aggregate([$group, $sort])``, and
  the same with ``$limit`` against the SQL with ``LIMIT``.

The baseline is the raw driver running the hand-written SQL (``HAND_WRITTEN``) with ``fetchall``
and a commit. One more row, for information: the raw driver running the SQL DataFlow sends
(captured from the engine), which splits DataFlow's ratio into the cost of its SQL and the cost of
its Python. Paths take turns within each repeat; the median repeat is reported.

Server databases: ``dataflow_bench_query`` next to the other cases' ``dataflow_bench`` (so neither
run's models see the other's tables), created when missing; the table is dropped at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import raw as raw_driver
import workload
from capture import captured
from suite import Timing, _check, _medians, _timed

CASES = ("query", "aggregate")
MODEL = "BenchEmployee"
TABLE = "bench_employees"
DEPARTMENTS = ("eng", "sales", "ops", "hr", "finance", "legal", "support", "marketing")
START = datetime(2020, 1, 1, tzinfo=timezone.utc)

LIST_FILTER = {"age": {"$gt": 18}, "department": {"$in": ["eng", "sales"]}}
LIST_SORT = {"created_at": -1}
LIST_LIMIT = 10
LIST_ROUND = 20  # List calls per path per turn (an aggregation takes one call per turn)
GROUP_FILTER = {"age": {"$gt": 18}}
GROUP = [{"$group": {"_id": "$department", "count": {"$sum": 1}}}, {"$sort": {"count": -1}}]
GROUP_LIMIT = 5

#: The seed's "before" SQL; ``{m}`` is the driver's placeholder. Only the table name is ours.
HAND_WRITTEN = {
    "query": (f"SELECT id, name, department, age, created_at, updated_at FROM {TABLE} "
              f"WHERE age > {{m}} AND department IN ({{m}}, {{m}}) ORDER BY created_at DESC LIMIT {LIST_LIMIT}",
              (18, "eng", "sales")),
    "aggregate": (f"SELECT department, COUNT(*) as count FROM {TABLE} WHERE age > {{m}} "
                  f"GROUP BY department ORDER BY count DESC", (18,)),
    "aggregate+limit": (f"SELECT department, COUNT(*) as count FROM {TABLE} WHERE age > {{m}} "
                        f"GROUP BY department ORDER BY count DESC LIMIT {{m}}", (18, GROUP_LIMIT)),
}
ANALYZE = {"sqlite": "ANALYZE", "postgresql": f"ANALYZE {TABLE}", "mysql": f"ANALYZE TABLE {TABLE}"}


@dataclass
class QueryOptions:
    rows: int = 100_000
    repeat: int = 3
    lists: int = 200       # List calls per repeat
    aggregates: int = 20   # aggregations per repeat (each reads most of the table)
    cases: tuple[str, ...] = field(default=CASES)


def run_backend(backend: str, options: dict) -> dict:
    """Measure the query cases on ``backend``: ``{"timings": [...], "notes": [...]}`` or ``{"skipped": why}``."""
    opts = QueryOptions(**options)
    logging.getLogger("kailash.runtime.durable").setLevel(logging.ERROR)
    scratch = workload.workdir()
    try:
        try:
            url = database_url(backend, scratch)
        except sa.exc.OperationalError as exc:
            return {"skipped": f"not reachable: {str(exc.orig).splitlines()[0]}"}
        db = open_dataflow(url, opts.rows)
        raw = raw_driver.connect(db.url, returning=db.engine.dialect.insert_returning)
        try:
            raw.cur.execute(ANALYZE[backend])  # fresh statistics: both paths get the same plans
            if raw.cur.description:
                raw.cur.fetchall()
            raw.conn.commit()
            bench = QueryBench(backend, db, raw, opts)
            cases = {"query": bench.query, "aggregate": bench.aggregate}
            timings = [t for case in opts.cases for t in cases[case]()]
            return {"timings": [asdict(t) for t in timings], "notes": bench.notes}
        finally:
            raw.close()
            with db.engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
            db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def database_url(backend: str, scratch) -> str:
    if backend == "sqlite":
        return workload.database_url(backend, scratch)
    url = make_url(os.environ.get(f"DATAFLOW_BENCH_{backend.upper()}_URL", workload.SERVER_URLS[backend]))
    url = url.set(database=f"{url.database}_query").render_as_string(hide_password=False)
    workload._create_database(backend, url)
    return url


def open_dataflow(url: str, rows: int):
    """A DataFlow with the ``BenchEmployee`` model and ``rows`` employees (loaded, not timed)."""
    from dataflow import DataFlow

    db = DataFlow(url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")

    @db.model
    class BenchEmployee:
        name: str
        department: str
        age: int

        # The List sorts by created_at; the group form, as a bare "created_at" is not indexed
        # (the name form applies to declared fields only, not to the automatic timestamps).
        __dataflow__ = {"indexes": ["age", "department", ["created_at"]]}

    db.bulk_create(MODEL, make_rows(rows))
    return db


def make_rows(n: int) -> list[dict]:
    """Employees aged 16 to 75 in eight departments, one joining every minute."""
    return [{"name": f"employee {i}", "department": DEPARTMENTS[(i // 3) % len(DEPARTMENTS)],
             "age": 16 + (i * 7) % 60, "created_at": START + timedelta(minutes=i)} for i in range(n)]


class QueryBench:
    """The two cases on one database."""

    def __init__(self, backend: str, db, raw: raw_driver.RawDriver, opts: QueryOptions) -> None:
        self.backend, self.db, self.raw, self.opts = backend, db, raw, opts
        self.notes: list[str] = []

    def hand_written(self, name: str) -> Callable[[], list]:
        sql, params = HAND_WRITTEN[name]
        sql = sql.format(m=self.raw.mark)
        select = self.raw.select
        return lambda: select(sql, params)

    def dataflows_sql(self, name: str, call: Callable[[], object]) -> Callable[[], list]:
        """The raw driver running the SELECT that ``call`` sends, with its parameters."""
        sql, params = captured(self.db.engine, call, TABLE)
        self.notes.append(f"{self.backend}: {name} SQL: {' '.join(sql.split())}")
        select = self.raw.select
        return lambda: select(sql, params)

    def _measure(self, case: str, label: str, calls: int, rounds_of: int, paths: dict[str, Callable[[], object]],
                 how: dict[str, str]) -> list[Timing]:
        """Median over repeats of ``calls`` calls per path, made in rounds of ``rounds_of``, paths taking turns."""
        for fn in paths.values():  # warm up: connections, statement caches, plans
            for _ in range(max(1, calls // 10)):
                fn()
        samples: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.opts.repeat):
            spent = dict.fromkeys(paths, 0.0)
            for start in range(0, calls, rounds_of):
                k = min(rounds_of, calls - start)
                for path, fn in paths.items():
                    spent[path] += _timed(lambda k: [fn() for _ in range(k)], k)
            for path, seconds in spent.items():
                samples[path].append(seconds)
        return [Timing(self.backend, case, label, path, how[path], seconds, calls)
                for path, seconds in _medians(samples).items()]

    # ---------------------------------------------------------------- List: filter, sort, limit
    def query(self) -> list[Timing]:
        db, n = self.db, self.opts.rows
        raw = self.hand_written("query")
        fluent = lambda: db.query(TABLE).where(LIST_FILTER).sort(LIST_SORT).limit(LIST_LIMIT).all()  # noqa: E731
        paths = {
            "raw": raw,
            "sql": self.dataflows_sql("query", fluent),
            "ops": fluent,
            "list": lambda: db.list(MODEL, LIST_FILTER, sort=LIST_SORT, limit=LIST_LIMIT),
        }
        expected = [r[0] for r in raw()]
        _check(len(expected) == LIST_LIMIT, "the hand-written List finds 10 rows")
        _check([r[0] for r in paths["sql"]()][:LIST_LIMIT] == expected, "DataFlow's SQL finds the same rows")
        for path in ("ops", "list"):
            _check([r["id"] for r in paths[path]()] == expected, f"{path} returns the hand-written List's rows")
        how = {"raw": "hand-written SQL", "sql": "raw driver, DataFlow's SQL",
               "ops": "db.query().where().sort().limit(10).all()", "list": "db.list"}
        return self._measure("query", f"list 10 of {n:,}", self.opts.lists, LIST_ROUND, paths, how)

    # ---------------------------------------------------------------- $group / $sum / $sort (/ $limit)
    def aggregate(self) -> list[Timing]:
        db, n = self.db, self.opts.rows
        out = []
        for name, pipeline in (("aggregate", GROUP), ("aggregate+limit", [*GROUP, {"$limit": GROUP_LIMIT}])):
            raw = self.hand_written(name)
            ops = lambda p=pipeline: db.query(TABLE).where(GROUP_FILTER).aggregate(p)  # noqa: E731
            paths = {"raw": raw, "sql": self.dataflows_sql(name, ops), "ops": ops}
            expected = sorted((-count, dept) for dept, count in raw())
            _check(sorted((-count, dept) for dept, count in paths["sql"]()) == expected,
                   f"{name}: DataFlow's SQL finds the same groups")
            got = sorted((-d["count"], d["_id"]) for d in paths["ops"]())
            _check(got == expected and sum(-c for c, _ in got) > 0, f"{name}: the pipeline's groups are the SQL's")
            stages = "$group/$sum/$sort" + ("/$limit" if name.endswith("limit") else "")
            how = {"raw": "hand-written SQL", "sql": "raw driver, DataFlow's SQL",
                   "ops": f"db.query().where().aggregate({stages})"}
            out += self._measure("aggregate", f"{name} of {n:,}", self.opts.aggregates, 1, paths, how)
        return out
