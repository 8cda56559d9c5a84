"""HTTP benchmark: the generated REST resource against a hand-written FastAPI route on the raw driver.

Cases: ``GET /users/{id}`` and ``GET /users?active=true&limit=20``. Both servers run uvicorn with the
same settings (one process, no access log, log level warning) on loopback, against the same table of
``--rows`` users; a loopback load generator (``--concurrency`` httpx clients) sends a fixed number
of requests (``--requests``) to each after a warm-up, and the script prints requests per second,
p50 and p99 latency and the ratios generated/hand-written. It measures; it asserts nothing.

The hand-written list does what the resource's answer needs: the page (LIMIT 20) and the total
(COUNT), two statements, as the resource does when the page is full.

    .venv/bin/python benchmarks/http_api.py                         # SQLite
    .venv/bin/python benchmarks/http_api.py --backend postgresql    # the local server of DEVELOPERS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
URLS = {"postgresql": os.environ.get("DATAFLOW_BENCH_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/dataflow_bench")}
UVICORN = dict(log_level="warning", access_log=False)


# ---------------------------------------------------------------- the two servers
def declare(app):
    @app.model
    class User:
        name: str
        email: str
        age: int
        active: bool = True
    return User


def serve_generated(url: str, port: int) -> None:
    from dataflow import DataFlow

    app = DataFlow(url)
    declare(app)

    @app.resource("users")
    class UserResource:
        pass

    app.start("127.0.0.1", port, **UVICORN)


def serve_raw(url: str, port: int) -> None:
    import threading
    from datetime import timezone

    import uvicorn
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import JSONResponse

    cols = "id, name, email, age, active, created_at, updated_at"
    local = threading.local()
    if url.startswith("sqlite"):
        import sqlite3

        path, mark = url.split("///", 1)[1], "?"

        def connect():
            return sqlite3.connect(path, check_same_thread=False)
    else:
        import psycopg

        mark = "%s"

        def connect():
            return psycopg.connect(url, autocommit=True)

    def cursor():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect()
        return conn.cursor()

    def record(row) -> dict:
        out = dict(zip(("id", "name", "email", "age", "active", "created_at", "updated_at"), row))
        out["active"] = bool(out["active"])
        for k in ("created_at", "updated_at"):
            v = out[k]
            out[k] = v.astimezone(timezone.utc).isoformat() if hasattr(v, "astimezone") else v
        return out

    api = FastAPI()

    @api.get("/users/{id}")
    def read(id: int):
        cur = cursor()
        cur.execute(f"SELECT {cols} FROM users WHERE id = {mark}", (id,))
        row = cur.fetchone()
        if row is None:
            raise HTTPException(404)
        return JSONResponse(record(row))

    @api.get("/users")
    def listing(active: bool, limit: int = 100, offset: int = 0):
        cur = cursor()
        cur.execute(f"SELECT {cols} FROM users WHERE active = {mark} ORDER BY id LIMIT {mark} OFFSET {mark}",
                    (active, limit + 1, offset))
        rows = cur.fetchall()
        cur.execute(f"SELECT count(*) FROM users WHERE active = {mark}", (active,))
        total = cur.fetchone()[0]
        records = [record(r) for r in rows[:limit]]
        return JSONResponse({"records": records, "total": total, "count": len(records), "limit": limit,
                             "offset": offset, "has_more": len(rows) > limit})

    uvicorn.run(api, host="127.0.0.1", port=port, **UVICORN)


# ---------------------------------------------------------------- the driver of the benchmark
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, rows: int) -> None:
    from dataflow import DataFlow

    with DataFlow(url) as db:
        declare(db)
        db.migrate()
        if db.count("User") != rows:
            db.bulk_delete("User", None, confirm_all=True)
            rng = random.Random(7)
            db.bulk_create("User", [{"name": f"user {i}", "email": f"u{i}@example.com", "age": rng.randint(18, 80),
                                     "active": rng.random() < 0.7} for i in range(rows)])


def start(kind: str, url: str) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--url", url, "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{base}/users/1", timeout=2)
            return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the {kind} server did not start")


async def hammer(base: str, paths: list[str], concurrency: int) -> tuple[float, list[float]]:
    import httpx

    latencies: list[float] = []
    queue = iter(paths)

    async def worker(client) -> None:
        for path in queue:
            t = time.perf_counter()
            r = await client.get(path)
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: {r.status_code}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, latencies


def measure(base: str, case: str, n: int, rows: int, concurrency: int) -> dict:
    rng = random.Random(11)
    make = (lambda: f"/users/{rng.randint(1, rows)}") if case == "read" else (lambda: "/users?active=true&limit=20")
    asyncio.run(hammer(base, [make() for _ in range(min(200, n))], concurrency))  # warm-up
    wall, lat = asyncio.run(hammer(base, [make() for _ in range(n)], concurrency))
    lat.sort()
    return {"rps": n / wall, "p50": statistics.median(lat) * 1000, "p99": lat[int(len(lat) * 0.99) - 1] * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=3_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--serve", choices=["generated", "raw"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        (serve_generated if args.serve == "generated" else serve_raw)(args.url, args.port)
        return
    tmp = tempfile.mkdtemp(prefix="df-http-bench-")
    url = f"sqlite:///{tmp}/bench.db" if args.backend == "sqlite" else URLS["postgresql"]
    if args.backend == "postgresql":
        _ensure_database(url)
    load(url, args.rows)
    results: dict[str, dict[str, dict]] = {}
    for kind in ("raw", "generated"):
        proc, base = start(kind, url)
        try:
            results[kind] = {case: measure(base, case, args.requests, args.rows, args.concurrency)
                             for case in ("read", "list")}
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\nHTTP, {args.backend}, {args.rows} rows, {args.requests} requests per case, "
          f"{args.concurrency} concurrent clients, uvicorn {UVICORN}")
    print(f"{'case':<34}{'hand-written req/s':>20}{'generated req/s':>17}{'ratio':>8}"
          f"{'p50 ratio':>11}{'p99 ratio':>11}")
    names = {"read": "GET /users/{id}", "list": "GET /users?active=true&limit=20"}
    for case in ("read", "list"):
        raw, gen = results["raw"][case], results["generated"][case]
        print(f"{names[case]:<34}{raw['rps']:>20.0f}{gen['rps']:>17.0f}{gen['rps'] / raw['rps']:>8.2f}"
              f"{gen['p50'] / raw['p50']:>11.2f}{gen['p99'] / raw['p99']:>11.2f}")
    print(json.dumps(results, indent=1))


def _ensure_database(url: str) -> None:
    import sqlalchemy as sa

    from dataflow.core.engine import parse_url

    u = parse_url(url)
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        if not conn.exec_driver_sql("SELECT 1 FROM pg_database WHERE datname = %s", (u.database,)).first():
            conn.exec_driver_sql(f'CREATE DATABASE "{u.database}"')
    admin.dispose()


if __name__ == "__main__":
    main()
