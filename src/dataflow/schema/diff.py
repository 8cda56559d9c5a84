"""What differs between the models and the live database, and whether changing it is safe.

Alembic compares (``produce_migrations``, the operations behind ``compare_metadata``); this module
sorts each difference into a ``Step``: applied automatically when no data can be lost (new table,
column, index, unique constraint, foreign key; widened type; relaxed NOT NULL; a rename declared
with ``renamed_from``), *destructive* otherwise (dropped column or table, narrowed or converted
type, dropped index or constraint). A change that cannot be made safely at all (a new NOT NULL
column with no default) is a *problem*: planning stops with a ``MigrationError``.

Only what these models own is ever touched: their tables, tables that models with the same app
label declared at a recorded migration (``history.droppable_tables``), and indexes and
constraints named the way ``build_table`` names them (``ix_``/``uq_``/``fk_`` + table). Anything
else in the database, including tables other apps' DataFlow models made, is invisible here.
"""

from __future__ import annotations

import json
import logging
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import sqlalchemy as sa
from alembic.autogenerate import produce_migrations
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext

from ..models import ModelSpec
from . import history

# ---------------------------------------------------------------------------------------------
# Types: family and size of a column type, as the database spells it.

INF = math.inf

#: SQL type name -> (family, size). Within a family a larger size holds every value of a smaller.
#: Families without a meaningful order (datetime, json, ...) compare by name ("kind").
TYPE_NAMES: dict[str, tuple[str, float]] = {
    "BOOLEAN": ("bool", 1), "BOOL": ("bool", 1),
    "TINYINT": ("int", 1), "SMALLINT": ("int", 2), "MEDIUMINT": ("int", 3), "INT": ("int", 4),
    "INTEGER": ("int", 4), "BIGINT": ("int", 8),
    "REAL": ("float", 4), "FLOAT": ("float", 8), "DOUBLE": ("float", 8), "DOUBLE PRECISION": ("float", 8),
    "NUMERIC": ("decimal", INF), "DECIMAL": ("decimal", INF),
    "CHAR": ("string", 1), "CHARACTER": ("string", 1), "NCHAR": ("string", 1),
    "VARCHAR": ("string", INF), "CHARACTER VARYING": ("string", INF), "NVARCHAR": ("string", INF),
    "TINYTEXT": ("string", 255), "TEXT": ("string", INF), "MEDIUMTEXT": ("string", 2**24 - 1),
    "LONGTEXT": ("string", 2**32 - 1), "CLOB": ("string", INF),
    "BINARY": ("binary", 1), "VARBINARY": ("binary", INF), "TINYBLOB": ("binary", 255),
    "BLOB": ("binary", INF), "MEDIUMBLOB": ("binary", 2**24 - 1), "LONGBLOB": ("binary", 2**32 - 1),
    "BYTEA": ("binary", INF),
    "DATETIME": ("datetime", 6), "TIMESTAMP": ("datetime", 6), "TIMESTAMP WITH TIME ZONE": ("datetime", 6),
    "DATE": ("date", 0), "TIME": ("time", 6), "UUID": ("uuid", 0), "JSON": ("json", 0), "JSONB": ("json", 0),
}

#: Spellings of one type: the reflected name -> the canonical one.
SYNONYMS = {"TIMESTAMP WITHOUT TIME ZONE": "TIMESTAMP", "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
            "DOUBLE PRECISION": "DOUBLE", "BOOL": "BOOLEAN", "INT": "INTEGER", "DECIMAL": "NUMERIC",
            "CHARACTER VARYING": "VARCHAR", "CHARACTER": "CHAR", "FLOAT8": "DOUBLE", "INT8": "BIGINT"}

#: Where a database differs from the defaults above.
DIALECT_TYPES: dict[str, dict[str, tuple[str, float]]] = {
    "mysql": {"FLOAT": ("float", 4), "TEXT": ("string", 2**16 - 1), "BLOB": ("binary", 2**16 - 1),
              "DATETIME": ("datetime", 0), "TIMESTAMP": ("datetime", 0), "TIME": ("time", 0),
              "TINYINT(1)": ("bool", 1)},  # MySQL's BOOL is TINYINT(1)
}
DIALECT_TYPES["mariadb"] = {**DIALECT_TYPES["mysql"],
                            "LONGTEXT": ("json|string", 2**32 - 1)}  # MariaDB's JSON is LONGTEXT

#: Databases that store any value in any column: a type of another family is a warning there.
LOOSE_TYPES = {"sqlite"}


def dialect_key(dialect: sa.Dialect) -> str:
    return "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name


@dataclass(frozen=True)
class TypeInfo:
    text: str       # as the database spells it, e.g. VARCHAR(255)
    family: str     # int, string, datetime, ...
    kind: str       # canonical name, e.g. TIMESTAMP WITH TIME ZONE
    size: float     # length, bytes or fractional-second digits
    scale: float = 0


def type_info(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> TypeInfo:
    """Family, kind and size of ``type_`` (declared or reflected) on ``dialect``."""
    try:
        text = type_.compile(dialect=dialect).upper()
    except Exception:  # a reflected type the dialect cannot render
        return TypeInfo(repr(type_), "unknown", repr(type_), 0)
    text = re.sub(r"\s+(CHARACTER SET|COLLATE)\s+\S+", "", text).strip()
    overrides = DIALECT_TYPES.get(dialect_key(dialect), {})
    args = [int(a) for a in re.findall(r"\d+", "".join(re.findall(r"\(([^)]*)\)", text)))]
    name = re.sub(r"\s*\([^)]*\)", "", text).replace(" UNSIGNED", "").strip()
    kind = SYNONYMS.get(name, name)
    family, size = (overrides.get(text) or overrides.get(name) or TYPE_NAMES.get(name) or TYPE_NAMES.get(kind)
                    or ("unknown", 0))
    if text in overrides:
        kind = text
    scale: float = 0
    if family == "decimal":
        size, scale = (args[0], args[1] if len(args) > 1 else 0) if args else (INF, INF)
    elif family == "float" and args:
        size = 4 if args[0] <= 24 else 8
    elif family in ("string", "binary", "datetime", "time") and args:
        size = args[0]
    if family == "unknown":
        kind = text
    elif family == "int" and text not in overrides:
        text = name  # MySQL's display width, INTEGER(11), says nothing about the values
    return TypeInfo(text, family, kind, size, scale)


def compare_types(existing: sa.types.TypeEngine, wanted: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    """How ``existing`` (the column's type) becomes ``wanted`` (the model's type).

    ``same``, ``widen`` (every stored value fits), ``narrow`` (some may not), ``convert`` (same
    family, another kind, e.g. JSON -> JSONB, or a mixed change), ``incompatible`` (another family).
    """
    old, new = type_info(existing, dialect), type_info(wanted, dialect)
    if old.text == new.text:
        return "same"
    common = set(old.family.split("|")) & set(new.family.split("|"))
    if not common:
        return "incompatible"
    family = sorted(common)[0]
    if family == "json" and old.family != new.family:
        return "same"  # MariaDB reports its JSON columns as LONGTEXT
    if family in ("int", "float", "string", "binary", "bool"):
        return "same" if old.size == new.size else "widen" if new.size > old.size else "narrow"
    if family == "decimal":
        whole_old, whole_new = old.size - old.scale, new.size - new.scale
        if (old.size, old.scale) == (new.size, new.scale):
            return "same"
        if new.scale >= old.scale and whole_new >= whole_old:
            return "widen"
        if new.scale <= old.scale and whole_new <= whole_old:
            return "narrow"
        return "convert"
    if old.kind != new.kind:
        return "convert"
    return "same" if old.size == new.size else "widen" if new.size > old.size else "narrow"


#: InnoDB's largest index key (DYNAMIC/COMPRESSED row formats, the default since MySQL 5.7.7).
MYSQL_MAX_KEY_BYTES = 3072


def key_bytes(type_: sa.types.TypeEngine, dialect: sa.Dialect) -> int | None:
    """Bytes a column takes in a MySQL index key; None when it cannot be indexed whole (TEXT, JSON)."""
    info = type_info(type_, dialect)
    if info.family in ("string", "json", "json|string", "binary"):
        if info.kind not in ("VARCHAR", "CHAR", "VARBINARY", "BINARY") or info.size == INF:
            return None
        return int(info.size) * (4 if info.family == "string" else 1)
    if info.family == "decimal":
        return 32 if info.size == INF else int(info.size) // 2 + 2
    if info.family in ("int", "bool"):
        return int(info.size)
    return 8  # float, datetime, date, time, uuid: at most 8 bytes


# ---------------------------------------------------------------------------------------------
# Differences -> steps.

@dataclass
class Step:
    """One change: an Alembic operation, what it does in words, and whether it may lose data."""

    op: ops.MigrateOperation
    description: str
    destructive: bool = False
    table: str | None = None       # an existing table: runs in that table's batch (SQLite rebuild)
    drops_column: str | None = None  # for a nullable-relax step: the column a destructive step drops


def label(spec: ModelSpec, owner: str | None = None) -> str | None:
    """The app label of a model: ``__dataflow__ = {"app": ...}``, else the model set's ``owner``."""
    value = spec.options.get("app") or owner
    return str(value) if value else None


def labels(specs, owner: str | None = None) -> set[str]:
    return {lab for lab in (label(s, owner) for s in specs) if lab}


def owned_name(name: str | None, table: str) -> bool:
    """Whether an index or constraint has a name that ``build_table`` gives (``tables.key_name``)."""
    if not name:
        return False
    for p in ("ix", "uq", "fk"):
        prefix = f"{p}_{table}_"
        if name.startswith(prefix):
            return True
        # A long name: cut to 54 characters, then "_" and 8 hex digits of a hash.
        cut = min(len(prefix), 54)
        if len(name) == 63 and name[:cut] == prefix[:cut] and re.fullmatch(r"_[0-9a-f]{8}", name[54:]):
            return True
    return False


def _nullability(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


def compare(conn: sa.Connection, metadata: sa.MetaData, *, extra_tables: set[str] = frozenset()
            ) -> list[ops.MigrateOperation]:
    """Alembic's operations turning the live schema into ``metadata``'s (server defaults ignored).

    Only the tables of ``metadata`` and ``extra_tables`` are looked at.
    """
    wanted = set(metadata.tables) | set(extra_tables)

    def include_name(name, type_, parent_names):
        return name in wanted and name != history.HISTORY_TABLE if type_ == "table" else True

    with quiet_alembic():
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True, "compare_server_default": False, "include_name": include_name})
        return list(produce_migrations(ctx, metadata).upgrade_ops.ops)


@contextmanager
def quiet_alembic() -> Iterator[None]:
    """Keep Alembic's INFO chatter ("Context impl ...") out of an app's log, unless it asked for it.

    DataFlow logs each change itself (logger ``dataflow.schema``). An app that set a level on the
    ``alembic`` logger keeps it.
    """
    logger = logging.getLogger("alembic")
    if logger.level != logging.NOTSET:
        yield
        return
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(logging.NOTSET)


#: Tables DataFlow makes that no migration ever drops: the audit trail is append-only.
KEPT_TABLES = frozenset({"dataflow_audit"})


class Differ:
    """Sort the differences between ``metadata`` and the database behind ``conn`` into steps."""

    def __init__(self, conn: sa.Connection, metadata: sa.MetaData, specs: dict[str, ModelSpec],
                 owner: str | None = None) -> None:
        self.conn = conn
        self.owner = owner
        self.dialect = conn.dialect
        self.metadata = metadata
        self.by_table = {spec.table: spec for spec in specs.values()}
        self.steps: list[Step] = []
        self.problems: list[tuple[str, str | None, str | None]] = []  # (message, model, field)
        self.warnings: list[str] = []
        self.created: set[str] = set()
        self.left_alone: set[str] = set()  # unlabelled recorded tables no model here declares: never dropped

    # -- naming helpers ------------------------------------------------------------------------
    def _model(self, table: str) -> str | None:
        t = self.metadata.tables.get(table)
        return t.info.get("model") if t is not None else None

    def _who(self, table: str, column: str) -> str:
        model = self._model(table)
        return f" ({model}.{column})" if model else ""

    def _type(self, type_: sa.types.TypeEngine) -> str:
        return type_info(type_, self.dialect).text

    # -- entry point ---------------------------------------------------------------------------
    def run(self) -> Differ:
        self._check_renames()
        self._check_key_lengths()
        # An instance without models (a script that only reads) has no say over any table; one with
        # models only over the tables that models of its own app label declared (history.py).
        managed: set[str] = set()
        if self.metadata.tables:
            mine = labels(self.by_table.values(), self.owner)
            managed, others = history.droppable_tables(self.conn, mine)
            # Worth a word: recorded without any label, so possibly a removed model of this app.
            # Tables recorded under another label are another app's: not mentioned at all.
            unlabelled = {t for t, lab in history.owners(self.conn).items() if lab is None}
            self.left_alone = (others & unlabelled) - set(self.metadata.tables)
        managed = set(managed) - KEPT_TABLES  # an instance without the audit log has no say over the trail
        found = compare(self.conn, self.metadata, extra_tables=managed)
        self.created = {op.table_name for op in found if isinstance(op, ops.CreateTableOp)}
        for op in found:
            if isinstance(op, ops.CreateTableOp):
                model = op.info.get("model") if op.info else None
                self.steps.append(Step(op, f"create table {op.table_name}" + (f" (model {model})" if model else "")))
            elif isinstance(op, ops.DropTableOp):
                self.steps.append(Step(op, f"drop table {op.table_name}: no model declares it any more "
                                           "(DataFlow created it); its rows would be lost", destructive=True))
            elif isinstance(op, ops.ModifyTableOps):
                self._table(op)
            else:
                self._table_item(op, table=None)
        return self

    def _check_key_lengths(self) -> None:
        """MySQL/InnoDB: an index key of more than 3,072 bytes fails at CREATE, after earlier statements
        committed. Refuse it here, before any statement runs."""
        if self.dialect.name not in ("mysql", "mariadb"):
            return
        for table in self.metadata.tables.values():
            model = table.info.get("model") or table.name
            keys = [("primary key", list(table.primary_key.columns))]
            keys += [(f"index {i.name}", list(i.columns)) for i in table.indexes]
            keys += [(f"unique constraint {c.name}", list(c.columns)) for c in table.constraints
                     if isinstance(c, sa.UniqueConstraint)]
            for what, cols in keys:
                sizes = [(c.name, key_bytes(c.type, self.dialect)) for c in cols]
                unbounded = [name for name, size in sizes if size is None]
                fields = ", ".join(f"{model}.{c.name}" for c in cols)
                if unbounded:
                    self.problems.append((
                        f"{model}: the {what} on {table.name} ({fields}) includes {', '.join(unbounded)}, a "
                        f"column of unbounded length, which {self.dialect.name} cannot index. To fix: give the "
                        "field a max_length (at most 768 characters), or do not index it", model, unbounded[0]))
                    continue
                total = sum(size for _, size in sizes)
                if total > MYSQL_MAX_KEY_BYTES:
                    detail = ", ".join(f"{name} {size:,}" for name, size in sizes)
                    self.problems.append((
                        f"{model}: the {what} on {table.name} ({fields}) needs {total:,} bytes per key "
                        f"({detail}; a str takes 4 bytes per character in utf8mb4), more than InnoDB's limit "
                        f"of {MYSQL_MAX_KEY_BYTES:,}. To fix: lower max_length of the str field(s) so the "
                        "key fits, or index fewer fields", model, cols[-1].name))

    def _check_renames(self) -> None:
        for spec in self.by_table.values():
            renames = spec.options.get("renamed_from") or {}
            if not isinstance(renames, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in renames.items()):
                self.problems.append((f"{spec.name}: __dataflow__['renamed_from'] must map new field names to "
                                      f"old column names, e.g. {{'name': 'full_name'}}", spec.name, None))
                continue
            for new in renames:
                if new not in spec.fields:
                    self.problems.append((f"{spec.name}: renamed_from names {new!r}, which is not a field of "
                                          f"{spec.name}", spec.name, new))

    # -- one existing table ------------------------------------------------------------------------
    def _table(self, mt: ops.ModifyTableOps) -> None:
        table = None if mt.table_name in self.created else mt.table_name
        spec = self.by_table.get(mt.table_name)
        renames = spec.options.get("renamed_from") or {} if spec else {}
        adds = {op.column.name: op for op in mt.ops if isinstance(op, ops.AddColumnOp)}
        drops = {op.column_name: op for op in mt.ops if isinstance(op, ops.DropColumnOp)}
        consumed: set[int] = set()
        for new, old in (renames.items() if isinstance(renames, dict) else ()):
            if new in adds and old in drops:
                self._rename(table, mt.table_name, drops[old].to_column(), adds[new].column)
                consumed |= {id(adds[new]), id(drops[old])}
            elif new not in adds and old in drops:
                self.warnings.append(f"{mt.table_name}: both {old} and {new} exist, so renamed_from "
                                     f"{{{new!r}: {old!r}}} is not applied; {old} is left as it is")
        for op in mt.ops:
            if id(op) not in consumed:
                self._table_item(op, table=table)

    def _table_item(self, op: ops.MigrateOperation, table: str | None) -> None:
        if isinstance(op, ops.AddColumnOp):
            self._add_column(table, op)
        elif isinstance(op, ops.DropColumnOp):
            self._drop_column(table, op)
        elif isinstance(op, ops.AlterColumnOp):
            self._alter_column(table, op)
        elif isinstance(op, ops.CreateIndexOp):
            cols = ", ".join(getattr(c, "name", None) or str(c) for c in op.columns)
            kind = "unique index" if op.unique else "index"
            self.steps.append(Step(op, f"create {kind} {op.index_name} on {op.table_name} ({cols})", table=table))
        elif isinstance(op, ops.CreateUniqueConstraintOp):
            self.steps.append(Step(op, f"add unique constraint {op.constraint_name} on {op.table_name} "
                                       f"({', '.join(op.columns)})", table=table))
        elif isinstance(op, ops.CreateForeignKeyOp):
            self.steps.append(Step(op, f"add foreign key {op.constraint_name} {op.source_table}"
                                       f"({', '.join(op.local_cols)}) -> {op.referent_table}", table=table))
        elif isinstance(op, ops.DropIndexOp):
            if owned_name(op.index_name, op.table_name):
                self.steps.append(Step(op, f"drop index {op.index_name} on {op.table_name}: the model no "
                                           "longer declares it", destructive=True, table=table))
        elif isinstance(op, ops.DropConstraintOp):
            if owned_name(op.constraint_name, op.table_name):
                self.steps.append(Step(op, f"drop {op.constraint_type or 'constraint'} constraint "
                                           f"{op.constraint_name} on {op.table_name}: the model no longer "
                                           "declares it", destructive=True, table=table))
        # Comments and anything else Alembic may report are not part of a model: left alone.

    # -- columns -------------------------------------------------------------------------------
    def _add_column(self, table: str, op: ops.AddColumnOp) -> None:
        col = op.column
        what = f"add column {op.table_name}.{col.name} {self._type(col.type)} {_nullability(col.nullable)}"
        if col.nullable or col.server_default is not None:
            self.steps.append(Step(op, what + self._who(op.table_name, col.name), table=table))
            return
        field = col.info.get("field")
        model = self._model(op.table_name) or op.table_name
        name = f"{model}.{col.name}"
        if field is not None and field.has_default and field.default_factory is None:
            literal = self._literal(field.default, col.type)
            if literal is not None:
                new = sa.Column(col.name, col.type, *[sa.ForeignKey(fk.target_fullname, ondelete=fk.ondelete,
                                                                    name=fk.name) for fk in col.foreign_keys],
                                nullable=False, info=dict(col.info),
                                # Not sa.text(): it reads ":word" in the literal as a bind parameter.
                                server_default=sa.literal_column(literal))
                self.steps.append(Step(ops.AddColumnOp(op.table_name, new, schema=op.schema),
                                       f"{what} DEFAULT {literal}{self._who(op.table_name, col.name)}: "
                                       "existing rows get the default", table=table))
                return
            why = (f"its default {field.default!r} cannot be written as a column default on "
                   f"{self.dialect.name}, so the rows already in {op.table_name} would have no value")
            todo = "make it Optional[...]"
        elif col.info.get("tenant"):  # multi-tenant: which tenant do the rows already there belong to?
            why = f"it is the tenant column (NOT NULL), and the rows already in {op.table_name} belong to no tenant"
            todo = ("set tenant_default to the tenant those rows belong to (DataFlow(..., tenant_default='<tenant "
                    "id>') or DATAFLOW_TENANT_DEFAULT)")
        elif field is not None and field.default_factory is not None:
            why = ("its default is computed by a function, which cannot fill the rows already in "
                   f"{op.table_name}")
            todo = "give it a constant default, make it Optional[...]"
        else:
            why = f"it is required (NOT NULL, no default), so the rows already in {op.table_name} would have no value"
            todo = (f"give it a default (e.g. {col.name}: {field.pytype.__name__ if field else 'int'} = ...), "
                    f"make it Optional[...]")
        self.problems.append((f"Cannot add field {name} as column {op.table_name}.{col.name}: {why}. "
                              f"To fix: {todo}, or add and fill the column yourself, then start again.",
                              model, col.name))

    def _literal(self, value: Any, type_: sa.types.TypeEngine) -> str | None:
        """``value`` as an SQL literal of ``type_`` on this dialect, or None if it has none."""
        if isinstance(value, (dict, list)):  # JSON columns take the document's text
            value, type_ = json.dumps(value, separators=(",", ":")), sa.String()
        text = self._render_literal(sa.literal(value, type_))
        if text is None:  # no literal form for the type: render what its bind processing sends
            process = type_.bind_processor(self.dialect)
            text = self._render_literal(sa.literal(process(value) if process else value))
        if text is None:
            return None
        # The literal goes into a DDL string that the compiler escapes again: undo the first escape.
        return text.replace("%%", "%") if self.dialect.paramstyle in ("format", "pyformat") else text

    def _render_literal(self, literal: sa.BindParameter) -> str | None:
        try:
            return str(literal.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True}))
        except Exception:
            return None

    def _drop_column(self, table: str, op: ops.DropColumnOp) -> None:
        col = op.to_column()
        where = f"{op.table_name}.{op.column_name}"
        model = self._model(op.table_name)
        self.steps.append(Step(op, f"drop column {where}: no field of {model or 'the model'} declares it; "
                                   "its data would be lost", destructive=True, table=table))
        if not col.nullable and col.server_default is None and not col.primary_key:
            relax = self._alter_op(op.table_name, col.name, col, modify_nullable=True)
            self.steps.append(Step(relax, f"make {where} nullable: {model or 'the model'} has no field for it "
                                          "any more, so inserts would fail on NOT NULL", table=table,
                                   drops_column=col.name))

    def _alter_op(self, table: str, column: str, existing: sa.Column | ops.AlterColumnOp, **modify: Any
                  ) -> ops.AlterColumnOp:
        if isinstance(existing, ops.AlterColumnOp):
            known = dict(existing_type=existing.existing_type, existing_nullable=existing.existing_nullable,
                         existing_server_default=existing.existing_server_default,
                         existing_comment=existing.existing_comment)
            # Alembic marks every column's autoincrement flag; only True matters (MySQL keeps
            # AUTO_INCREMENT through MODIFY), and the flag makes other dialects warn.
            if existing.kw.get("autoincrement") is True:
                known["autoincrement"] = True
        else:
            known = dict(existing_type=existing.type, existing_nullable=existing.nullable,
                         existing_server_default=existing.server_default or False,
                         existing_comment=existing.comment)
        return ops.AlterColumnOp(table, column, **known, **modify)

    def _alter_column(self, table: str, op: ops.AlterColumnOp) -> None:
        where = f"{op.table_name}.{op.column_name}"
        if op.modify_type is not None:
            self._type_change(table, op.table_name, op.column_name, op, op.existing_type, op.modify_type)
        if op.modify_nullable is not None:
            self._null_change(table, op.table_name, op.column_name, op, op.modify_nullable, where)

    def _type_change(self, table: str, tname: str, cname: str, existing, old_type, new_type,
                     rename_to: str | None = None) -> None:
        verdict = compare_types(old_type, new_type, self.dialect)
        if verdict == "same":
            return
        where = f"{tname}.{cname}"
        change = f"{self._type(old_type)} -> {self._type(new_type)}{self._who(tname, rename_to or cname)}"
        op = self._alter_op(tname, cname, existing, modify_type=new_type)
        if verdict == "widen":
            self.steps.append(Step(op, f"widen {where} {change}", table=table))
        else:
            loss = {"narrow": "narrow", "convert": "convert", "incompatible": "change the type of"}[verdict]
            self.steps.append(Step(op, f"{loss} {where} {change}: stored values may not fit",
                                   destructive=True, table=table))

    def _null_change(self, table: str, tname: str, cname: str, existing, nullable: bool, where: str) -> None:
        if nullable:
            self.steps.append(Step(self._alter_op(tname, cname, existing, modify_nullable=True),
                                   f"make {where} nullable{self._who(tname, cname)}", table=table))
            return
        nulls = self.conn.execute(sa.select(sa.func.count()).select_from(sa.table(tname))
                                  .where(sa.column(cname).is_(None))).scalar()
        if nulls:
            model = self._model(tname) or tname
            self.problems.append((
                f"Cannot make {where} NOT NULL (field {model}.{cname} is required): {nulls} row(s) hold NULL. "
                f"To fix: set a value in those rows, or make the field Optional[...].", model, cname))
            return
        self.steps.append(Step(self._alter_op(tname, cname, existing, modify_nullable=False),
                               f"make {where} NOT NULL{self._who(tname, cname)}", table=table))

    def _rename(self, table: str | None, tname: str, old: sa.Column, new: sa.Column) -> None:
        """A renamed field: one ALTER that renames (and, when safe, widens or relaxes) the column."""
        op = self._alter_op(tname, old.name, old, modify_name=new.name)
        desc = f"rename column {tname}.{old.name} to {new.name}{self._who(tname, new.name)}"
        if compare_types(old.type, new.type, self.dialect) == "widen":
            op.modify_type = new.type
            desc += f", widen {self._type(old.type)} -> {self._type(new.type)}"
        else:
            self._type_change(table, tname, old.name, old, old.type, new.type, rename_to=new.name)
        self.steps.append(Step(op, desc, table=table))
        if old.nullable != new.nullable:
            self._null_change(table, tname, old.name, old, new.nullable, f"{tname}.{new.name}")
