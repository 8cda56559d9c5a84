"""Metrics: every operation timed by model and action (count, errors, latency), slow ones logged.

The timing is the executor's (plan to result, retries included). ``at_commit = False``: an
operation inside ``db.transaction()`` is timed when it ran, whether the block commits or not.
Slow operations (``slow_query_ms``) are logged with their SQL text and the shape of their filter,
never with parameter values.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..call import Call
from ..policy import Policy

if TYPE_CHECKING:
    from ...metrics import Metrics

log = logging.getLogger("dataflow.slow")


class MetricsPolicy(Policy):
    name = "metrics"
    at_commit = False

    def __init__(self, metrics: "Metrics", slow_query_ms: float | None = None, database: str = "") -> None:
        self.metrics = metrics
        self.slow = slow_query_ms / 1000.0 if slow_query_ms else None
        self.database = database

    def after_commit(self, call: Call, result: Any, elapsed: float) -> None:
        self._record(call, elapsed, False)

    def failed(self, call: Call, error: BaseException, elapsed: float) -> None:
        self._record(call, elapsed, True)

    def _record(self, call: Call, elapsed: float, error: bool) -> None:
        model, action = call.binding.name, call.action
        self.metrics.record(f"{model}.{action}", elapsed, error=error)
        prom = self.metrics.prometheus
        if prom is not None:
            prom.operation(model, action, elapsed, error)
        if self.slow is not None and elapsed >= self.slow:
            self._log_slow(call, elapsed)

    def _log_slow(self, call: Call, elapsed: float) -> None:
        from ..base import _shape

        sql = call.state.get("sql")
        log.warning("slow operation: %s %s took %.1f ms (slow_query_ms=%g); filter %s; SQL: %s",
                    call.binding.name, call.action, elapsed * 1000, (self.slow or 0) * 1000,
                    _shape(call.filter) if call.filter else "{}",
                    " ".join(sql.split()) if sql else "(several statements)",
                    extra={"model": call.binding.name, "action": call.action, "elapsed_ms": elapsed * 1000})
