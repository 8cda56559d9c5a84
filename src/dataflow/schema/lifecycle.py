"""Bring a database up to date with the models (auto_migrate) or check it (existing_schema_mode)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy.exc as sa_exc

from ..driver_errors import translate

if TYPE_CHECKING:
    from ..core.dataflow import DataFlow


def bring_up_to_date(db: "DataFlow", *, allow_destructive: bool, dry_run: bool):
    """Check connectivity, then migrate or check the schema as the configuration says."""
    try:
        with db.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except (sa_exc.SQLAlchemyError, *db.driver_errors) as exc:
        raise translate(exc, action="connect", where=db.safe_url) from exc
    if db.config.existing_schema_mode or not db.config.auto_migrate and not dry_run and not allow_destructive:
        return None
    db.metadata.create_all(db.engine)
    return None
