"""``DataFlowConfig``: every setting of a ``DataFlow``, from arguments, a dict or ``DATAFLOW_*`` variables.

No setting is accepted and then ignored: a setting whose feature is not built yet is refused with a
``SettingError`` naming it when given in code, and warned about when it comes from the environment
(a deployment may set variables for a newer version); unknown ``DATAFLOW_*`` variables are warned about.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from ..errors import SettingError

log = logging.getLogger("dataflow.config")

DEFAULT_URL = "sqlite:///dataflow.db"

_TRUE = {"1", "true", "yes", "on"}
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

#: Settings whose feature is not built yet: what they would do. Given in code they are refused;
#: from the environment they are warned about. A feature that lands removes its line.
UNBUILT: dict[str, str] = {
}
#: Settings that configure an unbuilt feature: refused when they differ from their default.
UNBUILT_DETAILS: dict[str, str] = {}

#: DATAFLOW_* variables read elsewhere (the web server, the test suite), not settings of an instance.
OTHER_VARIABLES = frozenset({"HOST", "PORT", "TEST_URLS", "TEST_PG", "TEST_MYSQL", "LOG_FORMAT"})
_warned: set[str] = set()


@dataclass(frozen=True)
class DataFlowConfig:
    """Settings of one ``DataFlow`` instance.

    Environment variables ``DATAFLOW_<FIELD>`` (e.g. ``DATAFLOW_DATABASE_URL``,
    ``DATAFLOW_LOG_LEVEL``) fill the fields that were not given explicitly; the database URL falls
    back to ``DATABASE_URL``, then to a SQLite file ``dataflow.db`` in the working directory.
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
    #: Multi-tenant: the value existing rows get when a migration adds the tenant column to a table
    #: that has rows (None: such a migration stops with a MigrationError asking for it).
    tenant_default: str | None = None
    #: Multi-tenant on PostgreSQL: row-level security as a second wall (a policy per tenant table,
    #: FORCE ROW LEVEL SECURITY, the tenant set with set_config(..., true) in every transaction).
    tenant_rls: bool = True
    redis_url: str | None = None
    #: ``redis_url`` names a node of a Redis Cluster (same as a ``redis+cluster://`` URL): the cache
    #: uses redis-py's ``RedisCluster`` and hash-tagged keys (see ``dataflow.cache``).
    redis_cluster: bool = False
    log_level: str | None = None
    enable_metrics: bool = False
    #: Record every write in the ``dataflow_audit`` table, in the write's transaction (same as
    #: ``db.enable_audit_log()``).
    audit_log: bool = False
    #: The most records a List node returns when asked for more (or for all, ``limit=None``).
    max_limit: int = 10_000
    #: Prefix of this instance's node names (``"Shop"`` -> ``ShopUserCreateNode``): lets two
    #: instances declare the same model in one process.
    node_prefix: str = ""
    #: Label of this application's models in ``dataflow_migrations``: a destructive migration only
    #: ever drops tables that models with the same label created (``__dataflow__ = {"app": ...}``
    #: labels one model).
    app: str | None = None
    #: Operations slower than this many milliseconds are logged (SQL text only, never values); 0: off.
    slow_query_ms: float = 0.0
    #: Seconds every cacheable read is cached by default (0: only reads that ask, and models with
    #: ``cache_ttl``). Redis from ``redis_url``, else an in-process LRU of ``cache_size`` entries.
    cache_ttl: float = 0.0
    cache_size: int = 10_000
    #: Prefix of every cache key in Redis (several applications may share one server).
    cache_prefix: str = "dataflow:"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)} - {"extra"}

    def __repr__(self) -> str:
        from .engine import safe_url

        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        if shown["database_url"]:
            shown["database_url"] = safe_url(shown["database_url"])
        if shown["redis_url"]:
            shown["redis_url"] = safe_redis_url(shown["redis_url"])
        return f"DataFlowConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

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
            raise SettingError(f"DataFlow config must be a URL, a dict or a DataFlowConfig, "
                               f"got {type(base).__name__}")
        given.update({k: v for k, v in overrides.items() if v is not None})
        if "url" in given and "database_url" not in given:
            given["database_url"] = given.pop("url")
        unknown = set(given) - cls.names()
        if unknown:
            raise SettingError(f"Unknown DataFlow setting(s): {', '.join(sorted(unknown))}; "
                               f"known settings: {', '.join(sorted(cls.names()))}")
        _refuse_unbuilt(given)
        env = cls._from_env(exclude=set(given))
        cfg = cls(**{**env, **given})
        if not cfg.database_url:
            fallback = os.environ.get("DATABASE_URL", "").strip()
            if fallback:
                cfg = replace(cfg, database_url=fallback)
            else:
                log.info("no database URL given (argument, DATAFLOW_DATABASE_URL or DATABASE_URL): using the "
                         "SQLite file %s", os.path.abspath("dataflow.db"))
                cfg = replace(cfg, database_url=DEFAULT_URL)
        cfg._check()
        return cfg

    def _check(self) -> None:
        if self.log_level is not None and str(self.log_level).upper() not in LOG_LEVELS:
            raise SettingError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if isinstance(self.max_limit, bool) or not isinstance(self.max_limit, int) or self.max_limit < 1:
            raise SettingError("max_limit must be a positive integer")
        for name in ("slow_query_ms", "cache_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise SettingError(f"{name} must be a non-negative number")
        if isinstance(self.cache_size, bool) or not isinstance(self.cache_size, int) or self.cache_size < 1:
            raise SettingError("cache_size must be a positive integer")
        if not isinstance(self.cache_prefix, str):
            raise SettingError("cache_prefix must be a string")
        if not isinstance(self.redis_cluster, bool):
            raise SettingError("redis_cluster must be True or False")
        if self.redis_cluster and not self.redis_url:
            raise SettingError("redis_cluster needs redis_url, the address of a cluster node "
                               "(redis+cluster://host:port says both at once)")
        if not isinstance(self.tenant_field, str) or not self.tenant_field.isidentifier():
            raise SettingError("tenant_field must be a field name such as 'tenant_id'")
        if not isinstance(self.tenant_header, str) or not self.tenant_header.strip():
            raise SettingError("tenant_header must be an HTTP header name such as 'X-Tenant-ID'")
        if self.tenant_default is not None and (not isinstance(self.tenant_default, str) or not self.tenant_default):
            raise SettingError("tenant_default must be a non-empty string (a tenant id)")
        if not isinstance(self.node_prefix, str) or (self.node_prefix and not self.node_prefix.isidentifier()):
            raise SettingError("node_prefix must be a Python identifier such as 'Shop' (it starts node names)")

    @classmethod
    def _from_env(cls, exclude: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known = {f.name.upper() for f in fields(cls)}
        for var in os.environ:
            if var.startswith("DATAFLOW_") and var[9:] not in known and var[9:] not in OTHER_VARIABLES:
                _warn_once(var, f"{var} is not a DataFlow setting and is ignored; settings are "
                                f"{', '.join(sorted('DATAFLOW_' + n.upper() for n in cls.names()))}")
        for f in fields(cls):
            if f.name in exclude or f.name == "extra":
                continue
            raw = os.environ.get(f"DATAFLOW_{f.name.upper()}")
            if raw is None:
                continue
            kind: Any = type(f.default) if f.default is not None else str
            try:
                value = (raw.strip().lower() in _TRUE) if kind is bool else kind(raw)
            except ValueError:
                raise SettingError(f"DATAFLOW_{f.name.upper()} must be a {kind.__name__}") from None
            if f.name in UNBUILT and value:
                _warn_once(f.name, f"DATAFLOW_{f.name.upper()} is set, but {UNBUILT[f.name]} is not built in this "
                                   f"version of DataFlow: the setting has no effect")
                continue
            out[f.name] = value
        return out


def safe_redis_url(url: str) -> str:
    """A Redis URL fit for logs: the password masked (also in ``redis+cluster://h1:7000,h2:7000`` URLs,
    which are not single-host URLs)."""
    if not isinstance(url, str):
        return "<not a URL>"
    scheme, sep, rest = url.partition("://")
    userinfo, at, tail = rest.rpartition("@")  # the last '@': a password may hold an unencoded '@' or '/'
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{tail}"


def _refuse_unbuilt(given: Mapping[str, Any]) -> None:
    for name, feature in UNBUILT.items():
        if given.get(name):
            raise SettingError(f"{name} is not supported yet: {feature} is not built in this version of DataFlow, "
                               f"and running without it would be worse than not starting; remove the setting")
    for name, owner in UNBUILT_DETAILS.items():
        default = DataFlowConfig.__dataclass_fields__[name].default
        if owner in UNBUILT and name in given and given[name] != default:
            raise SettingError(f"{name} configures {owner}, which is not supported yet; remove the setting")


def _warn_once(key: str, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    log.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=4)
