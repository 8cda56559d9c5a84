"""A model (or a reflected table) bound to its live Table: what the operations layer works on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import sqlalchemy as sa

from .models import ModelSpec
from .values import Codec


@dataclass(frozen=True)
class Relation:
    """``include=[name]``: records of ``target`` whose ``remote`` column equals our ``local`` column."""

    name: str
    target: str      # model name
    local: str       # our column
    remote: str      # their column
    many: bool       # True for the reverse side (User.posts), False for Post.author


@dataclass
class Binding:
    """One model's live pieces: spec, table, codec, primary key column and relations."""

    name: str
    table: sa.Table
    spec: ModelSpec | None = None          # None for a reflected, unmodelled table
    codec: Codec | None = None
    relations: dict[str, Relation] = field(default_factory=dict)
    constraints: dict[str, str] = field(default_factory=dict)  # constraint name -> field
    statements: dict[Any, Any] = field(default_factory=dict)   # cached statements by shape
    _encoder: Any = field(default=None, repr=False)
    _partitions: Any = field(default=None, repr=False)

    @property
    def partitions(self) -> frozenset[str]:
        """Fields the query cache partitions on (``cache.partition_fields``), computed once."""
        if self._partitions is None:
            from .cache import partition_fields

            self._partitions = partition_fields(self)
        return self._partitions

    @property
    def encoder(self) -> Callable[[Mapping[str, Any]], dict]:
        """Native record -> its JSON-safe form (what a node outputs)."""
        if self._encoder is None:
            from .encoding import record_encoder
            from .values import json_safe

            self._encoder = record_encoder(self.spec) if self.spec is not None else json_safe
        return self._encoder

    @property
    def pk(self) -> sa.Column:
        cols = list(self.table.primary_key.columns)
        if cols:
            return cols[0]
        return list(self.table.columns)[0]

    @property
    def model_spec(self) -> ModelSpec:
        """The model's spec; an operation that changes records asks for a modelled binding first."""
        if self.spec is None:
            from .errors import ModelError

            raise ModelError(f"{self.name} is a table DataFlow did not create; declare a model to change it",
                             model=self.name)
        return self.spec

    @property
    def model_codec(self) -> Codec:
        """The model's input checks (see ``model_spec``)."""
        if self.codec is None:
            return Codec(self.model_spec)  # raises for an unmodelled table
        return self.codec

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.table.columns]

    @classmethod
    def for_model(cls, spec: ModelSpec, table: sa.Table) -> "Binding":
        constraints = {}
        for c in table.constraints:
            # A per-tenant unique constraint (tenant, field) names its field (the tenant is implied).
            own = [col.name for col in c.columns if col.name != spec.tenant] if isinstance(
                c, sa.UniqueConstraint) else []
            if isinstance(c, sa.UniqueConstraint) and c.name and len(own) == 1:
                constraints[str(c.name)] = own[0]
            if isinstance(c, sa.ForeignKeyConstraint) and c.name:
                constraints[str(c.name)] = next(iter(c.columns)).name
        return cls(name=spec.name, table=table, spec=spec, codec=Codec(spec), constraints=constraints)
