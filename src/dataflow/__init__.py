"""DataFlow: declare a model once; get its tables and Kailash workflow nodes.

Public names: ``DataFlow``, ``DataFlowConfig``, ``Field`` and the exception tree.
"""

from .core.config import DataFlowConfig
from .core.dataflow import DataFlow
from .errors import (AbortedError, ConflictError, DatabaseError, DatabaseUnavailableError, DataFlowError, DuplicateKeyError,
                     FilterError, ForbiddenError, ForeignKeyError, IntegrityError, MigrationError, ModelError, NotFoundError,
                     PoolTimeoutError, SettingError, TenantError, TransactionError, ValidationError)
from .models import Field
from .transaction_node import DataFlowTransactionNode

__version__ = "0.1.0"

__all__ = [
    "DataFlow", "DataFlowConfig", "Field", "DataFlowError", "ModelError", "ValidationError", "FilterError",
    "NotFoundError", "IntegrityError", "DuplicateKeyError", "ForeignKeyError", "ConflictError",
    "MigrationError", "DatabaseError", "DatabaseUnavailableError", "SettingError", "TenantError",
    "ForbiddenError", "PoolTimeoutError", "TransactionError", "AbortedError", "DataFlowTransactionNode",
]
