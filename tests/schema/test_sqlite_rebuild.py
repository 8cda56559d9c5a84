"""SQLite rebuilds a table to alter it: referencing rows must survive, with foreign keys on."""

from __future__ import annotations

from typing import Annotated

import pytest
import sqlalchemy as sa
from schema_helpers import migrator, rows

from dataflow import Field, MigrationError
from dataflow.core.config import DataFlowConfig
from dataflow.core.engine import create_engine


@pytest.fixture
def sqlite_engine(tmp_path):
    eng = create_engine(DataFlowConfig(database_url=f"sqlite:///{tmp_path / 'rebuild.db'}"))
    yield eng
    eng.dispose()


def first_models():
    class Author:
        name: Annotated[str, Field(max_length=50)]
        legacy: str = ""

    class Post:
        title: str
        author_id: Annotated[int, Field(references="Author", on_delete="cascade")]

    return Author, Post


def test_rebuilding_a_referenced_table_keeps_the_rows_that_reference_it(sqlite_engine):
    eng = sqlite_engine
    Author, Post = first_models()
    migrator(eng, Author, Post).apply()
    with eng.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # cascades would fire
        conn.exec_driver_sql("INSERT INTO authors (name, legacy) VALUES ('ada', 'x'), ('bob', 'y')")
        conn.exec_driver_sql("INSERT INTO posts (title, author_id) VALUES ('p1', 1), ('p2', 1), ('p3', 2)")

    class Author:  # noqa: F811 - widen name and drop legacy: both need a rebuild of authors on SQLite
        name: Annotated[str, Field(max_length=200)]

    plan = migrator(eng, Author, Post).apply(allow_destructive=True)
    assert any(s.startswith("DROP TABLE authors") for s in plan.sql), plan.sql
    assert [r["title"] for r in rows(eng, "posts")] == ["p1", "p2", "p3"]
    assert [r["name"] for r in rows(eng, "authors")] == ["ada", "bob"]
    assert migrator(eng, Author, Post).plan().is_empty
    with eng.begin() as conn:  # foreign keys are enforced again afterwards
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        conn.exec_driver_sql("DELETE FROM authors WHERE id = 1")
    assert [r["title"] for r in rows(eng, "posts")] == ["p3"]


def test_a_rebuild_that_would_break_references_is_rolled_back(sqlite_engine):
    eng = sqlite_engine
    Author, Post = first_models()
    migrator(eng, Author, Post).apply()
    with eng.begin() as conn:
        conn.exec_driver_sql("INSERT INTO authors (name, legacy) VALUES ('ada', 'x')")
        conn.exec_driver_sql("INSERT INTO posts (title, author_id) VALUES ('p1', 1)")

    class Renamed:
        name: str
        __dataflow__ = {"table": "writers"}

    class Post:  # noqa: F811 - now points at a table without author 1
        title: str
        author_id: Annotated[int, Field(references="Renamed", on_delete="cascade")]

    with pytest.raises(MigrationError, match=r"1 row\(s\) breaking foreign keys \(1 row\(s\) posts -> writers\)"):
        migrator(eng, Author, Renamed, Post).apply()
    with eng.connect() as conn:
        assert "writers" not in sa.inspect(conn).get_table_names()
        assert conn.exec_driver_sql("SELECT count(*) FROM posts").scalar() == 1
