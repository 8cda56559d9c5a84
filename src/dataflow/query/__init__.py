"""MongoDB-style queries compiled to SQLAlchemy: filters, sorts and aggregation pipelines."""

from .dates import resolve_date
from .filters import Filter, all_of, compile_filter
from .pipeline import Pipeline, compile_pipeline
from .sorting import compile_sort

__all__ = ["Filter", "Pipeline", "all_of", "compile_filter", "compile_pipeline", "compile_sort", "resolve_date"]
