"""Create, read, update, delete, list, count, upsert and the bulk forms: the one place that runs SQL.

Nodes, the fluent query API and the web layer all call these methods. Every method runs in one
transaction; a bulk method is all-or-nothing. Results are records of native Python values.
"""


from .base import DEFAULT_BATCH, DEFAULT_LIMIT, ON_CONFLICT
from .bulk import BulkOperations
from .records import RecordOperations


class Operations(RecordOperations, BulkOperations):
    """The operations layer of one ``DataFlow`` instance."""


__all__ = ["Operations", "DEFAULT_BATCH", "DEFAULT_LIMIT", "ON_CONFLICT"]
