"""Bring a database up to date with the models (auto_migrate) or check it (existing_schema_mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy.exc as sa_exc

from ..driver_errors import translate
from ..progress import NOOP, Reporter
from .existing import check_existing, follow_live_timestamps
from .migrate import MigrationPlan, Migrator

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow


def connect_check(db: "DataFlow") -> None:
    """One round trip, so an unreachable database fails here with a clear ``DatabaseError``."""
    try:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
        raise translate(exc, action="connect", where=db.safe_url) from None


def use_live_timestamps(db: "DataFlow") -> None:
    """existing_schema_mode: drop the automatic timestamps the live tables lack from the models.

    The specs are replaced and the instance's Tables, bindings and codecs rebuilt from them, so
    every operation (and the codec's stamping of created_at/updated_at) follows the live table.
    """
    changed = follow_live_timestamps(db.engine, db.specs)
    if not changed:
        return
    for name, spec in changed.items():
        db._specs[name] = spec
        if spec.cls is not None:
            spec.cls.__dataflow_spec__ = spec
    db._rebuild()


def migrator(db: "DataFlow") -> Migrator:
    # ``app`` is the model set's app label if the config has one (diff.label); models may set their own.
    return Migrator(db.engine, db.metadata, db.specs, lock_timeout=db.config.migration_lock_timeout,
                    owner=getattr(db.config, "app", None))


def start(db: "DataFlow") -> None:
    """What the first operation does: check (existing_schema_mode), migrate (auto_migrate), or nothing."""
    connect_check(db)
    if not db.specs:
        return
    if db.config.existing_schema_mode:
        use_live_timestamps(db)
        check_existing(db.engine, db.metadata, db.specs)
    elif db.config.auto_migrate:
        _applied(db, migrator(db).apply())


def migrate(db: "DataFlow", *, allow_destructive: bool, dry_run: bool, progress: Reporter = NOOP) -> MigrationPlan:
    """An explicit ``db.migrate()``: plan, and unless ``dry_run`` apply, whatever the start-up settings.

    ``progress`` hears of each statement applied (a dry run applies none: ``(0, 0)``).
    """
    connect_check(db)
    m = migrator(db)
    if dry_run:
        plan = m.plan(allow_destructive=allow_destructive)
        progress.finish(0)
        return plan
    return _applied(db, m.apply(allow_destructive=allow_destructive, progress=progress))


def _applied(db: "DataFlow", plan: MigrationPlan) -> MigrationPlan:
    """After a schema change, cached reads of the models' tables are stale (every process sharing the cache)."""
    if plan.operations:
        cache = getattr(db, "cache", None)
        if cache is not None:
            cache.bump([spec.table for spec in db.specs.values()])
    return plan
