"""What DataFlow sends to the driver: the SQL and parameters of a call, for the raw-driver baselines."""

from __future__ import annotations

from typing import Callable

import sqlalchemy as sa
from dataflow.prepared import Prepared


def captured(engine: sa.Engine, call: Callable[[], object], table: str) -> tuple[str, object]:
    """The last SELECT on ``table`` that ``call`` sends to the driver, and its parameters.

    Statements run through SQLAlchemy are seen by its ``before_cursor_execute`` event; statements
    DataFlow prepared once per shape (``dataflow.prepared``) by wrapping ``Prepared.bound``.
    """
    seen: list[tuple[str, object]] = []

    def wanted(sql: str) -> bool:
        return sql.lstrip().upper().startswith("SELECT") and table in sql

    def on_execute(conn, cursor, sql, params, context, executemany):  # noqa: ANN001
        if wanted(sql):
            seen.append((sql, params))

    original = Prepared.bound

    def grab(prepared, params):  # noqa: ANN001
        sql, values = original(prepared, params)
        if wanted(sql):
            seen.append((sql, values))
        return sql, values

    sa.event.listen(engine, "before_cursor_execute", on_execute)
    Prepared.bound = grab
    try:
        call()
    finally:
        Prepared.bound = original
        sa.event.remove(engine, "before_cursor_execute", on_execute)
    if not seen:
        raise RuntimeError("benchmark check failed: no SELECT captured")
    return seen[-1]
