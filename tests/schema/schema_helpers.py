"""Helpers for the schema lifecycle tests: models -> (metadata, specs), reading tables back."""

from __future__ import annotations

import sqlalchemy as sa

from dataflow.models import spec_from_class
from dataflow.schema.migrate import Migrator
from dataflow.schema.tables import build_table


def models(*classes: type) -> tuple[sa.MetaData, dict]:
    """The MetaData and specs DataFlow would build for ``classes``."""
    specs = {cls.__name__: spec_from_class(cls) for cls in classes}
    metadata = sa.MetaData()
    for spec in specs.values():
        build_table(spec, metadata, specs.__getitem__)
    return metadata, specs


def migrator(engine: sa.Engine, *classes: type, **kw) -> Migrator:
    metadata, specs = models(*classes)
    return Migrator(engine, metadata, specs, **kw)


def rows(engine: sa.Engine, table: str, order: str = "id") -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}")).mappings()]


def columns(engine: sa.Engine, table: str) -> dict[str, dict]:
    return {c["name"]: c for c in sa.inspect(engine).get_columns(table)}


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())
