"""Profile one query case's DataFlow path with cProfile and print where the time goes.

    python benchmarks/query_hotspots.py --backend sqlite --case query --path ops [--top 25] [--sort tottime]

Cases (queries.py): ``query`` (the filtered, sorted List of 10), ``aggregate`` ($group/$sum/$sort/$limit).
Paths: ``ops`` (``db.query(...)...``), ``list`` (``db.list``, query case only), ``sql`` (the raw
driver running DataFlow's own SQL) and ``raw`` (the hand-written SQL), for comparison.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
from time import perf_counter

import queries
import raw as raw_driver
import workload


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="sqlite", choices=workload.BACKENDS)
    p.add_argument("--case", default="query", choices=queries.CASES)
    p.add_argument("--path", default="ops", choices=("ops", "list", "sql", "raw"))
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=1000, help="calls to profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    args = p.parse_args()

    scratch = workload.workdir()
    db = queries.open_dataflow(queries.database_url(args.backend, scratch), args.rows)
    raw = raw_driver.connect(db.url, returning=db.engine.dialect.insert_returning)
    try:
        raw.cur.execute(queries.ANALYZE[args.backend])
        if raw.cur.description:
            raw.cur.fetchall()
        raw.conn.commit()
        one = _path(args, db, queries.QueryBench(args.backend, db, raw, queries.QueryOptions()))
        for _ in range(max(1, args.calls // 10)):  # warm-up
            one()
        profiler = cProfile.Profile()
        start = perf_counter()
        profiler.runcall(lambda: [one() for _ in range(args.calls)])
        per_call = (perf_counter() - start) / args.calls * 1e3
        print(f"== {args.backend} {args.case} via {args.path}: {per_call:.3f} ms a call under the profiler")
        pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)
        print(f"== {args.backend} {args.case} via {args.path}: DataFlow's own functions")
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(r"/dataflow/", args.top)
    finally:
        raw.close()
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {queries.TABLE}")
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _path(args, db, bench: queries.QueryBench):
    table = queries.TABLE
    if args.case == "query":
        ops = lambda: db.query(table).where(queries.LIST_FILTER).sort(queries.LIST_SORT).limit(  # noqa: E731
            queries.LIST_LIMIT).all()
        hand = "query"
        if args.path == "list":
            return lambda: db.list(queries.MODEL, queries.LIST_FILTER, sort=queries.LIST_SORT,
                                   limit=queries.LIST_LIMIT)
    else:
        pipeline = [*queries.GROUP, {"$limit": queries.GROUP_LIMIT}]
        ops = lambda: db.query(table).where(queries.GROUP_FILTER).aggregate(pipeline)  # noqa: E731
        hand = "aggregate+limit"
    if args.path == "sql":
        return bench.dataflows_sql(args.case, ops)
    if args.path == "raw":
        return bench.hand_written(hand)
    return ops


if __name__ == "__main__":
    main()
