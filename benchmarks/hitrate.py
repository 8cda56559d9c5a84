"""The cache on a read-mostly workload: hit rate and stale reads, two processes sharing Redis.

Each of ``--hitrate-procs`` processes (2) runs ``--hitrate-ops`` operations (1,000): 95% cached reads, each
one of 100 distinct queries (``db.list("BenchHit", {"grp": g}, cache=True)``, ``g`` uniform in
0..99, 10 rows each), and 5% writes (``db.update`` of one random row's ``value``). Every cached
answer is compared with a fresh uncached query (``cache=False``) run right after it.

Stale or racing: the writers count, in Redis, the writes they start and the writes that have
returned. A cached answer that differs from the fresh one is **stale** when no write was under way
when the cached read began and none started before the fresh read ended: the database did not
change in between, so the cache served an answer older than a write that had returned before the
read began. If a write overlapped the pair, the difference may be that write's own: counted as
**raced** (not verifiable), not as stale.

Three variants: ``same`` (the writes change the table the reads query: the issue's workload, with
List queries, which depend on the whole table), ``rows`` (the same, with the 100 queries reads by
primary key of 100 records and the writes updates of those records: a read by id depends on its own
record only, see dataflow/cache.py) and ``other`` (the writes go to another table: the most the
cache can hit with 100 distinct queries and these sizes, no invalidation).
Hit rate = hits / cached reads, from both processes' ``cache.stats()``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import shutil
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

import workload
from suite import Timing, _redis_url

CASES = ("hitrate",)
VARIANTS = ("same", "rows", "other")
QUERIES = 100            # distinct queries (groups)
ROWS_PER_QUERY = 10
WRITE_SHARE = 0.05
TABLES = ("bench_hits", "bench_hit_others")


@dataclass
class HitOptions:
    ops: int = 2_000        # operations per process
    procs: int = 2
    cases: tuple[str, ...] = field(default=CASES)


def _open(url: str, redis_url: str | None = None, prefix: str = "dataflow_bench_hit:"):
    from dataflow import DataFlow

    db = DataFlow(url, redis_url=redis_url, cache_prefix=prefix) if redis_url else DataFlow(url)

    @db.model
    class BenchHit:
        grp: int
        value: int
        name: str
        __dataflow__ = {"indexes": ["grp"]}

    @db.model
    class BenchHitOther:
        value: int

    db.ensure_ready()
    return db


def run_backend(backend: str, options: dict) -> dict:
    """Both variants on ``backend``: ``{"timings": [...], "notes": [...]}`` or ``{"skipped": why}``."""
    opts = HitOptions(**options)
    import redis as redis_py

    scratch = workload.workdir()
    try:
        try:
            url = workload.database_url(backend, scratch)
        except sa.exc.OperationalError as exc:
            return {"skipped": f"not reachable: {str(exc.orig).splitlines()[0]}"}
        try:
            redis_py.Redis.from_url(_redis_url(), socket_connect_timeout=0.5).ping()
        except (redis_py.exceptions.ConnectionError, OSError):
            return {"timings": [], "notes": [f"{backend}: hitrate: Redis at {_redis_url()} not reachable: skipped"]}
        db = _open(url)
        try:
            with db.engine.begin() as conn:
                for table in TABLES:
                    conn.exec_driver_sql(f"DELETE FROM {table}")
            db.bulk_create("BenchHit", [{"grp": i % QUERIES, "value": i, "name": f"row {i}"}
                                        for i in range(QUERIES * ROWS_PER_QUERY)])
            db.bulk_create("BenchHitOther", [{"value": i} for i in range(100)])
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=opts.procs, mp_context=spawn) as pool:  # one pool for both
                timings = [_variant(pool, backend, url, variant, opts) for variant in VARIANTS]
            if backend != "sqlite":  # the server database is shared with the other benchmarks: leave no tables
                with db.engine.begin() as conn:
                    for table in TABLES:
                        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        finally:
            db.close()
        return {"timings": [asdict(t) for t in timings], "notes": []}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _variant(pool: ProcessPoolExecutor, backend: str, url: str, variant: str, opts: HitOptions) -> Timing:
    import redis as redis_py

    prefix = f"dataflow_bench_hit:{uuid.uuid4().hex[:8]}:"  # a cache of its own: the variant starts cold
    client = redis_py.Redis.from_url(_redis_url())
    try:
        futures = [pool.submit(_worker, url, prefix, variant, opts.ops, opts.procs, i) for i in range(opts.procs)]
        outs = [f.result() for f in futures]
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    total = {k: sum(o[k] for o in outs) for k in ("reads", "writes", "hits", "misses", "stale", "raced", "matched")}
    looked = total["hits"] + total["misses"]
    extra = {**total, "hit_rate": total["hits"] / looked if looked else 0.0, "variant": variant}
    where = {"same": "the table read (List queries)", "rows": "the records read (reads by id)",
             "other": "another table"}[variant]
    how = (f"{opts.procs} procs, writes to {where}: {total['reads']:,} cached reads, {total['writes']:,} writes; "
           f"compared {total['reads']:,}: stale {total['stale']}, raced {total['raced']}")
    label = f"hit rate, {opts.procs} processes x{opts.ops:,} ops (95% reads of {QUERIES} queries, 5% writes)"
    return Timing(backend, "hitrate", label, variant, how, max(o["seconds"] for o in outs),
                  total["reads"] + total["writes"], extra)


def _worker(url: str, prefix: str, variant: str, ops: int, procs: int, index: int) -> dict:
    """One process of the workload; returns its counts."""
    logging.getLogger("kailash.runtime.durable").setLevel(logging.ERROR)
    import redis as redis_py

    db = _open(url, _redis_url(), prefix)
    client = redis_py.Redis.from_url(_redis_url())
    started_key, done_key, ready_key = f"{prefix}writes_started", f"{prefix}writes_done", f"{prefix}ready"
    rng = random.Random(1000 + index)
    with db.engine.connect() as conn:
        ids = [i for (i,) in conn.exec_driver_sql("SELECT id FROM bench_hits ORDER BY id")]
        others = [i for (i,) in conn.exec_driver_sql("SELECT id FROM bench_hit_others")]
    out = dict.fromkeys(("reads", "writes", "stale", "raced", "matched"), 0)
    client.incr(ready_key)
    deadline = time.monotonic() + 60
    while int(client.get(ready_key) or 0) < procs and time.monotonic() < deadline:  # start together
        time.sleep(0.01)
    try:
        start = time.perf_counter()
        for _ in range(ops):
            if rng.random() < WRITE_SHARE:
                client.incr(started_key)
                if variant == "same":
                    db.update("BenchHit", rng.choice(ids), {"value": rng.randrange(10 ** 9)})
                elif variant == "rows":
                    db.update("BenchHit", rng.choice(ids[:QUERIES]), {"value": rng.randrange(10 ** 9)})
                else:
                    db.update("BenchHitOther", rng.choice(others), {"value": rng.randrange(10 ** 9)})
                client.incr(done_key)
                out["writes"] += 1
                continue
            g = rng.randrange(QUERIES)
            before = client.mget(started_key, done_key)
            if variant == "rows":
                cached = db.read("BenchHit", ids[g], cache=True)
                fresh = db.read("BenchHit", ids[g], cache=False)
            else:
                cached = db.list("BenchHit", {"grp": g}, cache=True)
                fresh = db.list("BenchHit", {"grp": g}, cache=False)
            after = client.mget(started_key, done_key)
            out["reads"] += 1
            if cached == fresh:
                out["matched"] += 1
            elif before[0] == before[1] == after[0] == after[1]:
                out["stale"] += 1  # no write under way or started across the pair: the cache was behind
            else:
                out["raced"] += 1
        out["seconds"] = time.perf_counter() - start
        stats = db.cache.stats()
        out["hits"], out["misses"] = stats["hits"], stats["misses"]
        out["pid"] = os.getpid()
        return out
    finally:
        client.close()
        db.close()
