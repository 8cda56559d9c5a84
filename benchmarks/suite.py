"""One backend's run: the cases, each timed along its paths.

Paths: the raw driver (the baseline), the operations layer (``db.create`` ...), the generated
node, and three no-op nodes fed the same payload (noop.py): a plain one returning
``{"success": True}``, one returning the generated node's own output (the baseline of the node
path's target), and the generated node class with ``run`` replaced (for information). Each node
path is a one-node workflow built once and run by ``LocalRuntime(enable_monitoring=False)``. ``workflow10``
runs ten nodes in one workflow; ``cache`` times cached List hits (in-process and Redis).
Every path is warmed up once; paths take turns within each repeat, so drift in the machine
or the database hits all of them alike.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from statistics import median
from time import perf_counter
from typing import Callable

import sqlalchemy as sa
from kailash.nodes.base import NodeRegistry
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

import raw as raw_driver
import workload
from noop import noop_like, shell_like
from capture import captured
from workload import LIST_AGE, TABLE

MODEL = "BenchUser"
LIST_LIMIT = 100
SINGLE_ROUND = 100  # single creates run in rounds of this many per path, paths taking turns
CASES = ("create", "read", "bulk", "list", "workflow10", "cache")
#: The no-op twins of a generated node (noop.py), as the table names them.
TWINS = {"noop": "no-op node", "echo": "no-op node, same output", "shell": "DataFlow node, run() no-op"}
#: The node target's baseline: per operation, the raw driver's statement, then the same-output no-op
#: node. Measured together, not summed: a database round trip is slower when the client works between
#: statements (the server process goes idle) than in the raw driver's tight loop, and a node's
#: statement always runs between SDK work.
PAIR = "raw, then same-output no-op (interleaved)"
#: The ten steps of the workflow10 case, in order (one node each).
WORKFLOW = ("create", "read", "update", "list", "count", "create", "read", "update", "read", "delete")
WORKFLOW_LIST_LIMIT = 10
#: Redis for the cache case; override with DATAFLOW_BENCH_REDIS_URL.
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Options:
    rows: int = 100_000
    creates: int = 1_000
    repeat: int = 3
    lists: int = 200
    reads: int = 1_000
    workflows: int = 20
    hits: int = 500
    cases: tuple[str, ...] = field(default=CASES)


@dataclass
class Timing:
    """The median time of one path through one case."""

    backend: str
    case: str         # "create", "read", "bulk", "list"
    label: str        # what the work is, for the table
    path: str         # "raw", "ops", "node"; the twins "noop", "echo", "shell" (see noop.py)
    how: str          # how the path does it, for the table
    seconds: float
    units: int        # rows (bulk) or operations (create, list) done in ``seconds``
    extra: dict = field(default_factory=dict)  # case-specific figures (Redis round trips per hit, ...)


def run_backend(backend: str, options: dict) -> dict:
    """Measure every case on ``backend``; ``{"timings": [...], "list_sql": ...}`` or ``{"skipped": why}``."""
    opts = Options(**options)
    # The SDK warns once per process that its optional trust subsystem is absent; not ours to report.
    logging.getLogger("kailash.runtime.durable").setLevel(logging.ERROR)
    scratch = workload.workdir()
    try:
        try:
            url = workload.database_url(backend, scratch)
        except sa.exc.OperationalError as exc:  # a server that is not running is a skip, not a failure
            return {"skipped": f"not reachable: {str(exc.orig).splitlines()[0]}"}
        db = workload.open_dataflow(url)
        raw = raw_driver.connect(db.url, returning=db.engine.dialect.insert_returning,
                                 update_returning=db.engine.dialect.update_returning)
        try:
            with LocalRuntime(enable_monitoring=False) as rt:
                bench = Bench(backend, db, raw, rt, opts)
                cases = {"create": bench.single_creates, "read": bench.read, "bulk": bench.bulk_create,
                         "list": bench.list, "workflow10": bench.workflow10, "cache": bench.cache}
                timings = [t for case in opts.cases for t in cases[case]()]
            return {"timings": [asdict(t) for t in timings], "list_sql": bench.list_sql, "notes": bench.notes}
        finally:
            raw.close()
            db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Bench:
    """The three cases on one database."""

    def __init__(self, backend: str, db, raw: raw_driver.RawDriver, rt: LocalRuntime, opts: Options) -> None:
        self.backend, self.db, self.raw, self.rt, self.opts = backend, db, raw, rt, opts
        self.list_sql = ""
        self.notes: list[str] = []

    # ---------------------------------------------------------------- helpers
    def _node(self, node: str, node_id: str) -> Callable[[dict], dict]:
        """A one-node workflow, built once; returns a function that runs it on a payload."""
        wb = WorkflowBuilder()
        wb.add_node(node, node_id, {})
        wf = wb.build()
        rt = self.rt

        def run(payload: dict) -> dict:
            results, _ = rt.execute(wf, parameters={node_id: payload})
            return results[node_id]
        return run

    def _baselines(self, node: str, node_id: str, output: dict) -> dict[str, Callable[[dict], dict]]:
        """The no-op twins of ``node`` (noop.py), as workflow runners: plain, same output, DataFlow shell."""
        cls = NodeRegistry.get(node)
        return {"noop": self._node(noop_like(cls), node_id), "echo": self._node(noop_like(cls, output=output), node_id),
                "shell": self._node(shell_like(cls, output), node_id)}

    def _count(self) -> int:
        with self.db.engine.connect() as conn:
            return conn.exec_driver_sql(f"SELECT count(*) FROM {TABLE}").scalar_one()

    def _stored(self, n: int) -> None:
        """A table of ``n`` rows, loaded by the raw driver and analysed (not timed)."""
        self.raw.truncate()
        self.raw.bulk_create(workload.make_rows(n))
        self.raw.analyze()  # fresh statistics, so the planner uses the indexes on every path

    def _timings(self, case: str, label: str, units: int, times: dict[str, float],
                 how: dict[str, str], extra: dict[str, dict] | None = None) -> list[Timing]:
        return [Timing(self.backend, case, label, path, how[path], times[path], units, (extra or {}).get(path, {}))
                for path in times]

    # ---------------------------------------------------------------- (a) single creates
    def single_creates(self) -> list[Timing]:
        n = self.opts.creates
        db, raw = self.db, self.raw
        node = self._node(f"{MODEL}CreateNode", "create")
        warm = workload.make_rows(20)
        twins = self._baselines(f"{MODEL}CreateNode", "create", node(warm[0]))
        paths: dict[str, Callable[[list[dict]], object]] = {
            "raw": raw.create_each,
            "ops": lambda rows: [db.create(MODEL, r) for r in rows],
            **{k: (lambda rows, t=t: [t(r) for r in rows]) for k, t in twins.items()},
            "pair": lambda rows: [(raw.create_each([r]), twins["echo"](r)) for r in rows],
            "node": lambda rows: [node(r) for r in rows],
        }
        for fn in paths.values():
            fn(warm)
        _check(node(warm[0])["email"] == warm[0]["email"], "the Create node returns the record")
        raw.truncate()

        rows = workload.make_rows(n)
        times = dict.fromkeys(paths, 0.0)
        for start in range(0, n, SINGLE_ROUND):
            chunk = rows[start:start + SINGLE_ROUND]
            for path, fn in paths.items():
                times[path] += _timed(fn, chunk)
        _check(self._count() == 4 * n, "raw, ops, raw + no-op and node each insert every record")
        raw.truncate()
        returning = "INSERT RETURNING" if raw.returning else "INSERT + SELECT"
        how = {"raw": f"raw {returning}", "ops": "db.create", **TWINS, "pair": PAIR, "node": f"{MODEL}CreateNode"}
        return self._timings("create", f"create x{n:,}", n, times, how)

    # ---------------------------------------------------------------- (b) read by id
    def read(self) -> list[Timing]:
        n, reads = self.opts.rows, self.opts.reads
        db, raw = self.db, self.raw
        self._stored(n)
        with db.engine.connect() as conn:
            stored = [i for (i,) in conn.exec_driver_sql(f"SELECT id FROM {TABLE}")]
        rng = random.Random(7)
        node = self._node(f"{MODEL}ReadNode", "read")
        sql = raw.select_sql  # SELECT id, name, ... FROM bench_users WHERE id = ?: the model's columns
        one = stored[0]
        self.notes.append(f"{self.backend}: Read SQL: DataFlow {' '.join(self._captured(lambda: db.read(MODEL, one))[0].split())}"
                          f"; raw {sql}")
        _check(raw.select(sql, (one,))[0][0] == one, "raw SELECT by id")
        _check(db.read(MODEL, one)["id"] == one, "db.read returns the record")
        _check(node({"id": one})["id"] == one, "the Read node returns the record")
        twins = self._baselines(f"{MODEL}ReadNode", "read", node({"id": one}))

        paths: dict[str, Callable[[list], object]] = {
            "raw": lambda ids: [raw.select(sql, (i,)) for i in ids],
            "ops": lambda ids: [db.read(MODEL, i) for i in ids],
            **{k: (lambda ids, t=t: [t({"id": i}) for i in ids]) for k, t in twins.items()},
            "pair": lambda ids: [(raw.select(sql, (i,)), twins["echo"]({"id": i})) for i in ids],
            "node": lambda ids: [node({"id": i}) for i in ids],
        }
        for fn in paths.values():
            fn(rng.sample(stored, max(1, reads // 10)))
        samples: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.opts.repeat):
            ids = rng.sample(stored, min(reads, len(stored)))  # the same random ids for every path
            for path, fn in paths.items():
                samples[path].append(_timed(fn, ids))
        raw.truncate()
        how = {"raw": "raw SELECT by id", "ops": "db.read", **TWINS, "pair": PAIR, "node": f"{MODEL}ReadNode"}
        return self._timings("read", f"read by id x{reads:,} of {n:,}", reads, _medians(samples), how)

    # ---------------------------------------------------------------- (c) bulk create
    def bulk_create(self) -> list[Timing]:
        n = self.opts.rows
        db, raw = self.db, self.raw
        node = self._node(f"{MODEL}BulkCreateNode", "bulk")
        warm = workload.make_rows(min(n, 1000))
        raw.truncate()
        twins = self._baselines(f"{MODEL}BulkCreateNode", "bulk", node({"data": warm}))
        paths: dict[str, Callable[[list[dict]], object]] = {
            "raw": raw.bulk_create,
            "ops": lambda rows: db.bulk_create(MODEL, rows),
            **{k: (lambda rows, t=t: t({"data": rows})) for k, t in twins.items()},
            "pair": lambda rows: (raw.bulk_create(rows), twins["echo"]({"data": rows})),
            "node": lambda rows: node({"data": rows}),
        }
        for fn in paths.values():
            raw.truncate()
            fn(warm)

        rows = workload.make_rows(n)
        samples: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.opts.repeat):
            for path, fn in paths.items():
                raw.truncate()
                samples[path].append(_timed(fn, rows))
                if path not in TWINS:
                    _check(self._count() == n, f"{path} inserts every record")
        raw.truncate()
        how = {"raw": "raw COPY" if self.backend == "postgresql" else "raw executemany",
               "ops": "db.bulk_create", **TWINS, "pair": PAIR, "node": f"{MODEL}BulkCreateNode"}
        return self._timings("bulk", f"bulk create {n:,}", n, _medians(samples), how)

    # ---------------------------------------------------------------- (d) filtered List
    def list(self) -> list[Timing]:
        n, calls = self.opts.rows, self.opts.lists
        db, raw = self.db, self.raw
        self._stored(n)
        node = self._node(f"{MODEL}ListNode", "list")
        where = {"age": LIST_AGE}
        payload = {"filter": where, "limit": LIST_LIMIT}
        twins = self._baselines(f"{MODEL}ListNode", "list", node(payload))  # the SDK's share of 100 records

        sql, params = self._captured(lambda: db.list(MODEL, where, limit=LIST_LIMIT))
        self.list_sql = sql
        expected = min(LIST_LIMIT, n // workload.AGES)
        _check(len(raw.select(sql, params)) == min(LIST_LIMIT + 1, n // workload.AGES), "raw SELECT rows")
        _check(len(db.list(MODEL, where, limit=LIST_LIMIT)) == expected, "db.list returns the matching rows")
        _check(node(payload)["count"] == expected, "the List node returns the matching rows")

        paths: dict[str, Callable[[int], None]] = {
            "raw": lambda k: [raw.select(sql, params) for _ in range(k)],
            "ops": lambda k: [db.list(MODEL, where, limit=LIST_LIMIT) for _ in range(k)],
            **{p: (lambda k, t=t: [t(payload) for _ in range(k)]) for p, t in twins.items()},
            "pair": lambda k: [(raw.select(sql, params), twins["echo"](payload)) for _ in range(k)],
            "node": lambda k: [node(payload) for _ in range(k)],
        }
        for fn in paths.values():
            fn(max(1, calls // 10))
        samples: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.opts.repeat):
            for path, fn in paths.items():
                samples[path].append(_timed(fn, calls))
        raw.truncate()
        how = {"raw": "raw SELECT", "ops": "db.list", **TWINS, "pair": PAIR, "node": f"{MODEL}ListNode"}
        return self._timings("list", f"list {expected} of {n:,} x{calls:,}", calls, _medians(samples), how)

    # ---------------------------------------------------------------- (e) a 10-node workflow
    def workflow10(self) -> list[Timing]:
        """Ten DataFlow nodes in one workflow, against the same ten statements and ten no-op nodes."""
        n, runs, repeat = self.opts.rows, self.opts.workflows, self.opts.repeat
        db, raw = self.db, self.raw
        self._stored(n)
        with db.engine.connect() as conn:
            stored = [i for (i,) in conn.exec_driver_sql(f"SELECT id FROM {TABLE}")]
        rng = random.Random(11)
        rng.shuffle(stored)
        steps = [(f"s{i}_{kind}", kind) for i, kind in enumerate(WORKFLOW)]
        node_name = {"create": "Create", "read": "Read", "update": "Update", "list": "List", "count": "Count",
                     "delete": "Delete"}
        wb, twin = WorkflowBuilder(), WorkflowBuilder()
        for node_id, kind in steps:
            cls = f"{MODEL}{node_name[kind]}Node"
            wb.add_node(cls, node_id, {})
            twin.add_node(noop_like(NodeRegistry.get(cls)), node_id, {})
        wf, wf_noop, rt = wb.build(), twin.build(), self.rt

        paths = ("raw", "ops", "noop", "node")
        per_run_deletes = WORKFLOW.count("delete")
        needed = len(paths) * (repeat * runs + 2) * per_run_deletes  # every path deletes rows of its own
        if needed * 2 > len(stored):
            raise RuntimeError(f"workflow10 needs --rows of at least {needed * 2} for --workflows {runs}")
        doomed, kept = iter(stored[:needed]), stored[needed:]
        serial = iter(range(10 * n, 10 ** 9))

        def payloads() -> dict[str, dict]:
            """One run's parameters, node by node (fresh rows to create and delete, random ids to read)."""
            out: dict[str, dict] = {}
            for node_id, kind in steps:
                if kind == "create":
                    out[node_id] = workload.make_rows(1, next(serial))[0]
                elif kind in ("read", "update"):
                    out[node_id] = {"id": rng.choice(kept)}
                    if kind == "update":
                        out[node_id]["fields"] = {"age": rng.randrange(workload.AGES)}
                elif kind == "list":
                    out[node_id] = {"filter": {"age": LIST_AGE}, "limit": WORKFLOW_LIST_LIMIT}
                elif kind == "count":
                    out[node_id] = {"filter": {"age": LIST_AGE}}
                else:
                    out[node_id] = {"id": next(doomed)}
            return out

        def by_raw(p: dict[str, dict]) -> None:
            for node_id, kind in steps:
                a = p[node_id]
                if kind == "create":
                    raw.create_each([a])
                elif kind == "read":
                    raw.select(raw.select_sql, (a["id"],))
                elif kind == "update":
                    raw.update_age(a["id"], a["fields"]["age"])
                elif kind == "list":
                    raw.select(raw.list_sql, (LIST_AGE, WORKFLOW_LIST_LIMIT + 1))
                elif kind == "count":
                    raw.select(raw.count_sql, (LIST_AGE,))
                else:
                    raw.delete(a["id"])

        def by_ops(p: dict[str, dict]) -> None:
            for node_id, kind in steps:
                a = p[node_id]
                if kind == "create":
                    db.create(MODEL, a)
                elif kind == "read":
                    db.read(MODEL, a["id"])
                elif kind == "update":
                    db.update(MODEL, a["id"], a["fields"])
                elif kind == "list":
                    db.list(MODEL, a["filter"], limit=a["limit"])
                elif kind == "count":
                    db.count(MODEL, a["filter"])
                else:
                    db.delete(MODEL, a["id"])

        run = {"raw": by_raw, "ops": by_ops,
               "noop": lambda p: rt.execute(wf_noop, parameters=p),
               "node": lambda p: rt.execute(wf, parameters=p)}
        # Warm-up, and a check that every node did its work.
        for path in paths:
            run[path](payloads())
        p = payloads()
        results, _ = rt.execute(wf, parameters=p)
        _check(all(results[i].get("success", True) is not False for i, _ in steps), "every workflow node succeeds")
        _check(results["s4_count"]["count"] == db.count(MODEL, {"age": LIST_AGE}), "the Count node counts")
        _check(db.read(MODEL, p["s9_delete"]["id"], raise_on_not_found=False) is None, "the Delete node deletes")

        samples: dict[str, list[float]] = {path: [] for path in paths}
        for _ in range(repeat):
            batches = {path: [payloads() for _ in range(runs)] for path in paths}
            for path in paths:
                fn = run[path]
                samples[path].append(_timed(lambda batch, fn=fn: [fn(x) for x in batch], batches[path]))
        raw.truncate()
        how = {"raw": "raw driver, the 10 statements", "ops": "the 10 calls, direct API",
               "noop": "10 no-op nodes, one workflow", "node": "10 DataFlow nodes, one workflow"}
        label = f"workflow of 10 nodes x{runs:,}"  # the steps: WORKFLOW (README)
        return self._timings("workflow10", label, runs, _medians(samples), how)

    # ---------------------------------------------------------------- (f) cached List
    def cache(self) -> list[Timing]:
        """A List of 100 rows: raw, uncached, a cached hit in this process, a cached hit from Redis."""
        n, calls = self.opts.rows, self.opts.hits
        db, raw = self.db, self.raw
        self._stored(n)
        where = {"age": LIST_AGE}
        sql, params = self._captured(lambda: db.list(MODEL, where, limit=LIST_LIMIT))
        expected = db.list(MODEL, where, limit=LIST_LIMIT)
        _check(len(expected) == min(LIST_LIMIT, n // workload.AGES), "db.list returns the matching rows")
        db.cache.clear()
        _check(db.list(MODEL, where, limit=LIST_LIMIT, cache=True) == expected, "the first cached List (a miss)")
        before = db.cache.stats()
        _check(db.list(MODEL, where, limit=LIST_LIMIT, cache=True) == expected, "a cached List hit is exact")
        _check(db.cache.stats()["hits"] == before["hits"] + 1, "the second cached List is a hit")

        paths: dict[str, Callable[[int], object]] = {
            "raw": lambda k: [raw.select(sql, params) for _ in range(k)],
            "ops": lambda k: [db.list(MODEL, where, limit=LIST_LIMIT) for _ in range(k)],
            "memory": lambda k: [db.list(MODEL, where, limit=LIST_LIMIT, cache=True) for _ in range(k)],
        }
        how = {"raw": "raw SELECT", "ops": "db.list, uncached", "memory": "db.list(cache=True) hit, in-process"}
        extra: dict[str, dict] = {}
        redis = _RedisSide.open(self.db.url, expected, where)
        if redis is None:
            self.notes.append(f"{self.backend}: cache: Redis at {_redis_url()} not reachable: its rows are skipped")
        else:
            paths["redis"] = lambda k: [redis.db.list(redis.model, where, limit=LIST_LIMIT, cache=True)
                                        for _ in range(k)]
            paths["floor"] = lambda k: [redis.floor() for _ in range(k)]
            how["redis"] = "db.list(cache=True) hit, Redis"
            how["floor"] = "redis-py GET of the entry + decode"
        try:
            for fn in paths.values():
                fn(max(1, calls // 10))
            samples: dict[str, list[float]] = {p: [] for p in paths}
            trips: list[int] = []
            looks: list[int] = []
            for _ in range(self.opts.repeat):
                for path, fn in paths.items():
                    if path == "redis":
                        assert redis is not None
                        hits, sent, looked = redis.db.cache.stats()["hits"], redis.sent(), _Sent.looks
                        samples[path].append(_timed(fn, calls))
                        trips.append(redis.sent() - sent - (_Sent.looks - looked))
                        looks.append(_Sent.looks - looked)
                        _check(redis.db.cache.stats()["hits"] - hits == calls, "every Redis List call is a hit")
                    else:
                        samples[path].append(_timed(fn, calls))
            if redis is not None:
                extra["redis"] = {"round_trips": median(trips) / calls}
                how["redis"] += (f" ({median(trips) / calls:.2f} round trips/hit, "
                                 f"+{median(looks):.0f} layout looks)")
        finally:
            if redis is not None:
                redis.close()
        raw.truncate()
        return self._timings("cache", f"List {len(expected)} of {n:,}, cached x{calls:,}", calls,
                             _medians(samples), how, extra)

    def _captured(self, call: Callable[[], object]) -> tuple[str, object]:
        """The SELECT (text and parameters) that DataFlow sends to the driver during ``call``."""
        return captured(self.db.engine, call, TABLE)


def _check(ok: bool, what: str) -> None:
    """Stop the run when a path did not do its work (a fast wrong answer is no result)."""
    if not ok:
        raise RuntimeError(f"benchmark check failed: {what}")


def _timed(fn: Callable, arg: object) -> float:
    gc.collect()  # start each sample with no garbage left by the previous one
    start = perf_counter()
    fn(arg)
    return perf_counter() - start


def _medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {path: median(ts) for path, ts in samples.items()}


def _redis_url() -> str:
    import os

    return os.environ.get("DATAFLOW_BENCH_REDIS_URL", REDIS_URL)


class _RedisSide:
    """A second DataFlow on the same table with its cache in Redis, its round trips counted."""

    def __init__(self, db, model: str, key: str) -> None:
        self.db, self.model, self.key = db, model, key
        self.client = db.cache.store.client

    @classmethod
    def open(cls, url, expected: list[dict], where: dict) -> "_RedisSide | None":
        import uuid

        import redis as redis_py
        from dataflow import DataFlow

        try:
            redis_py.Redis.from_url(_redis_url(), socket_connect_timeout=0.5).ping()
        except (redis_py.exceptions.ConnectionError, OSError):
            return None
        prefix = f"dataflow_bench:{uuid.uuid4().hex[:8]}:"
        db = DataFlow(url.render_as_string(hide_password=False), redis_url=_redis_url(), cache_prefix=prefix)

        # The same table under another model name: the BenchUser nodes stay bound to the first instance.
        @db.model
        class BenchUserCached:
            name: str
            email: str
            age: int
            active: bool = True
            __tablename__ = TABLE
            __dataflow__ = {"indexes": ["age"]}

        pool = db.cache.store.client.connection_pool
        pool.connection_class = _counting(pool.connection_class)
        pool.disconnect()  # connections made from now on count what they send
        model = "BenchUserCached"
        _check(db.list(model, where, limit=LIST_LIMIT, cache=True) == expected, "a List through Redis (a miss)")
        _check(db.list(model, where, limit=LIST_LIMIT, cache=True) == expected, "a cached List hit from Redis")
        keys = list(db.cache.store.client.scan_iter(match=f"{prefix}e:*"))
        _check(len(keys) == 1, "one cached entry in Redis")
        return cls(db, model, keys[0])

    def sent(self) -> int:
        return _Sent.count

    def floor(self) -> object:
        """What no cache can avoid on a hit: one round trip for the entry, and decoding it."""
        from dataflow.cache import _unpack, decode

        _, payload = _unpack(self.client.get(self.key))
        return decode(payload)

    def close(self) -> None:
        try:
            self.db.cache.clear()
            versions = list(self.client.scan_iter(match=f"{self.db.cache.prefix}*"))
            if versions:
                self.client.delete(*versions)
        finally:
            self.db.close()


class _Sent:
    count = 0  # commands (or pipelines) written to Redis: one round trip each
    looks = 0  # of which layout registry looks (one per table every CHECK_EVERY_S, not per hit)


def _counting(base: type) -> type:
    """A redis-py connection class that counts every write of a command or a pipeline to the socket."""
    from dataflow.cache_layouts import SCRIPT

    sha = hashlib.sha1(SCRIPT.encode()).hexdigest().encode()

    def send_packed_command(self, command, check_health=True):  # noqa: ANN001
        _Sent.count += 1
        if any(isinstance(p, bytes) and sha in p for p in (command if isinstance(command, list) else [command])):
            _Sent.looks += 1
        return base.send_packed_command(self, command, check_health)

    return type(f"Counting{base.__name__}", (base,), {"send_packed_command": send_packed_command})
