"""Review: cached reads pinned to a partition must never outlive a write that changes their answer."""

from __future__ import annotations

from typing import Annotated, Optional

import sqlalchemy as sa

from dataflow import DataFlow, Field

DDL = {
    # A table someone else made, with the database's usual string comparison (not ours): SQLite
    # NOCASE, MariaDB's default case-insensitive collation. PostgreSQL compares exactly either way.
    "sqlite": "CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, code VARCHAR(40) COLLATE NOCASE UNIQUE, "
              "value INTEGER NOT NULL DEFAULT 0)",
    "mysql": "CREATE TABLE items (id INTEGER PRIMARY KEY AUTO_INCREMENT, code VARCHAR(40) UNIQUE, "
             "value INTEGER NOT NULL DEFAULT 0) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    "postgresql": "CREATE TABLE items (id SERIAL PRIMARY KEY, code VARCHAR(40) UNIQUE, value INTEGER NOT NULL DEFAULT 0)",
}


def test_existing_table_with_a_case_insensitive_collation_never_serves_a_stale_pinned_read(db_url):
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        with db.engine.begin() as conn:
            conn.execute(sa.text(DDL["mysql" if db.engine.dialect.name == "mariadb" else db.engine.dialect.name]))

        @db.model
        class Item:
            code: Annotated[Optional[str], Field(unique=True)] = None
            value: int = 0
            __tablename__ = "items"

        assert db.count("Item", {"code": "abc"}, cache=True) == 0
        db.create("Item", code="ABC", value=1)
        fresh = db.count("Item", {"code": "abc"}, cache=False)
        assert db.count("Item", {"code": "abc"}, cache=True) == fresh
        assert db.read("Item", filter={"code": "abc"}, raise_on_not_found=False, cache=True) == \
            db.read("Item", filter={"code": "abc"}, raise_on_not_found=False, cache=False)
    finally:
        db.close()


PK_DDL = {
    "sqlite": "CREATE TABLE codes (id VARCHAR(40) COLLATE NOCASE PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0)",
    "mysql": "CREATE TABLE codes (id VARCHAR(40) PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0) "
             "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    "postgresql": "CREATE TABLE codes (id VARCHAR(40) PRIMARY KEY, value INTEGER NOT NULL DEFAULT 0)",
}


def test_existing_table_with_a_string_key_compared_case_insensitively_never_serves_a_stale_read_by_id(db_url):
    db = DataFlow(db_url, existing_schema_mode=True)
    try:
        with db.engine.begin() as conn:
            conn.execute(sa.text(PK_DDL["mysql" if db.engine.dialect.name == "mariadb" else db.engine.dialect.name]))

        @db.model
        class Code:
            id: str
            value: int = 0
            __tablename__ = "codes"

        db.create("Code", id="ABC", value=1)
        assert db.read("Code", "abc", cache=True, raise_on_not_found=False) == \
            db.read("Code", "abc", cache=False, raise_on_not_found=False)
        db.update("Code", "ABC", {"value": 2})  # the record "abc" finds, where the database ignores case
        assert db.read("Code", "abc", cache=True, raise_on_not_found=False) == \
            db.read("Code", "abc", cache=False, raise_on_not_found=False)
    finally:
        db.close()
