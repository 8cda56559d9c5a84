"""Fixtures for the query tests: a SQLAlchemy engine on the database under test."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from dfq_support import engine_for


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    """An engine on the empty test database, with DataFlow's SQLite functions registered."""
    eng = engine_for(db_url)
    yield eng
    eng.dispose()
