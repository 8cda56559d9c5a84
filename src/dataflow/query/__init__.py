"""MongoDB-style queries compiled to SQLAlchemy: filters, sorts and aggregation pipelines.

- ``compile_filter(table, filter)`` -> ``Filter`` (``.clause``, ``.params``), cached by shape
- ``compile_sort(table, sort)`` -> ORDER BY expressions
- ``compile_pipeline(table, pipeline, base=...)`` -> ``Pipeline`` (``.statement``, ``.params``,
  ``.shape(rows)``)
- ``sqlite_functions.register(dbapi_connection)`` on every SQLite connection
- ``resolve_date({"$date": "-5m"})`` -> aware UTC datetime
"""

from .dates import resolve_date
from .filters import Filter, all_of, cache_info, compile_filter
from .pipeline import Pipeline, compile_pipeline
from .sorting import compile_sort

__all__ = ["Filter", "Pipeline", "all_of", "cache_info", "compile_filter", "compile_pipeline", "compile_sort",
           "resolve_date"]
