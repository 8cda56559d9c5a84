"""``DataFlowConfig``: every setting of a ``DataFlow``, from arguments, a dict or ``DATAFLOW_*`` variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import ValidationError

DEFAULT_URL = "sqlite:///dataflow.db"

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class DataFlowConfig:
    """Settings of one ``DataFlow`` instance.

    Environment variables ``DATAFLOW_<FIELD>`` (e.g. ``DATAFLOW_DATABASE_URL``,
    ``DATAFLOW_REDIS_URL``, ``DATAFLOW_LOG_LEVEL``, ``DATAFLOW_ENABLE_METRICS``) fill the
    fields that were not given explicitly.
    """

    database_url: str | None = None
    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 3600
    pool_pre_ping: bool = True
    echo: bool = False
    auto_migrate: bool = True
    existing_schema_mode: bool = False
    migration_lock_timeout: float = 60.0
    multi_tenant: bool = False
    tenant_header: str = "X-Tenant-ID"
    tenant_field: str = "tenant_id"
    redis_url: str | None = None
    log_level: str | None = None
    enable_metrics: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"extra"}

    @classmethod
    def build(cls, base: "DataFlowConfig | Mapping[str, Any] | None" = None, **overrides: Any) -> "DataFlowConfig":
        """Merge a config or dict with keyword overrides, then fill the rest from the environment."""
        given: dict[str, Any] = {}
        if isinstance(base, DataFlowConfig):
            given.update({f.name: getattr(base, f.name) for f in fields(base)
                          if getattr(base, f.name) != f.default and f.name != "extra"})
        elif isinstance(base, Mapping):
            given.update(base)
        elif base is not None:
            raise ValidationError(f"DataFlow config must be a URL, a dict or a DataFlowConfig, "
                                  f"got {type(base).__name__}")
        given.update({k: v for k, v in overrides.items() if v is not None})
        if "url" in given and "database_url" not in given:
            given["database_url"] = given.pop("url")
        unknown = set(given) - cls.names()
        if unknown:
            raise ValidationError(f"Unknown DataFlow setting(s): {', '.join(sorted(unknown))}; "
                                  f"known settings: {', '.join(sorted(cls.names()))}")
        env = cls._from_env(exclude=set(given))
        cfg = cls(**{**env, **given})
        if not cfg.database_url:
            cfg = replace(cfg, database_url=DEFAULT_URL)
        return cfg

    @classmethod
    def _from_env(cls, exclude: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in exclude or f.name == "extra":
                continue
            raw = os.environ.get(f"DATAFLOW_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default) if f.default is not None else str
            try:
                out[f.name] = (raw.strip().lower() in _TRUE) if kind is bool else kind(raw)
            except ValueError:
                raise ValidationError(f"DATAFLOW_{f.name.upper()} must be a {kind.__name__}") from None
        return out
