"""Turn an annotated class into a ``ModelSpec``: fields, types, key, defaults, options. No SQL here."""

from __future__ import annotations

import copy
import re
import typing
from dataclasses import dataclass, field as dc_field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable
from uuid import UUID

from .catalog import RESERVED
from .errors import ModelError

#: Python types a field may have; each maps to one column type per dialect (schema/types.py).
SUPPORTED_TYPES: tuple[type, ...] = (int, str, bool, float, Decimal, datetime, date, UUID, bytes, dict, list)

#: Names a field may not take: parameters or result keys of the generated nodes (derived in catalog.py).
RESERVED_FIELDS = RESERVED

TIMESTAMP_FIELDS = ("created_at", "updated_at")

#: Multi-tenant: length of the tenant column DataFlow adds (it starts every unique index, so it is kept
#: short: MySQL limits an index key to 3072 bytes).
TENANT_LENGTH = 64

_MISSING: Any = object()

#: What ``on_delete`` may say: what happens to referring records when the referenced one is deleted.
ON_DELETE_RULES = ("cascade", "set_null", "restrict", "no_action")

DEFAULT_STR_LENGTH = 255
DEFAULT_DECIMAL = (38, 10)


@dataclass(frozen=True)
class Field:
    """Per-field options, given as ``Annotated[str, Field(max_length=1000)]``.

    ``max_length=None`` together with ``text=True`` makes an unbounded TEXT column.
    ``references="User"`` declares a foreign key to that model's primary key.
    """

    max_length: int | None = None
    text: bool = False
    precision: int | None = None
    scale: int | None = None
    unique: bool = False
    index: bool = False
    references: str | None = None
    on_delete: str | None = None
    pii: bool = False  # personal data (GDPR/CCPA export and anonymisation)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a model, resolved."""

    name: str
    pytype: type
    nullable: bool = False
    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    primary_key: bool = False
    autoincrement: bool = False
    max_length: int | None = DEFAULT_STR_LENGTH
    precision: int = DEFAULT_DECIMAL[0]
    scale: int = DEFAULT_DECIMAL[1]
    unique: bool = False
    index: bool = False
    references: str | None = None
    on_delete: str | None = None
    auto: str | None = None  # "created_at" / "updated_at" / "tenant": kept by DataFlow
    added: bool = False  # not declared by the model: DataFlow adds it (timestamps, version, deleted_at)
    pii: bool = False  # declared personal data: Field(pii=True) or __dataflow__ {"pii": [...]}

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING or self.default_factory is not None

    @property
    def required(self) -> bool:
        """True when a create must supply this field."""
        return not (self.nullable or self.has_default or self.autoincrement or self.auto)

    def make_default(self) -> Any:
        if self.default_factory is not None:
            return self.default_factory()
        if self.default is _MISSING:
            return None
        if isinstance(self.default, (dict, list)):
            return copy.deepcopy(self.default)  # a fresh one per record, like a factory
        return self.default

    def describe_type(self) -> str:
        name = self.pytype.__name__
        return f"Optional[{name}]" if self.nullable else name


@dataclass
class ModelSpec:
    """A declared model: its class, table and fields in declaration order."""

    name: str
    table: str
    fields: dict[str, FieldSpec]
    primary_key: str
    options: dict[str, Any] = dc_field(default_factory=dict)
    cls: type | None = None
    #: Multi-tenant: the tenant column of a tenant-scoped model (None: shared, or not multi-tenant).
    tenant: str | None = None

    @property
    def timestamps(self) -> bool:
        return bool(self.options.get("timestamps", True))

    @property
    def soft_delete(self) -> bool:
        return bool(self.options.get("soft_delete", False))

    @property
    def versioned(self) -> bool:
        return bool(self.options.get("versioned", False))

    def field(self, name: str) -> FieldSpec:
        try:
            return self.fields[name]
        except KeyError:
            raise ModelError(f"{self.name} has no field {name!r}", model=self.name, field=name) from None


def table_name_for(class_name: str) -> str:
    """``User`` -> ``users``, ``OrderItem`` -> ``order_items``, ``Category`` -> ``categories``."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()
    if re.search(r"[^aeiou]y$", snake):
        return snake[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", snake):
        return snake + "es"
    return snake + "s"


def _unwrap(name: str, model: str, annotation: Any) -> tuple[type, bool, Field | None]:
    """Return (python type, nullable, Field options) for one annotation."""
    opts: Field | None = None
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        opts = next((e for e in extras if isinstance(e, Field)), None)
        annotation = base
    nullable = False
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1 or len(typing.get_args(annotation)) == len(args):
            raise ModelError(f"{model}.{name}: only Optional[X] unions are supported, got {annotation!r}",
                             model=model, field=name)
        nullable = True
        annotation = args[0]
        if typing.get_origin(annotation) is typing.Annotated:
            annotation, *extras = typing.get_args(annotation)
            opts = opts or next((e for e in extras if isinstance(e, Field)), None)
    base = typing.get_origin(annotation) or annotation  # list[str] -> list, dict[str, Any] -> dict
    if base not in SUPPORTED_TYPES:
        supported = ", ".join(t.__name__ for t in SUPPORTED_TYPES)
        raise ModelError(f"{model}.{name}: type {annotation!r} is not supported; use one of {supported}",
                         model=model, field=name)
    return base, nullable, opts


def spec_from_class(cls: type, *, tenant_field: str | None = None, tenant_default: str | None = None) -> ModelSpec:
    """Read a class's annotations, defaults and ``__dataflow__`` options into a ``ModelSpec``.

    ``tenant_field`` (multi-tenant instances): the model gets that column, kept by DataFlow, unless
    it opts out with ``__dataflow__ = {"tenant_scoped": False}``. ``tenant_default`` is only what a
    migration writes into rows that exist when the column is added (records are always stamped).
    """
    model = cls.__name__
    options = dict(getattr(cls, "__dataflow__", {}) or {})
    if not isinstance(options.get("tenant_scoped", True), bool):
        raise ModelError(f"{model}: __dataflow__['tenant_scoped'] must be True or False", model=model)
    tenant = tenant_field if tenant_field and options.get("tenant_scoped", True) else None
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # a forward reference that does not resolve
        raise ModelError(f"{model}: cannot read type annotations: {exc}", model=model) from exc
    own = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_")]
    names = [n for n in hints if not n.startswith("_") and n in own] or [n for n in hints if not n.startswith("_")]
    if not names:
        raise ModelError(f"{model} declares no fields: annotate them, e.g. 'name: str'", model=model)

    unique_fields = {u for u in options.get("unique", []) if isinstance(u, str)}
    index_fields = {i for i in options.get("indexes", []) if isinstance(i, str)}
    fks: dict[str, Any] = dict(options.get("foreign_keys", {}))
    pii_fields = options.get("pii", [])
    if isinstance(pii_fields, str) or not all(isinstance(p, str) for p in pii_fields):
        raise ModelError(f"{model}: __dataflow__['pii'] must be a list of field names", model=model)
    unknown_pii = [p for p in pii_fields if p not in names]
    if unknown_pii:
        raise ModelError(f"{model}: __dataflow__['pii'] names unknown field(s) {unknown_pii}", model=model,
                         field=unknown_pii[0])
    fields: dict[str, FieldSpec] = {}
    pk = "id"
    if "id" not in names:
        fields["id"] = FieldSpec("id", int, primary_key=True, autoincrement=True)
    for name in names:
        if name in RESERVED_FIELDS:
            raise ModelError(
                f"{model}.{name}: '{name}' is reserved for node parameters; rename the field "
                f"(reserved: {', '.join(sorted(RESERVED_FIELDS))})", model=model, field=name)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or len(name) > MAX_NAME_BYTES:
            raise ModelError(f"{model}.{name}: field names must be identifiers of at most 63 characters",
                             model=model, field=name)
        pytype, nullable, opts = _unwrap(name, model, hints[name])
        opts = opts or Field()
        raw_default = cls.__dict__.get(name, _MISSING)
        default, factory = _MISSING, None
        if callable(raw_default) and not isinstance(raw_default, (type, str, int, float, bool)):
            factory = raw_default
        elif raw_default is not _MISSING:
            # A literal list/dict default is a constant too: rows get it serialised, never shared.
            default = raw_default
        if default is None:
            nullable = True
        is_pk = name == "id"
        max_length = None if opts.text else (opts.max_length or DEFAULT_STR_LENGTH)
        fk = fks.get(name)
        references, on_delete = opts.references, opts.on_delete
        if isinstance(fk, str):
            references = fk
        elif isinstance(fk, dict):
            references = fk.get("model") or fk.get("references")
            on_delete = fk.get("on_delete", on_delete)
        if on_delete is not None and on_delete not in ON_DELETE_RULES:
            raise ModelError(f"{model}.{name}: on_delete must be one of {', '.join(ON_DELETE_RULES)}; "
                             f"got {on_delete!r}", model=model, field=name)
        if on_delete == "set_null" and not nullable:
            # Else the database refuses every delete of a referenced record (NOT NULL), as a puzzling error.
            raise ModelError(f"{model}.{name}: on_delete='set_null' needs a field that can be null; declare it "
                             f"Optional[{pytype.__name__}]", model=model, field=name)
        fields[name] = FieldSpec(
            name=name, pytype=pytype, nullable=nullable and not is_pk, default=default,
            default_factory=factory, primary_key=is_pk,
            autoincrement=is_pk and pytype is int and default is _MISSING,
            max_length=max_length if pytype is str else None,
            precision=opts.precision or DEFAULT_DECIMAL[0],
            scale=opts.scale if opts.scale is not None else DEFAULT_DECIMAL[1],
            unique=opts.unique or name in unique_fields, index=opts.index or name in index_fields,
            references=references, on_delete=on_delete,
            auto=name if name in TIMESTAMP_FIELDS and pytype is datetime else None,
            pii=opts.pii or name in pii_fields,
        )
    if fields[pk].pytype not in (int, str, UUID):
        raise ModelError(f"{model}.id must be int, str or UUID", model=model, field="id")
    # Order: id first, declared fields, then the timestamps DataFlow keeps.
    ordered = {pk: fields.pop(pk), **fields}
    # Fields DataFlow adds; __dataflow__ "indexes"/"unique" may name them too.
    def kept(name: str, pytype: type, **kw: Any) -> FieldSpec:
        return FieldSpec(name, pytype, index=name in index_fields, unique=name in unique_fields, added=True, **kw)

    if options.get("timestamps", True):
        for ts in TIMESTAMP_FIELDS:  # always set by DataFlow: NOT NULL, so an index on them serves sorts
            ordered.setdefault(ts, kept(ts, datetime, auto=ts))
    if options.get("versioned"):
        ordered.setdefault("version", kept("version", int, default=1))
    if options.get("soft_delete"):
        ordered.setdefault("deleted_at", kept("deleted_at", datetime, nullable=True))
    if tenant:
        declared = ordered.get(tenant)
        if declared is not None and (declared.pytype is not str or declared.nullable or declared.primary_key):
            raise ModelError(f"{model}.{tenant} is the tenant field: declare it as 'str' (not Optional, not the "
                             f"key), or leave it out and DataFlow adds it", model=model, field=tenant)
        # Kept by DataFlow: stamped on every write, so never required from the caller.
        ordered[tenant] = FieldSpec(tenant, str, max_length=declared.max_length if declared else TENANT_LENGTH,
                                    index=True, auto="tenant",
                                    default=tenant_default if tenant_default is not None else _MISSING)
    for fname in fks:
        if fname not in ordered:
            raise ModelError(f"{model}: foreign_keys names unknown field {fname!r}", model=model, field=fname)
    table = options.get("table") or getattr(cls, "__tablename__", None) or table_name_for(model)
    _check_table_name(model, table)
    app = options.get("app")
    if app is not None and not (isinstance(app, str) and app.strip()):
        raise ModelError(f"{model}: __dataflow__['app'] must be a non-empty string naming the app the model "
                         f"belongs to; got {type(app).__name__}", model=model)
    return ModelSpec(name=model, table=table, fields=ordered, primary_key=pk, options=options, cls=cls,
                     tenant=tenant)


#: Identifier characters only, as for field names: the name is written into SQL (DDL, index names,
#: the migration history) on every database. 63 bytes is PostgreSQL's limit (MySQL allows 64), so
#: a longer name would be cut there and the table not found again on the next start.
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NAME_BYTES = 63


def _check_table_name(model: str, table: Any) -> None:
    if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
        what = f"a {type(table).__name__}" if not isinstance(table, str) else "a name with other characters"
        raise ModelError(f"{model}: the table name must be an identifier (letters, digits and _, not starting "
                         f"with a digit); got {what}. Set __tablename__ or __dataflow__['table'] to one",
                         model=model)
    if len(table.encode()) > MAX_NAME_BYTES:
        raise ModelError(f"{model}: the table name has {len(table.encode())} characters; at most {MAX_NAME_BYTES} "
                         "work on every database. Set a shorter __tablename__", model=model)
