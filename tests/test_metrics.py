"""Metrics: every operation timed by model and action through every door; benchmarks; summary; Prometheus."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from kailash.runtime.local import LocalRuntime
from kailash.workflow.builder import WorkflowBuilder

from dataflow import DataFlow, NotFoundError
from dataflow.metrics import Metrics

SRC = Path(__file__).resolve().parent.parent / "src"


def declare(db: DataFlow) -> None:
    @db.model
    class Gauge:
        name: str
        value: int = 0


def test_every_door_is_timed_by_model_and_action(db):
    declare(db)
    g = db.create("Gauge", name="a", value=1)
    db.read("Gauge", g["id"])
    db.update("Gauge", g["id"], {"value": 2})
    db.list("Gauge")
    db.count("Gauge")
    db.aggregate("Gauge", [{"$group": {"_id": None, "s": {"$sum": "$value"}}}])
    db.upsert("Gauge", {"name": "b"}, {"value": 3})
    db.bulk_create("Gauge", [{"name": "c"}, {"name": "d"}])
    db.bulk_update("Gauge", {"name": "c"}, {"value": 9})
    db.bulk_upsert("Gauge", [{"id": g["id"], "name": "a", "value": 5}])
    db.query("Gauge").where({"value": {"$gte": 0}}).all()
    db.query("Gauge").count()
    wf = WorkflowBuilder()
    wf.add_node("GaugeCreateNode", "make", {"name": "from-node"})
    wf.add_node("GaugeListNode", "all", {"filter": {}})
    with LocalRuntime() as rt:
        rt.execute(wf.build())
    db.bulk_delete("Gauge", {"name": "d"})
    db.delete("Gauge", g["id"])
    stats = db.metrics.to_dict()
    expected = {"Gauge.create": 2, "Gauge.read": 1, "Gauge.update": 1, "Gauge.list": 3, "Gauge.count": 2,
                "Gauge.aggregate": 1, "Gauge.upsert": 1, "Gauge.bulk_create": 1, "Gauge.bulk_update": 1,
                "Gauge.bulk_upsert": 1, "Gauge.bulk_delete": 1, "Gauge.delete": 1}
    assert {name: s["count"] for name, s in stats.items()} == expected
    assert all(s["errors"] == 0 for s in stats.values())
    for s in stats.values():
        assert set(s) == {"count", "avg", "p50", "p95", "p99", "max", "errors"}
        assert 0 <= s["p50"] <= s["p95"] <= s["p99"] <= s["max"]


def test_failures_are_counted_as_errors(db):
    declare(db)
    with pytest.raises(NotFoundError):
        db.read("Gauge", 12345)
    assert db.read("Gauge", 12345, raise_on_not_found=False) is None
    stats = db.metrics.to_dict()["Gauge.read"]
    assert (stats["count"], stats["errors"]) == (2, 1)
    assert "Errors: 1" in db.metrics.summary()


def test_benchmark_records_a_named_timing_and_errors(db):
    declare(db)
    with db.benchmark("complex_query"):
        db.query("Gauge").where({"value": {"$gt": 0}}).aggregate([{"$group": {"_id": "$name", "n": {"$sum": 1}}}])
    with pytest.raises(ZeroDivisionError):
        with db.benchmark("complex_query"):
            raise ZeroDivisionError("in the measured block")
    s = db.metrics.to_dict()["complex_query"]
    assert (s["count"], s["errors"]) == (2, 1)
    line = [x for x in db.metrics.summary().splitlines() if x.startswith("Query: complex_query")][0]
    assert re.fullmatch(r"Query: complex_query - Avg: [0-9.]+ms, P95: [0-9.]+ms, Count: 2, Errors: 1", line)


def test_summary_format_and_percentiles_on_known_timings():
    m = Metrics()
    for ms in range(1, 101):
        m.record("complex_query", ms / 1000)
    d = m.to_dict()["complex_query"]
    assert (d["count"], d["errors"]) == (100, 0)
    assert d["avg"] == pytest.approx(50.5)
    assert (d["p50"], d["p95"], d["p99"], d["max"]) == pytest.approx((50, 95, 99, 100))
    for _ in range(1147):
        m.record("complex_query", 0.045)
    assert m.summary() == "Query: complex_query - Avg: 45ms, P95: 45ms, Count: 1,247"
    m.record("tiny", 0.00042)
    assert m.summary().splitlines()[1] == "Query: tiny - Avg: 0.42ms, P95: 0.42ms, Count: 1"


def test_operations_inside_a_rolled_back_transaction_are_still_timed(db):
    declare(db)
    with pytest.raises(RuntimeError):
        with db.transaction():
            db.create("Gauge", name="x")
            raise RuntimeError("undo")
    assert db.metrics.to_dict()["Gauge.create"]["count"] == 1
    assert db.count("Gauge") == 0


def test_slow_operations_are_logged_with_sql_never_values(db_url, caplog):
    with DataFlow(db_url, slow_query_ms=0.0001) as db:
        declare(db)
        db.create("Gauge", name="sekrit-value-4711", value=1)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dataflow.slow"):
            db.list("Gauge", {"name": "sekrit-value-4711"})
            db.update("Gauge", {"name": "sekrit-value-4711"}, {"value": 987654321})
        text = caplog.text
        assert "slow operation: Gauge list" in text and "SELECT" in text and "FROM gauges" in text
        assert "slow operation: Gauge update" in text and '{"name": "?"}' in text
        assert "sekrit" not in text and "987654321" not in text


def test_no_slow_log_by_default(db, caplog):
    declare(db)
    with caplog.at_level(logging.WARNING, logger="dataflow.slow"):
        db.create("Gauge", name="a")
    assert "slow operation" not in caplog.text


def _get(app, path: str) -> tuple[int, dict, str]:
    """One GET through an ASGI app, in-process: (status, headers, body)."""
    sent: list = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:]).decode()


def _exposition(db: DataFlow) -> str:
    """GET /metrics through the ASGI app the web layer mounts."""
    status, headers, body = _get(db.metrics_endpoint(), "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return body


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_series_for_operations_cache_and_pool(db_url):
    with DataFlow(db_url, enable_metrics=True) as db:
        declare(db)
        before = _exposition(db)
        db.create("Gauge", name="a")
        db.count("Gauge", cache=True)
        db.count("Gauge", cache=True)
        with pytest.raises(NotFoundError):
            db.read("Gauge", 999)
        text = _exposition(db)
    ok = {"model": "Gauge", "action": "create", "outcome": "ok"}
    assert _sample(text, "dataflow_operations_total", **ok) == _sample(before, "dataflow_operations_total", **ok) + 1
    err = {"model": "Gauge", "action": "read", "outcome": "error"}
    assert _sample(text, "dataflow_operations_total", **err) == _sample(before, "dataflow_operations_total", **err) + 1
    assert _sample(text, "dataflow_operation_duration_seconds_count", model="Gauge", action="count") >= 2
    assert _sample(text, "dataflow_cache_requests_total", result="hit") >= 1
    assert _sample(text, "dataflow_cache_requests_total", result="miss") >= 1
    assert "dataflow_pool_connections{" in text


def test_metrics_endpoint_needs_enable_metrics(db):
    from dataflow import SettingError

    with pytest.raises(SettingError, match="enable_metrics"):
        db.metrics_endpoint()
    assert db.metrics.prometheus is None


def test_enable_metrics_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATAFLOW_ENABLE_METRICS", "true")
    with DataFlow("sqlite://") as db:
        assert db.config.enable_metrics is True
        assert db.metrics.prometheus is not None


WORKER = textwrap.dedent("""
    import sys
    from dataflow import DataFlow
    db = DataFlow(sys.argv[1], enable_metrics=True)

    @db.model
    class Gauge:
        name: str
        value: int = 0

    for i in range(int(sys.argv[2])):
        db.create("Gauge", name=f"w{i}")
    if len(sys.argv) > 3:
        from dataflow.metrics import prometheus_exposition
        sys.stdout.write(prometheus_exposition(db)[0].decode())
    db.close()
""")


def test_prometheus_multiprocess_mode_adds_up_every_worker(tmp_path):
    url = f"sqlite:///{tmp_path / 'mp.db'}"
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom_dir), "PYTHONPATH": str(SRC)}
    env.pop("DATAFLOW_ENABLE_METRICS", None)
    for n in (3, 4):
        subprocess.run([sys.executable, str(script), url, str(n)], env=env, check=True, timeout=120)
    out = subprocess.run([sys.executable, str(script), url, "0", "show"], env=env, check=True, timeout=120,
                         capture_output=True, text=True).stdout
    assert _sample(out, "dataflow_operations_total", model="Gauge", action="create", outcome="ok") == 7


def test_the_web_layer_serves_metrics_when_enabled(db_url):
    with DataFlow(db_url, enable_metrics=True) as db:
        declare(db)
        db.create("Gauge", name="a")
        status, headers, body = _get(db.asgi, "/metrics")
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert _sample(body, "dataflow_operations_total", model="Gauge", action="create", outcome="ok") >= 1
    with DataFlow(db_url) as db:
        declare(db)
        assert _get(db.asgi, "/metrics")[0] == 404
