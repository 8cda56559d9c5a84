"""Fixtures for the schema lifecycle tests."""

from __future__ import annotations

import pytest

from dataflow.core.config import DataFlowConfig
from dataflow.core.engine import create_engine


@pytest.fixture
def engine(db_url):
    """DataFlow's engine for the test database (SQLite: foreign keys on, as in production)."""
    eng = create_engine(DataFlowConfig(database_url=db_url))
    yield eng
    eng.dispose()
