"""Schema lifecycle pieces that need no database: type comparison per dialect, plans, checksums."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated
from uuid import UUID

import pytest
import sqlalchemy as sa
from schema_helpers import models
from sqlalchemy.dialects import mysql, postgresql, sqlite

from dataflow import Field
from dataflow.schema.diff import compare_types, type_info
from dataflow.schema.migrate import Change, MigrationPlan, model_checksum
from dataflow.schema.types import column_type

PG, MY, LITE = postgresql.dialect(), mysql.dialect(), sqlite.dialect()
MARIA = mysql.dialect(is_mariadb=True)
DIALECTS = {"postgresql": PG, "mysql": MY, "mariadb": MARIA, "sqlite": LITE}


@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
@pytest.mark.parametrize("pytype", [int, str, bool, float, Decimal, datetime, date, UUID, bytes, dict])
def test_every_model_type_equals_itself(dialect, pytype):
    t = column_type(pytype)
    assert compare_types(t, t, dialect) == "same"


@pytest.mark.parametrize("old, new, dialect, verdict", [
    (sa.String(100), sa.String(255), PG, "widen"),
    (sa.String(255), sa.String(100), PG, "narrow"),
    (sa.String(255), column_type(str, max_length=None), MY, "widen"),      # VARCHAR -> LONGTEXT
    (sa.String(255), column_type(str, max_length=None), MARIA, "widen"),
    (sa.Text(), sa.String(255), PG, "narrow"),
    (sa.Integer(), sa.BigInteger(), MY, "widen"),
    (mysql.INTEGER(display_width=11), mysql.INTEGER(), MY, "same"),       # display width is no size
    (sa.BigInteger(), sa.Integer(), PG, "narrow"),
    (sa.Numeric(10, 2), sa.Numeric(12, 2), PG, "widen"),
    (sa.Numeric(10, 2), sa.Numeric(12, 4), PG, "widen"),
    (sa.Numeric(12, 4), sa.Numeric(10, 2), MY, "narrow"),
    (sa.Numeric(10, 2), sa.Numeric(10, 4), PG, "convert"),                 # more scale, fewer digits
    (sa.String(20), sa.BigInteger(), PG, "incompatible"),
    (mysql.LONGTEXT(), sa.JSON(), MARIA, "same"),                          # MariaDB's JSON
    (mysql.LONGTEXT(), sa.JSON(), MY, "incompatible"),                     # real MySQL has JSON
    (mysql.TINYINT(display_width=1), sa.Boolean(), MY, "same"),
    (postgresql.JSON(), postgresql.JSONB(), PG, "convert"),
    (postgresql.TIMESTAMP(), postgresql.TIMESTAMP(timezone=True), PG, "convert"),
    (mysql.DATETIME(), mysql.DATETIME(fsp=6), MY, "widen"),
    (sa.CHAR(36), postgresql.UUID(), PG, "incompatible"),
    (sa.Float(), sa.Double(), MY, "widen"),
])
def test_type_changes_are_classified(old, new, dialect, verdict):
    assert compare_types(old, new, dialect) == verdict


def test_type_info_strips_collation_and_display_width():
    assert type_info(mysql.VARCHAR(20, collation="utf8mb4_bin"), MY).text == "VARCHAR(20)"
    assert type_info(mysql.BIGINT(display_width=20), MY).text == "BIGINT"
    assert type_info(postgresql.DOUBLE_PRECISION(), PG).family == "float"


def test_plan_text_lists_changes_sql_and_what_is_left():
    empty = MigrationPlan("sqlite", [], [], [], "c")
    assert empty.is_empty and str(empty) == "No changes: the sqlite database matches the models."
    plan = MigrationPlan("postgresql", ["add column t.a"], ["ALTER TABLE t ADD COLUMN a TEXT"],
                         [Change("drop column t.b: data lost", ("ALTER TABLE t DROP COLUMN b",))], "c")
    text = str(plan)
    assert not plan.is_empty
    assert "Would apply 1 change(s) on postgresql:\n  - add column t.a" in text
    assert "  ALTER TABLE t ADD COLUMN a TEXT;" in text
    assert "1 destructive change(s) NOT applied" in text
    assert "  - drop column t.b: data lost\n      ALTER TABLE t DROP COLUMN b;" in text


def test_checksum_follows_the_model_state_only():
    class Member:
        name: str

    first = model_checksum(models(Member)[0])
    assert model_checksum(models(Member)[0]) == first

    class Member:  # noqa: F811
        name: Annotated[str, Field(max_length=300)]

    assert model_checksum(models(Member)[0]) != first
