"""Timings of every operation and of named blocks: ``app.metrics``, ``app.benchmark(name)``, Prometheus.

``Metrics`` keeps, per name, a count, an error count, the sum and maximum of the durations and the
most recent durations (a bounded window) from which the percentiles come. Operations are named
``<Model>.<action>`` (``User.list``) by the metrics policy; ``with app.benchmark("complex_query"):``
records under its own name. ``summary()`` prints one line per name in the seed's format::

    Query: complex_query - Avg: 45ms, P95: 120ms, Count: 1,247

With ``enable_metrics=True`` the same events also feed prometheus-client series (operations,
cache, connection pool), served by ``prometheus_exposition()`` (the web layer mounts it at
``/metrics``). When ``PROMETHEUS_MULTIPROC_DIR`` is set before DataFlow is imported, the series are
kept in that directory (prometheus-client's multiprocess mode) and the exposition adds up every
worker process.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

#: Durations kept per name for the percentiles (count, sum, max and errors cover every event).
WINDOW = 10_000


class Series:
    """The timings of one name."""

    __slots__ = ("count", "errors", "total", "max", "recent")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.total = 0.0
        self.max = 0.0
        self.recent: deque[float] = deque(maxlen=WINDOW)

    def add(self, seconds: float, error: bool) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if error:
            self.errors += 1
        self.recent.append(seconds)

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.recent)
        ms = 1000.0
        return {"count": self.count, "errors": self.errors,
                "avg": self.total / self.count * ms if self.count else 0.0,
                "p50": _percentile(ordered, 50) * ms, "p95": _percentile(ordered, 95) * ms,
                "p99": _percentile(ordered, 99) * ms, "max": self.max * ms}


def _percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}ms"
    if value >= 1:
        return f"{value:.1f}ms"
    return f"{value:.2f}ms"


class Metrics:
    """Timings by name for one ``DataFlow`` instance (thread-safe). Durations are reported in ms."""

    def __init__(self, prometheus: bool = False) -> None:
        self._series: dict[str, Series] = {}
        self._lock = threading.Lock()
        self.prometheus = prometheus_series() if prometheus else None

    def record(self, name: str, seconds: float, *, error: bool = False) -> None:
        """Add one timing under ``name``."""
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = Series()
            series.add(seconds, error)

    @contextmanager
    def benchmark(self, name: str) -> Iterator[None]:
        """Time the block under ``name``; an exception counts as an error (and propagates)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a benchmark needs a non-empty name")
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.record(name, time.perf_counter() - started, error=True)
            if self.prometheus is not None:
                self.prometheus.benchmark(name, time.perf_counter() - started)
            raise
        elapsed = time.perf_counter() - started
        self.record(name, elapsed)
        if self.prometheus is not None:
            self.prometheus.benchmark(name, elapsed)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._series)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {count, avg, p50, p95, p99, max, errors}}``, durations in milliseconds."""
        with self._lock:
            items = [(name, s.stats()) for name, s in self._series.items()]
        return {name: {k: stats[k] for k in ("count", "avg", "p50", "p95", "p99", "max", "errors")}
                for name, stats in items}

    def summary(self) -> str:
        """One line per name: ``Query: complex_query - Avg: 45ms, P95: 120ms, Count: 1,247``."""
        lines = []
        for name, s in self.to_dict().items():
            line = f"Query: {name} - Avg: {_ms(s['avg'])}, P95: {_ms(s['p95'])}, Count: {s['count']:,}"
            if s["errors"]:
                line += f", Errors: {s['errors']:,}"
            lines.append(line)
        return "\n".join(lines)

    def reset(self) -> None:
        with self._lock:
            self._series.clear()

    def __repr__(self) -> str:
        return f"<Metrics {len(self._series)} names>"


# ---------------------------------------------------------------------- Prometheus
class PrometheusSeries:
    """The prometheus-client metrics DataFlow exports (one set per process, shared by instances)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the values live in files and the exposition collects them from there;
        # a private registry keeps our series apart from the application's own in both modes.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = None if self.multiprocess else self.registry
        buckets = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
        self.operations = Counter("dataflow_operations_total", "DataFlow operations by model, action and outcome",
                                  ["model", "action", "outcome"], registry=reg)
        self.latency = Histogram("dataflow_operation_duration_seconds", "DataFlow operation latency",
                                 ["model", "action"], buckets=buckets, registry=reg)
        self.benchmarks = Histogram("dataflow_benchmark_duration_seconds", "Named app.benchmark() blocks",
                                    ["name"], buckets=buckets, registry=reg)
        self.cache = Counter("dataflow_cache_requests_total", "Query cache look-ups by result",
                             ["result"], registry=reg)
        self.cache_errors = Counter("dataflow_cache_errors_total", "Cache backend failures (ran uncached)",
                                    registry=reg)
        gauge_mode = {"multiprocess_mode": "livesum"} if self.multiprocess else {}
        self.pool = Gauge("dataflow_pool_connections", "Database pool connections by state",
                          ["database", "state"], registry=reg, **gauge_mode)

    def operation(self, model: str, action: str, seconds: float, error: bool) -> None:
        self.operations.labels(model, action, "error" if error else "ok").inc()
        self.latency.labels(model, action).observe(seconds)

    def benchmark(self, name: str, seconds: float) -> None:
        self.benchmarks.labels(name).observe(seconds)

    def cache_result(self, result: str) -> None:
        self.cache.labels(result).inc()

    def pool_state(self, database: str, stats: dict[str, Any]) -> None:
        for state in ("checked_out", "checked_in", "overflow"):
            value = stats.get(state)
            if isinstance(value, int):
                self.pool.labels(database, state).set(value)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_PROMETHEUS: PrometheusSeries | None = None
_PROMETHEUS_LOCK = threading.Lock()


def prometheus_series() -> PrometheusSeries:
    """The process's DataFlow series (created on first use; needs prometheus-client)."""
    global _PROMETHEUS
    with _PROMETHEUS_LOCK:
        if _PROMETHEUS is None:
            try:
                _PROMETHEUS = PrometheusSeries()
            except ImportError:
                from .errors import SettingError

                raise SettingError("enable_metrics needs prometheus-client: pip install "
                                   "'dataflow-workflows[metrics]'") from None
        return _PROMETHEUS


def prometheus_exposition(db: "DataFlow | None" = None) -> tuple[bytes, str]:
    """The ``/metrics`` response body and content type (pool series refreshed for ``db`` first)."""
    series = prometheus_series()
    if db is not None:
        series.pool_state(db.safe_url, db.pool_stats())
    return series.exposition()


def asgi_app(db: "DataFlow"):
    """A minimal ASGI app answering GET with the Prometheus exposition (mount it at ``/metrics``)."""
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, content_type = prometheus_exposition(db)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type.encode())]})
        await send({"type": "http.response.body", "body": body})
    return app


__all__ = ["Metrics", "Series", "PrometheusSeries", "prometheus_series", "prometheus_exposition", "asgi_app"]
