"""existing_schema_mode: check the models against tables someone else made; never change them.

``check_existing`` compares with the same Alembic comparison as auto-migration, then judges each
difference instead of applying it:

* **error** (``MigrationError``, listing every mismatch): a model's table is missing; a field's
  column is missing; a column's type is of another family than the field's (a model ``int`` on a
  ``VARCHAR`` column). SQLite stores any value in any column, so there a family mismatch is only
  a warning.
* **warning** (``SchemaMismatchWarning`` and a log record): a type of the same family that
  is narrower or of another kind (``VARCHAR(100)`` for a ``VARCHAR(255)`` field, ``TIMESTAMP``
  without time zone, ...); a NULL-ability that differs; a NOT NULL column without a default that no field fills (creates
  will fail); a primary key or auto-increment that differs; a declared unique constraint, index
  or foreign key that the table lacks.

* **info** (log only): a column wider than its field (``TEXT`` for a ``str`` field): nothing can fail.

Columns, indexes and tables that the models do not mention are fine: tables made by other tools
often carry more than a model declares.

Automatic timestamps follow the live table (``follow_live_timestamps``): ``created_at`` and
``updated_at`` that DataFlow adds (the model did not declare them) are kept where the table has
the column and left out of the model where it has not, with an INFO record saying so. A
timestamp the model declares itself is checked like any other field.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace

import sqlalchemy as sa
from alembic.operations import ops

from ..errors import MigrationError
from ..models import TIMESTAMP_FIELDS, ModelSpec
from .diff import LOOSE_TYPES, compare, compare_types, type_info

log = logging.getLogger("dataflow.schema")

#: Columns DataFlow adds to a model unless told otherwise: how to tell it otherwise.
ADDED_BY_DATAFLOW = {
    "created_at": "__dataflow__ = {'timestamps': False}",
    "updated_at": "__dataflow__ = {'timestamps': False}",
    "deleted_at": "no soft_delete in __dataflow__",
    "version": "no versioned in __dataflow__",
}


class SchemaMismatchWarning(UserWarning):
    """A model and an existing table differ in a way that works, but may surprise."""


class _Checker:
    def __init__(self, conn: sa.Connection, metadata: sa.MetaData, specs: dict[str, ModelSpec]) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.metadata = metadata
        self.by_table = {spec.table: spec for spec in specs.values()}
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def _name(self, table: str, column: str | None = None) -> str:
        t = self.metadata.tables.get(table)
        model = t.info.get("model") if t is not None else None
        where = f"{table}.{column}" if column else f"table {table}"
        return f"{where} (field {model}.{column})" if model and column else \
            f"{where} (model {model})" if model else where

    def run(self) -> _Checker:
        missing: set[str] = set()
        for op in compare(self.conn, self.metadata):
            if isinstance(op, ops.CreateTableOp):
                missing.add(op.table_name)
                self.errors.append(f"{self._name(op.table_name)} does not exist")
            elif isinstance(op, ops.ModifyTableOps):
                for item in op.ops:
                    self._item(item)
        for table in self.metadata.tables.values():
            if table.name not in missing:
                self._keys(table)
        return self

    def _item(self, op: ops.MigrateOperation) -> None:
        if isinstance(op, ops.AddColumnOp):
            col = op.column
            hint = ADDED_BY_DATAFLOW.get(col.name) if col.info.get("field") and col.info["field"].added else None
            self.errors.append(f"{self._name(op.table_name, col.name)} does not exist (expected "
                               f"{type_info(col.type, self.dialect).text})"
                               + (f"; DataFlow adds this field: declare {hint} if the table has none" if hint else ""))
        elif isinstance(op, ops.DropColumnOp):
            col = op.to_column()
            if not col.nullable and col.server_default is None and not col.primary_key:
                self.warnings.append(f"{op.table_name}.{col.name} is NOT NULL without a default, and no field "
                                     "of the model sets it: creating records will fail")
        elif isinstance(op, ops.AlterColumnOp):
            where = self._name(op.table_name, op.column_name)
            if op.modify_type is not None:
                verdict = compare_types(op.existing_type, op.modify_type, self.dialect)
                old = type_info(op.existing_type, self.dialect).text
                new = type_info(op.modify_type, self.dialect).text
                if verdict == "incompatible" and self.dialect.name not in LOOSE_TYPES:
                    self.errors.append(f"{where} is {old}, which cannot hold the field's values ({new})")
                elif verdict == "narrow":  # the column holds more than the field: nothing can fail
                    log.info("existing schema: %s is %s, wider than the field (%s)", where, old, new)
                elif verdict != "same":
                    detail = {"widen": "narrower than the field: longer or larger values will be refused",
                              "convert": "of another kind", "incompatible": "of another type family"}[verdict]
                    self.warnings.append(f"{where} is {old}, {detail} (the model declares {new})")
            if op.modify_nullable is True:
                self.warnings.append(f"{where} is NOT NULL but the field is optional: storing None will fail")
            elif op.modify_nullable is False:
                self.warnings.append(f"{where} allows NULL but the field is required: such rows read as None")
        elif isinstance(op, ops.CreateIndexOp):
            what = "unique index" if op.unique else "index"
            self.warnings.append(f"{op.table_name} lacks the {what} {op.index_name} on "
                                 f"({', '.join(getattr(c, 'name', None) or str(c) for c in op.columns)})"
                                 + (": duplicates are not refused by the database" if op.unique else ""))
        elif isinstance(op, ops.CreateUniqueConstraintOp):
            self.warnings.append(f"{op.table_name} lacks the unique constraint on ({', '.join(op.columns)}): "
                                 "duplicates are not refused by the database")
        elif isinstance(op, ops.CreateForeignKeyOp):
            self.warnings.append(f"{op.source_table} lacks the foreign key ({', '.join(op.local_cols)}) -> "
                                 f"{op.referent_table}: the database does not check the reference")

    def _keys(self, table: sa.Table) -> None:
        """Primary key and auto-increment, which Alembic's comparison does not look at."""
        inspector = sa.inspect(self.conn)
        wanted = [c.name for c in table.primary_key.columns]
        found = inspector.get_pk_constraint(table.name).get("constrained_columns") or []
        if found != wanted:
            self.warnings.append(f"table {table.name} has primary key ({', '.join(found) or 'none'}); the model "
                                 f"uses ({', '.join(wanted)}): reads by key may match several rows")
            return
        auto = table.autoincrement_column
        if auto is not None:
            reflected = {c["name"]: c for c in inspector.get_columns(table.name)}.get(auto.name, {})
            if reflected.get("autoincrement") is False:  # None: the dialect does not say
                self.warnings.append(f"{table.name}.{auto.name} is not generated by the database: creating "
                                     f"records without an explicit {auto.name} will fail")


def check_existing(engine: sa.Engine, metadata: sa.MetaData, specs: dict[str, ModelSpec]) -> list[str]:
    """Check the models against the live tables without changing anything; return the warnings.

    Raises ``MigrationError`` listing every mismatch (errors first) when a table or column is
    missing or a type cannot hold the field's values; otherwise emits each warning (logging and
    ``SchemaMismatchWarning``) and returns them.
    """
    with engine.connect() as conn:
        checker = _Checker(conn, metadata, specs).run()
        conn.rollback()
    if checker.errors:
        lines = ["The database does not match the models (existing_schema_mode: nothing was changed):"]
        lines += [f"- error: {m}" for m in checker.errors] + [f"- warning: {m}" for m in checker.warnings]
        lines.append("Fix the tables or the models, or turn existing_schema_mode off to let DataFlow migrate.")
        exc = MigrationError("\n".join(lines))
        exc.mismatches = [f"error: {m}" for m in checker.errors] + [f"warning: {m}" for m in checker.warnings]
        raise exc
    for message in checker.warnings:
        log.warning("existing schema: %s", message)
        warnings.warn(message, SchemaMismatchWarning, stacklevel=2)
    return list(checker.warnings)


def follow_live_timestamps(engine: sa.Engine, specs: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """The specs whose DataFlow-added timestamps the live table lacks, without those fields.

    Returns only the changed specs (model name -> new spec). A timestamp that an index or unique
    option names is kept (the check then reports the missing column), as is every field the
    model declared itself. Tables that do not exist are left to ``check_existing``.
    """
    changed: dict[str, ModelSpec] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name, spec in specs.items():
            added = [f.name for f in spec.fields.values() if f.added and f.auto in TIMESTAMP_FIELDS]
            if not added or not inspector.has_table(spec.table):
                continue
            named = _option_fields(spec)
            live = {c["name"] for c in inspector.get_columns(spec.table)}
            missing = [f for f in added if f not in live and f not in named]
            for f in added:
                if f in live:
                    log.debug("existing schema: %s.%s exists; DataFlow stamps it", spec.table, f)
            if missing:
                log.info("existing schema: table %s has no %s column; model %s stores and returns records "
                         "without %s (DataFlow keeps automatic timestamps only where the table has them)",
                         spec.table, " or ".join(missing), spec.name, " and ".join(missing))
                changed[name] = replace(spec, fields={n: f for n, f in spec.fields.items() if n not in missing})
        conn.rollback()
    return changed


def _option_fields(spec: ModelSpec) -> set[str]:
    named: set[str] = set()
    for group in [*spec.options.get("unique", []), *spec.options.get("indexes", [])]:
        cols = [group] if isinstance(group, str) else list(group["fields"] if isinstance(group, dict) else group)
        named.update(c for c in cols if isinstance(c, str))
    return named
