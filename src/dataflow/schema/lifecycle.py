"""Bring a database up to date with the models (auto_migrate) or check it (existing_schema_mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy.exc as sa_exc

from ..driver_errors import translate
from .existing import check_existing
from .migrate import MigrationPlan, Migrator

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow


def connect_check(db: "DataFlow") -> None:
    """One round trip, so an unreachable database fails here with a clear ``DatabaseError``."""
    try:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
        raise translate(exc, action="connect", where=db.safe_url) from exc


def migrator(db: "DataFlow") -> Migrator:
    return Migrator(db.engine, db.metadata, db.specs, lock_timeout=db.config.migration_lock_timeout)


def start(db: "DataFlow") -> None:
    """What the first operation does: check (existing_schema_mode), migrate (auto_migrate), or nothing."""
    connect_check(db)
    if not db.specs:
        return
    if db.config.existing_schema_mode:
        check_existing(db.engine, db.metadata, db.specs)
    elif db.config.auto_migrate:
        migrator(db).apply()


def migrate(db: "DataFlow", *, allow_destructive: bool, dry_run: bool) -> MigrationPlan:
    """An explicit ``db.migrate()``: plan, and unless ``dry_run`` apply, whatever the start-up settings."""
    connect_check(db)
    m = migrator(db)
    return m.plan(allow_destructive=allow_destructive) if dry_run else m.apply(allow_destructive=allow_destructive)
