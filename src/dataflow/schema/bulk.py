"""Bulk loading at the driver's speed: COPY on PostgreSQL, one prepared executemany elsewhere.

SQLAlchemy compiles the INSERT once; values go through each column's own bind processing
(UTC datetimes, quantized decimals, JSON) column by column, a repeated value once, and not
through SQLAlchemy's per-row parameter machinery, which on a 100,000-row load costs more
than the database itself.

Given ``step`` (a progress reporter's), a load goes in chunks of ``chunk`` rows and calls
``step(n)`` after each: executemany runs once per chunk; COPY stays one stream, and ``step`` is
called as each chunk has been written into it (the last once the server has accepted the stream).
"""

from __future__ import annotations

import copy
from itertools import islice, repeat
from typing import Any, Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa


def _processed(dialect: sa.Dialect, table: sa.Table, keys: Sequence[str], columns: Sequence) -> list:
    out = []
    for k, col in zip(keys, columns):
        proc = table.c[k].type.dialect_impl(dialect).bind_processor(dialect)
        if proc is None:
            out.append(col)
        elif isinstance(col, repeat):
            out.append(_repeat_processed(col, proc))  # one value: process it once
        else:
            out.append(list(map(_none_safe(proc), col)))
    return out


def _none_safe(proc):
    def run(v: Any) -> Any:
        return None if v is None else proc(v)
    return run


def _repeat_processed(col: repeat, proc) -> repeat:
    n = col.__length_hint__()
    value = next(col, None) if n else None
    return repeat(None if value is None else proc(value), n)


Step = Callable[[int], None]


def _batched(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


def _pg_copy(conn: sa.Connection, table: sa.Table, keys: Sequence[str], columns: Sequence,
             step: Step | None = None, chunk: int = 0) -> None:
    quote = conn.dialect.identifier_preparer.quote
    raw = conn.connection.driver_connection  # psycopg.Connection, inside our transaction
    sql = f"COPY {quote(table.name)} ({', '.join(quote(k) for k in keys)}) FROM STDIN"
    cols = _processed(conn.dialect, table, keys, columns)
    if step is None:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            write = copy.write_row
            for values in zip(*cols):
                write(values)
        return
    pending = 0  # the chunk written last is reported once the stream is accepted
    with raw.cursor() as cur, cur.copy(sql) as copy:
        write = copy.write_row
        for batch in _batched(zip(*cols), chunk):
            if pending:
                step(pending)
            for values in batch:
                write(values)
            pending = len(batch)
    if pending:
        step(pending)


def positional_dialect(dialect: sa.Dialect) -> sa.Dialect:
    """The dialect itself if its paramstyle is positional; else a twin that compiles ``%s``.

    The twin is a copy of the connected dialect (server version, RETURNING support and all), so
    it compiles the same SQL with positional placeholders, which psycopg and PyMySQL both take.
    """
    if dialect.positional:
        return dialect
    twin = dialect.__dict__.get("_dataflow_positional")
    if twin is None:
        twin = copy.copy(dialect)
        twin.paramstyle, twin.positional = "format", True
        dialect.__dict__["_dataflow_positional"] = twin
    return twin


def _executemany(conn: sa.Connection, table: sa.Table, keys: Sequence[str], columns: Sequence,
                 step: Step | None = None, chunk: int = 0) -> None:
    compiled = table.insert().compile(dialect=positional_dialect(conn.dialect), column_keys=list(keys))
    order = list(compiled.positiontup)
    by_key = dict(zip(keys, columns))
    cols = _processed(conn.dialect, table, order, [by_key[k] for k in order])
    if step is None:
        conn.exec_driver_sql(str(compiled), list(zip(*cols)))
        return
    sql = str(compiled)
    for batch in _batched(zip(*cols), chunk):
        conn.exec_driver_sql(sql, batch)
        step(len(batch))


#: The bulk path of each backend.
PATHS = {"postgresql": _pg_copy, "sqlite": _executemany, "mysql": _executemany}


def insert_columns(backend: str, conn: sa.Connection, table: sa.Table, keys: Sequence[str],
                   columns: Sequence, *, watched: bool = False, step: Step | None = None, chunk: int = 5000) -> None:
    """Insert rows given column-wise (lists, or ``repeat`` for one value) by the fastest path.

    ``watched``: someone logs or listens to statements (``echo``, cursor events): COPY runs outside
    SQLAlchemy's execution, so the executemany path is taken instead, which both see.
    ``step``: called with the number of rows after each ``chunk`` of them (see the module's notes).
    """
    if keys:
        (_executemany if watched else PATHS[backend])(conn, table, keys, columns, step, max(1, chunk))


def insert_rows(backend: str, conn: sa.Connection, table: sa.Table, keys: Sequence[str], rows: list[dict],
                *, watched: bool = False, step: Step | None = None, chunk: int = 5000) -> None:
    """Insert ``rows`` (dicts that all carry exactly ``keys``) by the fastest path."""
    if rows:
        insert_columns(backend, conn, table, keys, [[r[k] for r in rows] for k in keys], watched=watched,
                       step=step, chunk=chunk)
