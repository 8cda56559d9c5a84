"""The connection pool: ``db.pool_stats()`` and the error for a pool that stayed exhausted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PoolTimeoutError

if TYPE_CHECKING:
    from .core.dataflow import DataFlow


def pool_stats(db: "DataFlow") -> dict[str, Any]:
    """Pool class, configured limits, and connections checked out, idle and in overflow now."""
    pool = db.engine.pool
    out: dict[str, Any] = {"pool": type(pool).__name__, "backend": db.backend}
    if hasattr(pool, "size") and hasattr(pool, "checkedout") and type(pool).__name__ == "QueuePool":
        out.update(size=pool.size(), max_overflow=pool._max_overflow, timeout=db.config.pool_timeout,
                   checked_out=pool.checkedout(), checked_in=pool.checkedin(), overflow=max(pool.overflow(), 0),
                   connections=pool.checkedout() + pool.checkedin())
    else:  # SQLite: one file, no server; pool_size/max_overflow do not apply
        checked_out = pool.checkedout() if hasattr(pool, "checkedout") else None
        out.update(size=None, max_overflow=None, timeout=None, checked_out=checked_out, checked_in=None,
                   overflow=None, connections=None)
    return out


def pool_timeout(db: "DataFlow", what: str) -> PoolTimeoutError:
    """Every connection of the pool stayed busy for pool_timeout seconds."""
    cfg = db.config
    return PoolTimeoutError(
        f"{what}: no database connection free after waiting {cfg.pool_timeout:g}s: all "
        f"{cfg.pool_size + cfg.max_overflow} connections (pool_size={cfg.pool_size} + max_overflow="
        f"{cfg.max_overflow}) are in use; raise pool_size, shorten transactions, or raise pool_timeout")
