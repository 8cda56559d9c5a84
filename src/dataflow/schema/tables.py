"""``ModelSpec`` -> SQLAlchemy ``Table``."""

from __future__ import annotations

import hashlib
from typing import Callable

import sqlalchemy as sa

from ..errors import ModelError
from ..models import ModelSpec
from .types import column_type

ON_DELETE = {"cascade": "CASCADE", "set_null": "SET NULL", "restrict": "RESTRICT",
             "no_action": "NO ACTION", None: None}

#: Table options per dialect. MySQL compares strings case-insensitively unless the collation is
#: binary (CONVENTIONS.md: case-sensitive everywhere), and MariaDB's utf8mb4_bin still pads with
#: spaces: 'a' = 'a ' and '\n' < ''. The NO PAD binary collation compares like SQLite and PostgreSQL.
MYSQL_COLLATION = "utf8mb4_nopad_bin"
TABLE_KWARGS = {"mysql_charset": "utf8mb4", "mysql_collate": MYSQL_COLLATION, "mysql_engine": "InnoDB",
                "mariadb_charset": "utf8mb4", "mariadb_collate": MYSQL_COLLATION, "mariadb_engine": "InnoDB"}


#: The longest identifier every supported database keeps whole (PostgreSQL: 63 bytes).
MAX_NAME = 63


def key_name(prefix: str, table: str, rest: str) -> str:
    """``<prefix>_<table>_<rest>`` for an index or constraint; when longer than 63 characters, cut and
    ended with a hash of the whole name, so that two long names never become the same one (a plain
    cut made the indexes of a long table name collide, and the second was silently not created)."""
    name = f"{prefix}_{table}_{rest}"
    if len(name) <= MAX_NAME:
        return name
    return f"{name[:MAX_NAME - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def build_table(spec: ModelSpec, metadata: sa.MetaData,
                resolve: Callable[[str], ModelSpec] | None = None) -> sa.Table:
    """Create (or replace) the table for ``spec`` in ``metadata``.

    ``resolve`` maps a referenced model name to its spec, for foreign keys.
    """
    for group in [*spec.options.get("unique", []), *spec.options.get("indexes", [])]:
        names = [group] if isinstance(group, str) else list(group["fields"] if isinstance(group, dict) else group)
        for name in names:
            if name not in spec.fields:
                raise ModelError(f"{spec.name}: __dataflow__ index or unique names unknown field {name!r}",
                                 model=spec.name, field=name)
    columns: list[sa.SchemaItem] = []
    for f in spec.fields.values():
        args: list = []
        if f.references:
            if resolve is None:
                raise ModelError(f"{spec.name}.{f.name} references {f.references} but no resolver",
                                 model=spec.name, field=f.name)
            target = resolve(f.references)
            ondelete = ON_DELETE.get(f.on_delete)
            if f.on_delete not in ON_DELETE:
                raise ModelError(f"{spec.name}.{f.name}: on_delete must be one of cascade, set_null, "
                                 f"restrict, no_action", model=spec.name, field=f.name)
            args.append(sa.ForeignKey(f"{target.table}.{target.primary_key}", ondelete=ondelete,
                                      name=key_name("fk", spec.table, f.name)))
        columns.append(sa.Column(
            f.name,
            column_type(f.pytype, max_length=f.max_length, precision=f.precision, scale=f.scale,
                        primary_key=f.primary_key),
            *args,
            primary_key=f.primary_key,
            autoincrement=True if f.autoincrement else False,
            nullable=f.nullable and not f.primary_key,
            # DataFlow stamps created_at/updated_at itself; the server default covers rows other tools insert.
            server_default=sa.text("CURRENT_TIMESTAMP") if f.auto in ("created_at", "updated_at") else None,
            info={"pytype": f.pytype, "field": f, **({"tenant": True} if f.name == spec.tenant else {})},
        ))
    # Multi-tenant: every unique constraint is per tenant (two tenants may both have email 'a@x'), so
    # it starts with the tenant column; its name says so (uq_<table>_<tenant>_<fields>).
    per_tenant = [spec.tenant] if spec.tenant else []
    for f in spec.fields.values():
        if f.unique and not f.primary_key and f.name != spec.tenant:
            cols = [*per_tenant, f.name]
            columns.append(sa.UniqueConstraint(*cols, name=key_name("uq", spec.table, '_'.join(cols))))
        elif f.index or f.references:
            columns.append(sa.Index(key_name("ix", spec.table, f.name), f.name))
    for group in spec.options.get("unique", []):
        if not isinstance(group, str):
            cols = [*per_tenant, *[c for c in group if c != spec.tenant]]
            columns.append(sa.UniqueConstraint(*cols, name=key_name("uq", spec.table, '_'.join(cols))))
    for group in spec.options.get("indexes", []):
        if isinstance(group, dict):
            cols = list(group["fields"])
            if group.get("unique") and per_tenant:
                cols = [*per_tenant, *[c for c in cols if c != spec.tenant]]
            columns.append(sa.Index(group.get("name") or key_name("ix", spec.table, '_'.join(cols)), *cols,
                                    unique=bool(group.get("unique"))))
        elif not isinstance(group, str):
            cols = list(group)
            columns.append(sa.Index(key_name("ix", spec.table, '_'.join(cols)), *cols))
    if spec.table in metadata.tables:
        metadata.remove(metadata.tables[spec.table])
    return sa.Table(spec.table, metadata, *columns, info={"model": spec.name}, **TABLE_KWARGS)


#: ON DELETE rules under which the database itself changes the referring rows.
CHANGING_RULES = ("CASCADE", "SET NULL", "SET DEFAULT")


def delete_actions(table: sa.Table) -> list[tuple[sa.Table, sa.ForeignKey, str]]:
    """(referring table, foreign key, rule) for each foreign key of ``table``'s metadata to ``table`` whose
    ON DELETE rule makes the database change the referring rows when a row of ``table`` is deleted."""
    out = []
    for other in table.metadata.tables.values():
        for fk in other.foreign_keys:
            rule = (fk.ondelete or "").upper()
            if rule in CHANGING_RULES and fk.column.table is table:
                out.append((other, fk, rule))
    return out
