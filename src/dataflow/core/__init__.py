"""The ``DataFlow`` facade and its configuration."""

from .config import DataFlowConfig
from .dataflow import DataFlow

__all__ = ["DataFlow", "DataFlowConfig"]
