"""Profile one case's DataFlow path with cProfile and print where the time goes.

    python benchmarks/hotspots.py --backend sqlite --case list --path ops [--top 25] [--sort tottime]

Cases: ``create`` (single creates), ``read`` (reads by id), ``bulk`` (one bulk create), ``list`` (filtered List calls).
Paths: ``ops`` (the operations layer) and ``node`` (the generated node under LocalRuntime).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import shutil

from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

import raw as raw_driver
import workload
from suite import LIST_LIMIT, MODEL
from workload import LIST_AGE, TABLE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="sqlite", choices=workload.BACKENDS)
    p.add_argument("--case", default="list", choices=("create", "read", "bulk", "list"))
    p.add_argument("--path", default="ops", choices=("ops", "node"))
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--calls", type=int, default=1000, help="single creates, reads or List calls to profile")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime", choices=("tottime", "cumulative"))
    args = p.parse_args()

    scratch = workload.workdir()
    db = workload.open_dataflow(workload.database_url(args.backend, scratch))
    raw = raw_driver.connect(db.url, returning=db.engine.dialect.insert_returning)
    try:
        with LocalRuntime(enable_monitoring=False) as rt:
            work = _work(args, db, raw, rt)
            work()  # warm-up
            if args.case == "bulk":
                raw.truncate()
            profiler = cProfile.Profile()
            profiler.runcall(work)
        print(f"== {args.backend} {args.case} via {args.path}: all functions")
        pstats.Stats(profiler).strip_dirs().sort_stats(args.sort).print_stats(args.top)
        print(f"== {args.backend} {args.case} via {args.path}: DataFlow's own functions")
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(r"/dataflow/", args.top)
    finally:
        raw.close()
        db.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _work(args, db, raw, rt):
    node = {"create": "CreateNode", "read": "ReadNode", "bulk": "BulkCreateNode", "list": "ListNode"}[args.case]
    wb = WorkflowBuilder()
    wb.add_node(f"{MODEL}{node}", "n", {})
    wf = wb.build()
    if args.case == "create":
        rows = workload.make_rows(args.calls)
        if args.path == "ops":
            return lambda: [db.create(MODEL, r) for r in rows]
        return lambda: [rt.execute(wf, parameters={"n": r}) for r in rows]
    if args.case == "bulk":
        rows = workload.make_rows(args.rows)
        if args.path == "ops":
            return lambda: db.bulk_create(MODEL, rows)
        return lambda: rt.execute(wf, parameters={"n": {"data": rows}})
    raw.bulk_create(workload.make_rows(args.rows))
    raw.analyze()
    if args.case == "read":
        with db.engine.connect() as conn:
            ids = [i for (i,) in conn.exec_driver_sql(f"SELECT id FROM {TABLE}")]
        ids = random.Random(7).sample(ids, min(args.calls, len(ids)))
        if args.path == "ops":
            return lambda: [db.read(MODEL, i) for i in ids]
        return lambda: [rt.execute(wf, parameters={"n": {"id": i}}) for i in ids]
    where = {"age": LIST_AGE}
    if args.path == "ops":
        return lambda: [db.list(MODEL, where, limit=LIST_LIMIT) for _ in range(args.calls)]
    payload = {"filter": where, "limit": LIST_LIMIT}
    return lambda: [rt.execute(wf, parameters={"n": payload}) for _ in range(args.calls)]


if __name__ == "__main__":
    main()
