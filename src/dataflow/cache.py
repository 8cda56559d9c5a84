"""The query cache: ``@app.cached(ttl=60)``, cacheable reads, and exact invalidation by table version.

How staleness is ruled out
--------------------------
Every table has a version token in the store (Redis, or this process's memory). Every write
through the operations layer, whatever door it came in by, replaces the token of its table when it
commits (the cache policy's ``after_commit``; inside ``db.transaction()`` at the outer commit).
A cached entry records the tokens of the tables it was computed from, read *before* its queries
ran, and is stored only if those tokens are still current (checked and written atomically: a Lua
script in Redis, a lock in memory). A look-up compares the entry's tokens with the current ones
and treats any difference as a miss. So an entry computed from a table that changed before,
during or after the query is never served after the change's commit; entries are not hunted
down on writes, they stop matching.

Reads pinned to part of a table are finer. A read by primary key records two tokens instead of the
table's: the table's *wide* token and its record's *row* token (``<table>|wide``,
``<table>|r:<key>``); a read whose filter requires a plain equality on a key field (primary key,
unique field, foreign key or a field with an index of its own, of type int, str, bool or UUID:
``{"grp": 3}``) records the wide token and that *partition*'s token (``<table>|p:<field>:<hash>``).
A write that knows exactly what it changed (create, update, upsert: the record it returns; a
delete where the key is the only partition field) replaces the table token and the tokens of that
record's row and partitions. Every other change (a delete, a bulk operation, an update that moves a
record to another partition, a write whose outcome is unknown, a migration, ``invalidate_table``,
ON DELETE actions) replaces the table and wide tokens. So on a read-mostly table, pinned reads of
other records and partitions stay hits while some records change; unpinned reads (and cached
functions) stay table-wide. Row and partition tokens expire after six hours in Redis (the
in-process store forgets them past a bound): an expired token turns its entries into misses, never
into stale answers. Which fields pin a partition follows each process's declarations and DataFlow
version: processes that share Redis with another *layout* of a table (a rolling deploy) use only its
table token until the other layout is gone (``dataflow.cache_layouts``, which states the window left).

A cached function's tables are detected: the calls planned while it runs (every door ends in a
planned call) record their tables and current tokens; ``tables=[...]`` adds tables its own SQL
touches outside DataFlow.

Keys: ``<prefix>e:<table>:<action>:<hash>`` for reads (the hash of the final SQL text, its bound
values, the context's tenant and the database), ``<prefix>e:fn:<module.qualname>:<hash>`` for
functions (their arguments, as JSON, the tenant and the database). ``app.cache.invalidate("users:*")``
drops entries by pattern. The database (``database_scope``: backend, user, host, port and database
name, never the password; a SQLite file's absolute path) is in every entry's hash, so applications on
different databases that share a Redis server and key prefix never read each other's entries. Version
tokens are per table name only: such applications' writes cost each other misses, never a stale read,
and two URLs for one database still invalidate each other's entries.

When Redis is unreachable nothing fails: reads run uncached, one warning is logged per outage,
writes remember which tables they changed and replace those tokens as soon as Redis answers again.

Redis Cluster
-------------
``redis+cluster://host:port`` (several nodes: ``redis+cluster://h1:7000,h2:7000``), or a
``redis://`` URL with the ``redis_cluster`` setting, uses redis-py's ``RedisCluster``
(:class:`ClusterStore`). A multi-key command or Lua script must touch one hash slot only, so keys
carry a hash tag: ``{<prefix><table>}`` at the end of a table's version key and of every read
entry of that table, ``{<prefix>fn:<module.qualname>}`` at the end of a cached function's entries.

The trade-off: tables are the unit of distribution. A cached read (one table) lives in its
table's slot, so its look-up is one MGET and its store the same atomic Lua check-and-write as on a
single server; different tables, and different applications (prefixes), spread over the primaries.
A cached function depends on several tables that may live on several nodes, so its store cannot be
one atomic step: it checks the versions, writes, checks again and deletes the entry if a version
moved in between. Exactness never rested on that step alone: a look-up serves an entry only while
the versions it recorded are the current ones, so the worst a race leaves is a dead entry, never a
stale answer. A single hot table stays on one node; the other design, one tag for the whole cache,
would put *everything* on one node. To choose it anyway, give the prefix a tag of its own
(``cache_prefix="{shop}:"``): Redis hashes the first ``{...}`` of a key, so every key of that
cache then shares one slot and every store is atomic. Either way the code computes slots rather
than assuming them: keys in one slot use the single-command paths, others the per-slot ones.

Pattern invalidation, ``clear()`` and ``stats()`` scan every primary node (the pattern is matched
against the key without its tag). Availability is checked on every primary (``cluster_state:ok``):
one node down means the whole cache runs uncached, with one warning, until every node answers. A
write made while the cache is down still replaces the tokens that live on nodes that answer (other
processes may be reading from those nodes); the rest wait, as with a single server. Replication is
asynchronous in Redis: a primary lost before it passed a fresh token to the replica that replaces
it can bring an older token back; entries stored under it in that window could be served again.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

import sqlalchemy as sa

from .cache_layouts import BEAT_S, LIVE_S, SCRIPT as LAYOUTS_SCRIPT, Layouts
from .errors import SettingError, ValidationError
from .operations.call import MISSING as MISSING_ID
from .operations.context import current

if TYPE_CHECKING:
    from .core.dataflow import DataFlow

log = logging.getLogger("dataflow.cache")

#: Seconds between attempts to reach Redis again after it failed.
RETRY_AFTER_S = 1.0
_TAG = "__df__"
#: Row and partition tokens (one per record or value written) expire after this long, so the store
#: does not grow with the data; an expired token only turns its entries into misses (never stale).
FINE_TOKEN_TTL_MS = 6 * 3600 * 1000
#: The in-process store forgets its row and partition tokens past this many tokens (same effect).
FINE_TOKENS_MAX = 200_000


def _fine(token: str) -> bool:
    return "|r:" in token or "|p:" in token


def _token_px(token: str) -> int | None:
    return FINE_TOKEN_TTL_MS if _fine(token) else None


# ---------------------------------------------------------------------- values <-> bytes
def _enc(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, dict):
        out = {str(k) if not isinstance(k, str) else k: _enc(x) for k, x in v.items()}
        if _TAG in out:  # a user's dict that looks like one of ours: kept apart
            return {_TAG: ["map", [[k, x] for k, x in out.items()]]}
        return out
    if isinstance(v, (list, tuple)):
        return [_enc(x) for x in v]
    if isinstance(v, datetime):
        return {_TAG: ["dt", v.isoformat()]}
    if isinstance(v, date):
        return {_TAG: ["d", v.isoformat()]}
    if isinstance(v, dtime):
        return {_TAG: ["t", v.isoformat()]}
    if isinstance(v, Decimal):
        return {_TAG: ["dec", str(v)]}
    if isinstance(v, uuid.UUID):
        return {_TAG: ["uuid", str(v)]}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {_TAG: ["b", base64.b64encode(bytes(v)).decode()]}
    if isinstance(v, timedelta):
        return {_TAG: ["td", v.total_seconds()]}
    raise TypeError(type(v).__name__)


_DECODE: dict[str, Callable[[Any], Any]] = {
    "dt": datetime.fromisoformat, "d": date.fromisoformat, "t": dtime.fromisoformat, "dec": Decimal,
    "uuid": uuid.UUID, "b": base64.b64decode, "td": lambda s: timedelta(seconds=s),
    "map": lambda pairs: dict(pairs),
}


def _hook(d: dict) -> Any:
    if len(d) == 1:
        tagged = d.get(_TAG)
        if tagged is not None:
            return _DECODE[tagged[0]](tagged[1])
    return d


def _copy(v: Any) -> Any:
    """A copy the caller may change without changing the cached value (containers copied, scalars shared)."""
    cls = type(v)
    if cls is list:
        return [x if type(x) not in _CONTAINERS else _copy(x) for x in v]
    if cls is dict:
        return {k: x if type(x) not in _CONTAINERS else _copy(x) for k, x in v.items()}
    return v


_CONTAINERS = (list, dict)


class _Records(list):
    """Records whose values are all scalars: a hit copies each dict, nothing deeper."""


def _frozen(value: Any) -> Any:
    """What the in-process store keeps: a private copy, marked when copying it back can stay shallow."""
    value = _copy(value)
    if type(value) is list and all(type(r) is dict and not any(type(x) in _CONTAINERS for x in r.values())
                                   for r in value):
        return _Records(value)
    return value


def _thawed(value: Any) -> Any:
    if type(value) is _Records:
        return [r.copy() for r in value]
    return _copy(value)


def encode(value: Any) -> bytes:
    """JSON bytes for ``value``, keeping datetimes, decimals, UUIDs and bytes exact. TypeError otherwise."""
    return json.dumps(_enc(value), separators=(",", ":")).encode()


def decode(raw: bytes | str) -> Any:
    return json.loads(raw, object_hook=_hook)


def digest(*parts: Any) -> str:
    return hashlib.blake2b(encode(list(parts)), digest_size=16).hexdigest()


def _pack(versions: Mapping[str, str], payload: bytes) -> bytes:
    return json.dumps(versions, separators=(",", ":")).encode() + b"\n" + payload


def _unpack(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, payload = raw.partition(b"\n")
    return json.loads(head), payload


def database_scope(url: Any) -> str:
    """Which database cached values come from, for entry keys: no password, SQLite paths made absolute.

    A SQLite database in memory is this instance's own: it gets a scope no other instance shares.
    """
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        name = u.database or ""
        if name in ("", ":memory:") or name.startswith("file::memory:") or u.query.get("mode") == "memory":
            return f"sqlite-memory:{uuid.uuid4().hex}"
        if name.startswith("file:"):  # a URI filename: its path, without the URI's options
            name = name[5:].split("?", 1)[0]
        return f"sqlite:{os.path.abspath(name)}"
    return digest(u.get_backend_name(), u.username, u.host, u.port, u.database)


# ---------------------------------------------------------------------- stores
class StoreDown(Exception):
    """The store cannot be reached right now (``failed``: the tables a ``bump`` could not replace)."""

    def __init__(self, what: str, failed: set[str] | None = None) -> None:
        super().__init__(what)
        self.failed = failed


class LocalStore:
    """In-process: an LRU of at most ``size`` entries, version tokens in a dict.

    Entries keep the Python value itself (a hit copies its containers, no decoding) next to the
    size of its encoded form (``stats()["bytes"]``).
    """

    kind = "memory"
    #: Can part of the store be down while the rest answers (a cluster)?
    partial = False

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[float, tuple[dict, Any], int]] = OrderedDict()
        self._versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._bytes = 0

    def place(self, key: str, group: str) -> str:
        """The stored key of an entry named ``key`` that belongs with ``group`` (a table, a function)."""
        return key

    def ping(self) -> None:
        """Raise ``StoreDown`` unless the store answers."""

    def close(self) -> None:
        pass

    def _current(self, tables: Iterable[str]) -> dict[str, str]:
        """Current tokens (the lock held); a table without one gets one."""
        versions = self._versions
        out = {}
        for t in tables:
            v = versions.get(t)
            if v is None:
                if len(versions) > FINE_TOKENS_MAX:
                    self._trim()
                    versions = self._versions
                v = versions[t] = uuid.uuid4().hex
            out[t] = v
        return out

    def _trim(self) -> None:
        self._versions = {t: v for t, v in self._versions.items() if not _fine(t)}

    def versions(self, tables: Iterable[str]) -> dict[str, str]:
        with self._lock:
            return self._current(tables)

    def get(self, key: str, tables: Iterable[str] = ()) -> tuple[tuple[dict, Any] | None, dict[str, str]]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] < time.monotonic():
                    self._drop(key)
                    entry = None
                else:
                    self._entries.move_to_end(key)
            return (entry[1] if entry else None), self._current(tables)

    def put_if(self, key: str, value: Any, payload: bytes, ttl: float, expected: Mapping[str, str]) -> bool:
        with self._lock:
            if any(self._versions.get(t) != v for t, v in expected.items()):
                return False
            self._drop(key)
            self._entries[key] = (time.monotonic() + ttl, (dict(expected), value), len(payload))
            self._bytes += len(payload)
            while len(self._entries) > self.size:
                self._drop(next(iter(self._entries)))
            return True

    def _drop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[2]

    def bump(self, tables: Iterable[str], avoid: float = 0.0) -> None:
        with self._lock:
            if len(self._versions) > FINE_TOKENS_MAX:
                self._trim()
            for t in tables:
                self._versions[t] = uuid.uuid4().hex

    def delete(self, pattern: str) -> int:
        import fnmatch

        with self._lock:
            doomed = [k for k in self._entries if fnmatch.fnmatchcase(k, pattern)]
            for k in doomed:
                self._drop(k)
            return len(doomed)

    def usage(self, pattern: str) -> tuple[int, int]:
        with self._lock:
            now = time.monotonic()
            live = [v for v in self._entries.values() if v[0] >= now]
            return len(live), sum(v[2] for v in live)


#: Store ``ARGV[2]`` under ``KEYS[1]`` for ``ARGV[1]`` ms only if every version key ``KEYS[i]`` (i >= 2)
#: still holds ``ARGV[i + 1]``: the check and the write are one atomic step.
_PUT_IF = """
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""


class RedisStore:
    """Redis (redis-py): entries with a TTL, version tokens under ``<prefix>v:<table>``."""

    kind = "redis"
    partial = False

    def __init__(self, url: str, prefix: str) -> None:
        redis = _redis_py()
        self.prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
            redis.exceptions.ReadOnlyError, OSError)
        try:
            self.client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=2.0,
                                               health_check_interval=30)
        except ValueError:
            raise SettingError("redis_url is not a Redis URL; expected redis://host:6379/0") from None
        self._put_if = self.client.register_script(_PUT_IF)
        self._layouts = self.client.register_script(LAYOUTS_SCRIPT)

    def _v(self, table: str) -> str:
        return f"{self.prefix}v:{table}"

    def _registry(self, table: str) -> str:
        return f"{self.prefix}layouts:{table}"

    def layouts(self, table: str, fingerprint: str) -> frozenset[str]:
        """Register layout ``fingerprint`` of ``table``; the other live ones (``dataflow.cache_layouts``)."""
        with self._guard():
            found = self._run_layouts(keys=[self._registry(table)], args=[fingerprint, LIVE_S, BEAT_S])
        return frozenset(f.decode() if isinstance(f, bytes) else f for f in found)

    def _run_layouts(self, keys: list[str], args: list[Any]) -> Any:
        return self._layouts(keys=keys, args=args)

    def place(self, key: str, group: str) -> str:
        return key

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreDown(type(exc).__name__) from None

    def ping(self) -> None:
        self.versions(["__dataflow_ping__"])

    def close(self) -> None:
        self.client.close()

    def _fill(self, tables: list[str], found: list) -> dict[str, str]:
        """Current tokens; a table without one gets one (first use, or Redis lost it)."""
        out = {}
        for t, v in zip(tables, found):
            if v is None:
                self.client.set(self._v(t), uuid.uuid4().hex, nx=True, px=_token_px(t))
                v = self.client.get(self._v(t))
            out[t] = v.decode() if isinstance(v, bytes) else v
        return out

    def versions(self, tables: Iterable[str]) -> dict[str, str]:
        tables = list(tables)
        if not tables:
            return {}
        with self._guard():
            return self._fill(tables, self.client.mget([self._v(t) for t in tables]))

    def get(self, key: str, tables: Iterable[str] = ()) -> tuple[bytes | None, dict[str, str]]:
        tables = list(tables)
        with self._guard():
            found = self.client.mget([key, *(self._v(t) for t in tables)])
            return found[0], self._fill(tables, found[1:])

    def put_if(self, key: str, value: Any, payload: bytes, ttl: float, expected: Mapping[str, str]) -> bool:
        tables = list(expected)
        with self._guard():
            return bool(self._put_if(keys=[key, *(self._v(t) for t in tables)],
                                     args=[max(1, int(ttl * 1000)), _pack(expected, payload),
                                           *(expected[t] for t in tables)]))

    def bump(self, tables: Iterable[str], avoid: float = 0.0) -> None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for t in tables:
                pipe.set(self._v(t), uuid.uuid4().hex, px=_token_px(t))
            pipe.execute()

    def _scan(self, pattern: str) -> Iterator[bytes]:
        return self.client.scan_iter(match=pattern, count=500)

    def delete(self, pattern: str) -> int:
        n = 0
        with self._guard():
            batch = []
            for key in self._scan(pattern):
                batch.append(key)
                if len(batch) >= 500:
                    n += self.client.unlink(*batch)
                    batch = []
            if batch:
                n += self.client.unlink(*batch)
        return n

    def usage(self, pattern: str) -> tuple[int, int]:
        with self._guard():
            keys = list(self._scan(pattern))
            if not keys:
                return 0, 0
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.strlen(k)
            sizes = pipe.execute()
            return sum(1 for s in sizes if s), sum(sizes)


def _redis_py() -> Any:
    try:
        import redis
    except ImportError:
        raise SettingError("redis_url needs redis-py: pip install 'dataflow-workflows[cache]'") from None
    return redis


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """``redis+cluster://[user:pass@]h1:p1[,h2:p2...][/0][?options]`` -> (a ``redis://`` URL of the
    first node, the other nodes). A plain ``redis://`` or ``rediss://`` URL names one node.

    Only the address is read here; nothing connects. Errors never quote the URL (it may hold a password).
    """
    scheme, sep, rest = url.partition("://")
    base = {"redis+cluster": "redis", "rediss+cluster": "rediss", "redis": "redis", "rediss": "rediss"}.get(
        scheme.lower()) if sep else None
    if base is None:
        raise SettingError("a Redis Cluster URL is redis+cluster://host:port (several nodes: "
                           "redis+cluster://host1:port,host2:port; TLS: rediss+cluster://)")
    userinfo, at, after = rest.rpartition("@")  # the last '@': a password may hold an unencoded '@' or '/'
    end = min((i for i in (after.find("/"), after.find("?"), after.find("#")) if i >= 0), default=len(after))
    hosts, tail = after[:end], after[end:]
    names = hosts.split(",")
    others = []
    for name in names[1:]:
        try:
            parts = urlsplit(f"//{name}")
            host, port = parts.hostname, parts.port or 6379
        except ValueError:
            host = None
        if not host:
            raise SettingError("a Redis Cluster URL lists nodes as host:port separated by commas")
        others.append((host, port))
    first = f"{base}://{userinfo}{at}{names[0]}{tail}"
    from redis.connection import parse_url

    try:
        options = parse_url(first)
    except ValueError:
        raise SettingError("redis_url is not a Redis URL; expected redis+cluster://host:port") from None
    if not options.get("host"):
        raise SettingError("a Redis Cluster URL needs a host:port of one of its nodes")
    if options.get("db", 0) != 0:
        raise SettingError("Redis Cluster has only database 0: drop the database number from redis_url")
    return first, others


#: How many times redis-py retries a command after a connection error (it first reloads the slot map).
CLUSTER_RETRIES = 1


class ClusterStore(RedisStore):
    """Redis Cluster (``redis.cluster.RedisCluster``): keys carry a hash tag (see the module docstring).

    The client is made on first use (``RedisCluster`` asks a node for the slot map when it is made,
    and a ``DataFlow`` connects nothing until its first operation); a cluster that cannot be reached
    then is an outage like any other.
    """

    kind = "redis-cluster"
    partial = True

    def __init__(self, url: str, prefix: str) -> None:  # not super().__init__: the client is made lazily
        redis = _redis_py()
        from redis.cluster import key_slot

        self.prefix = prefix
        self._url, self._others = cluster_nodes(url)
        self._key_slot = key_slot
        e = redis.exceptions
        self._errors = (e.ConnectionError, e.TimeoutError, e.BusyLoadingError, e.ReadOnlyError, e.ClusterError,
                        e.ClusterDownError, e.TryAgainError, e.RedisClusterException, OSError)
        self._client: Any = None
        self._script: Any = None
        self._layouts: Any = None
        self._made = threading.Lock()
        #: node name -> monotonic time its last command failed (bumps skip it for a while when asked).
        self._failed_at: dict[str, float] = {}
        self._slots: dict[str, int] = {}

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._made:
                if self._client is None:
                    self._client = self._connect()
                client = self._client
        return client

    def _connect(self) -> Any:
        import redis
        from redis.cluster import ClusterNode, RedisCluster

        kw: dict[str, Any] = {"socket_connect_timeout": 0.5, "socket_timeout": 2.0, "health_check_interval": 30}
        if int(redis.__version__.split(".")[0]) >= 6:
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kw["retry"] = Retry(NoBackoff(), CLUSTER_RETRIES)
        else:  # pragma: no cover - redis-py 5
            kw["cluster_error_retry_attempts"] = CLUSTER_RETRIES
        client = RedisCluster(url=self._url, startup_nodes=[ClusterNode(h, p) for h, p in self._others], **kw)
        self._script = client.register_script(_PUT_IF)
        self._layouts = client.register_script(LAYOUTS_SCRIPT)
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # ------------------------------------------------------------ keys and slots
    def _tag(self, group: str) -> str:
        return "{" + (self.prefix + group).replace("{", "").replace("}", "") + "}"

    def _v(self, table: str) -> str:
        # A table's tokens (its own, its wide and row tokens: "users|r:5") share the table's slot.
        return f"{self.prefix}v:{table}{self._tag(table.partition('|')[0])}"

    def place(self, key: str, group: str) -> str:
        return key + self._tag(group)

    def _registry(self, table: str) -> str:
        return f"{self.prefix}layouts:{table}{self._tag(table)}"

    def _run_layouts(self, keys: list[str], args: list[Any]) -> Any:
        client = self.client  # made first: it registers the script
        return self._layouts(keys=keys, args=args, client=client)

    def _slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._key_slot(key.encode())
            if len(self._slots) < 10_000:  # version keys and the like: memoised; entries are not repeated much
                self._slots[key] = slot
        return slot

    def _one_slot(self, keys: list[str]) -> bool:
        first = self._slot(keys[0])
        return all(self._slot(k) == first for k in keys[1:])

    def _mget(self, keys: list[str]) -> list:
        if self._one_slot(keys):
            return self.client.mget(keys)
        return self.client.mget_nonatomic(keys)

    # ------------------------------------------------------------ the store's operations
    def ping(self) -> None:
        """Every primary answers and sees the cluster as ok (a restarted primary refuses keys for a while)."""
        with self._guard():
            client = self.client
            for node in client.get_primaries():
                state = client.cluster_info(target_nodes=node).get("cluster_state")
                if state != "ok":
                    raise StoreDown(f"cluster_state {state}")

    def versions(self, tables: Iterable[str]) -> dict[str, str]:
        tables = list(tables)
        if not tables:
            return {}
        with self._guard():
            return self._fill(tables, self._mget([self._v(t) for t in tables]))

    def get(self, key: str, tables: Iterable[str] = ()) -> tuple[bytes | None, dict[str, str]]:
        tables = list(tables)
        with self._guard():
            found = self._mget([key, *(self._v(t) for t in tables)])
            return found[0], self._fill(tables, found[1:])

    def put_if(self, key: str, value: Any, payload: bytes, ttl: float, expected: Mapping[str, str]) -> bool:
        tables = list(expected)
        vkeys = [self._v(t) for t in tables]
        packed = _pack(expected, payload)
        ms = max(1, int(ttl * 1000))
        with self._guard():
            client = self.client
            if self._one_slot([key, *vkeys]):  # one slot: the atomic check-and-write
                return bool(self._script(keys=[key, *vkeys], args=[ms, packed, *(expected[t] for t in tables)],
                                         client=client))

            def current() -> bool:
                found = client.mget_nonatomic(vkeys)
                return all((v.decode() if isinstance(v, bytes) else v) == expected[t] for t, v in zip(tables, found))

            # Several slots: check, write, check again; a version that moved meanwhile takes the entry back.
            if not current():
                return False
            client.set(key, packed, px=ms)
            if current():
                return True
            client.delete(key)
            return False

    def bump(self, tables: Iterable[str], avoid: float = 0.0) -> None:
        """Replace each table's token on its own node; raise ``StoreDown(failed=...)`` naming those not replaced.

        ``avoid``: skip (count as failed) tables whose node failed less than that many seconds ago, so that
        writes during an outage do not each wait for a node that is known to be down.
        """
        failed: set[str] = set()
        what = ""
        try:
            client = self.client
        except self._errors as exc:
            raise StoreDown(type(exc).__name__, set(tables)) from None
        now = time.monotonic()
        for t in tables:
            key = self._v(t)
            try:
                node = client.get_node_from_key(key).name
            except self._errors as exc:
                failed.add(t)
                what = type(exc).__name__
                continue
            if avoid and now - self._failed_at.get(node, -avoid) < avoid:
                failed.add(t)
                what = what or "node down"
                continue
            try:
                client.set(key, uuid.uuid4().hex, px=_token_px(t))
            except self._errors as exc:
                self._failed_at[node] = time.monotonic()
                failed.add(t)
                what = type(exc).__name__
        if failed:
            raise StoreDown(what, failed)

    def _scan(self, pattern: str) -> Iterator[bytes]:
        """Every primary's keys matching ``pattern`` (a pattern for the key without its tag)."""
        client = self.client
        for node in client.get_primaries():
            yield from client.scan_iter(match=pattern + "{*}", count=500, target_nodes=node)


def make_store(cfg: Any) -> LocalStore | RedisStore:
    """The store ``cfg`` asks for: a cluster (``redis+cluster://`` or ``redis_cluster``), Redis, or memory."""
    url = cfg.redis_url or None
    if not url:
        return LocalStore(cfg.cache_size)
    if getattr(cfg, "redis_cluster", False) or url.lower().split("://", 1)[0] in ("redis+cluster", "rediss+cluster"):
        return ClusterStore(url, cfg.cache_prefix)
    return RedisStore(url, cfg.cache_prefix)


# ---------------------------------------------------------------------- the cache
#: The TTL a door asked for on the next call (``cache=True``, ``.cached(ttl)``); True: the default.
_ASKED: ContextVar[Any] = ContextVar("dataflow_cache_asked", default=None)
#: While a cached function runs: {table: token read before its first query touched it}.
_TRACKING: ContextVar[dict | None] = ContextVar("dataflow_cache_tracking", default=None)

#: TTL when a call asks for caching without saying how long, and no model or global default says.
DEFAULT_TTL = 60.0


class Cache:
    """``app.cache``: look-ups, stores, invalidation and statistics for one ``DataFlow``."""

    def __init__(self, db: "DataFlow") -> None:
        cfg = db.config
        self.db = db
        self.prefix = cfg.cache_prefix
        #: The database entries come from: in every entry key's hash (see the module's docstring).
        self.scope = database_scope(db.url)
        self.default_ttl = float(cfg.cache_ttl or 0)
        self.store: LocalStore | RedisStore = make_store(cfg)
        self.retry_after = RETRY_AFTER_S
        self._down_until = 0.0
        self._warned = False
        #: Tables written while the store was down -> the number of their latest such write (a bump
        #: replayed on recovery clears only what it covered).
        self._pending: dict[str, int] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.memo = _Memo(self)
        #: Which tables' fine tokens every process sharing the store agrees on (none for memory).
        self.layouts = None if self.store.kind == "memory" else Layouts(self)

    # ------------------------------------------------------------ store access that never fails
    def _available(self) -> bool:
        if not self._down_until:
            return True
        if time.monotonic() < self._down_until:
            return False
        with self._lock:
            pending = dict(self._pending)
        try:
            self.store.ping()
            if pending:
                self.store.bump(pending)
                self._settled(pending)
        except StoreDown:
            self._down_until = time.monotonic() + self.retry_after
            return False
        self._down_until = 0.0
        self._warned = False
        log.warning("the cache store (%s) answers again: caching resumed", self.store.kind)
        return True

    def _failed(self, what: str) -> None:
        self.errors += 1
        self._down_until = time.monotonic() + self.retry_after
        prom = self.db.metrics.prometheus
        if prom is not None:
            prom.cache_errors.inc()
        if not self._warned:
            self._warned = True
            log.warning("the cache store (%s) is unreachable (%s): running uncached until it answers again",
                        self.store.kind, what)

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        prom = self.db.metrics.prometheus
        if prom is not None:
            prom.cache_result("hit" if hit else "miss")

    def key(self, name: str, group: str) -> str:
        """The store key of entry ``name`` (``<table>:<action>:<hash>``, ``fn:<name>:<hash>``) of ``group``
        (its table, its function): a cluster keeps a group's entries in one hash slot."""
        return self.store.place(f"{self.prefix}e:{name}", group)

    def _pattern(self, pattern: str) -> str:
        return f"{self.prefix}e:{pattern}"

    def versions(self, tables: Iterable[str]) -> dict[str, str] | None:
        """Current tokens of ``tables`` (None when the store is down)."""
        if not self._available():
            return None
        try:
            return self.store.versions(tables)
        except StoreDown as exc:
            self._failed(str(exc))
            return None

    def registry(self, table: str, fingerprint: str) -> frozenset[str] | None:
        """Register this process's layout of ``table``; the other live layouts (None when the store is down)."""
        if not self._available():
            return None
        try:
            return self.store.layouts(table, fingerprint)  # type: ignore[union-attr]
        except StoreDown as exc:
            self._failed(str(exc))
            return None

    def fine(self, b: Any) -> bool | None:
        """May reads and writes of binding ``b``'s table use fine tokens (by row, by partition)?
        False: another layout shares the store (``dataflow.cache_layouts``); None: the store is down."""
        return True if self.layouts is None else self.layouts.fine(b)

    def fetch(self, key: str, tables: Iterable[str] = ()) -> tuple[Any, dict[str, str] | None]:
        """(value or MISS, current tokens of the entry's tables, to store under on a miss)."""
        if not self._available():
            return MISS, None
        try:
            raw, current_versions = self.store.get(key, tables)
            if raw is not None:
                if isinstance(raw, bytes):
                    recorded, payload = _unpack(raw)
                else:
                    recorded, payload = raw
                now = current_versions
                if recorded.keys() - now.keys():  # stored under other tokens (another layout, say): those too
                    now = {**now, **self.store.versions(recorded.keys() - now.keys())}
                if all(now.get(t) == v for t, v in recorded.items()):
                    self._count(True)
                    _note(recorded)
                    return (decode(payload) if isinstance(payload, bytes) else _thawed(payload)), current_versions
            self._count(False)
            return MISS, current_versions
        except StoreDown as exc:
            self._failed(str(exc))
            return MISS, None

    def put(self, key: str, value: Any, payload: bytes, ttl: float, versions: Mapping[str, str]) -> bool:
        """Store ``value`` (``payload``: its encoded form) unless a table in ``versions`` changed since."""
        if not self._available():
            return False
        try:
            return self.store.put_if(key, _frozen(value) if self.store.kind == "memory" else value, payload, ttl,
                                     versions)
        except StoreDown as exc:
            self._failed(str(exc))
            return False

    def bump(self, tables: Iterable[str]) -> None:
        """Make every entry computed from ``tables`` stale (writes call this when they commit)."""
        tables = set(tables)
        self._bump(tables | {wide_token(t) for t in tables})

    def bump_rows(self, table: str, keys: Iterable[Any], parts: Iterable[tuple[str, Any]] = ()) -> None:
        """A write that changed exactly the records ``keys`` of ``table``, whose partition values (before
        and after the change) are ``parts``: entries of reads by other keys or of other partitions stay
        current; every other entry of the table goes stale."""
        self._bump({table, *(row_token(table, k) for k in keys), *(partition_token(table, f, v) for f, v in parts)})

    def _bump(self, tables: set[str]) -> None:
        if not self._available():
            if not self.store.partial:
                self._postpone(tables)
                return
            # A cluster with a node down: the nodes that answer get the new tokens now, since other
            # processes may still be serving entries from them; tables on the missing node wait.
            with self._lock:
                earlier = dict(self._pending)
            try:
                self.store.bump(tables | set(earlier), avoid=self.retry_after)
                done = set(tables)
            except StoreDown as exc:
                done = tables - (exc.failed if exc.failed is not None else tables)
                earlier = {t: n for t, n in earlier.items() if exc.failed is not None and t not in exc.failed}
            self._settled(earlier)
            self._postpone(tables - done)
            return
        try:
            self.store.bump(tables)
        except StoreDown as exc:
            self._postpone(exc.failed if exc.failed is not None else tables)
            self._failed(str(exc))

    def _postpone(self, tables: Iterable[str]) -> None:
        with self._lock:
            for t in tables:
                self._seq += 1
                self._pending[t] = self._seq

    def _settled(self, bumped: Mapping[str, int]) -> None:
        """Forget pending tables whose token was replaced after their latest recorded write."""
        with self._lock:
            for t, n in bumped.items():
                if self._pending.get(t) == n:
                    del self._pending[t]

    # ------------------------------------------------------------ reads asking for caching
    def ttl_for(self, call: Any) -> float | None:
        """How long ``call``'s result may be cached (None: not cacheable)."""
        asked = _ASKED.get()
        if asked is False:
            return None
        if asked is not None:
            if asked is True:
                return self._model_ttl(call) or self.default_ttl or DEFAULT_TTL
            return float(asked)
        return self._model_ttl(call) or self.default_ttl or None

    @staticmethod
    def _model_ttl(call: Any) -> float | None:
        spec = call.binding.spec
        ttl = spec.options.get("cache_ttl") if spec is not None else None
        return float(ttl) if ttl else None

    def asking(self, ttl: Any):
        """``with cache.asking(60):`` the next operation in the block may be cached for 60 s.

        ``True``: the model's, the global or the default TTL; ``False``: never; ``None``: as configured.
        """
        if ttl is None:
            return nullcontext()
        if not (isinstance(ttl, bool) or (isinstance(ttl, (int, float)) and ttl > 0)):
            raise ValidationError(f"cache must be True, False or a positive number of seconds, got "
                                  f"{type(ttl).__name__}")
        return _asking(ttl)

    # ------------------------------------------------------------ cached functions
    def cached(self, ttl: float = DEFAULT_TTL, *, tables: Iterable[str] | None = None) -> Callable:
        """``@app.cached(ttl=60)``: cache a function's result per argument set (and tenant)."""
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
            raise ValidationError("cached(ttl=...) must be a positive number of seconds")
        declared = [self._table(t) for t in (tables or ())]

        def decorate(fn: Callable) -> Callable:
            name = f"fn:{fn.__module__}.{fn.__qualname__}"

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return self._run(fn, name, float(ttl), declared, args, kwargs, refresh=False)

            wrapper.__dataflow_cached__ = (fn, name, float(ttl), declared)  # type: ignore[attr-defined]
            wrapper.cache_pattern = f"{name}:*"  # type: ignore[attr-defined]
            return wrapper
        return decorate

    def _fn_key(self, name: str, args: tuple, kwargs: dict) -> str:
        ctx = current()
        try:
            h = digest(list(args), sorted(kwargs.items()), ctx.tenant, ctx.tenant_bypass, self.scope)
        except TypeError as exc:
            raise ValidationError(f"a cached function's arguments must be JSON-safe values; got one of kind "
                                  f"{exc.args[0]} ({name[3:]})") from None
        return self.key(f"{name}:{h}", name)

    def _run(self, fn: Callable, name: str, ttl: float, declared: list[str], args: tuple, kwargs: dict,
             *, refresh: bool) -> Any:
        if current().transaction is not None:
            return fn(*args, **kwargs)  # inside a transaction: its own uncommitted writes must not be cached
        key = self._fn_key(name, args, kwargs)
        if not refresh:
            value, _ = self.fetch(key)
            if value is not MISS:
                return value
        tracked: dict[str, str] = {}
        if declared:
            found = self.versions(declared)
            if found is None:
                return fn(*args, **kwargs)
            tracked.update(found)
        outer = _TRACKING.get()
        token = _TRACKING.set(tracked)
        try:
            result = fn(*args, **kwargs)
        finally:
            _TRACKING.reset(token)
        if outer is not None:
            for t, v in tracked.items():
                outer.setdefault(t, v)
        if tracked.get(_UNTRACKABLE):
            return result
        try:
            payload = encode(result)
        except TypeError as exc:
            log.warning("%s: result not cached: it holds a %s (cache JSON-safe values)", name[3:], exc.args[0])
            return result
        self.put(key, result, payload, ttl, tracked)
        return result

    # ------------------------------------------------------------ management
    def _table(self, name: str) -> str:
        try:
            return self.db.binding(name).table.name
        except Exception:
            return name

    def invalidate(self, pattern: str) -> int:
        """Drop entries whose key (after the prefix) matches ``pattern`` (``"users:*"``, ``"fn:*"``)."""
        if not isinstance(pattern, str) or not pattern:
            raise ValidationError("invalidate needs a key pattern such as 'users:*'")
        if not self._available():
            return 0
        try:
            return self.store.delete(self._pattern(pattern))
        except StoreDown as exc:
            self._failed(str(exc))
            return 0

    def invalidate_table(self, name: str) -> None:
        """Make every entry that depends on a table (or a model's table) stale, in every process."""
        self.bump([self._table(name)])

    def warm(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run a ``@cached`` function now and store its fresh result; return it."""
        info = getattr(fn, "__dataflow_cached__", None)
        if info is None:
            raise ValidationError("warm() takes a function decorated with @app.cached(...)")
        original, name, ttl, declared = info
        return self._run(original, name, ttl, declared, args, kwargs, refresh=True)

    def clear(self) -> int:
        """Drop every entry of this application (its key prefix)."""
        self.hits = self.misses = 0
        return self.invalidate("*")

    def stats(self) -> dict[str, Any]:
        """Hits and misses (this process), hit rate, entries and bytes stored, backend, store errors."""
        entries = size = 0
        if self._available():
            try:
                entries, size = self.store.usage(self._pattern("*"))
            except StoreDown as exc:
                self._failed(str(exc))
        looked = self.hits + self.misses
        return {"backend": self.store.kind, "hits": self.hits, "misses": self.misses,
                "hit_rate": self.hits / looked if looked else 0.0, "entries": entries, "bytes": size,
                "errors": self.errors, "available": not self._down_until}

    def close(self) -> None:
        """Release the store's connections (``db.close()`` calls this)."""
        try:
            self.store.close()
        except Exception as exc:  # noqa: BLE001 - closing must not fail a shutdown
            log.debug("closing the Redis client failed: %s", type(exc).__name__)

    def __repr__(self) -> str:
        return f"<Cache {self.store.kind} prefix={self.prefix!r}>"


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS: Any = _Miss()
#: A tracked "table" meaning: this function read something the cache cannot version; do not store.
_UNTRACKABLE = "\x00untrackable"


@contextmanager
def _asking(ttl: Any) -> Iterator[None]:
    token = _ASKED.set(ttl)
    try:
        yield
    finally:
        _ASKED.reset(token)


def _note(versions: Mapping[str, str]) -> None:
    """A cached function running now depends on these tables too (a cached read or function inside it)."""
    tracked = _TRACKING.get()
    if tracked is not None:
        for t, v in versions.items():
            tracked.setdefault(t, v)


def track(call: Any, cache: Cache) -> None:
    """The cache policy's ``plan``: a cached function running now depends on ``call``'s table."""
    tracked = _TRACKING.get()
    if tracked is None:
        return
    table = call.binding.table.name
    if table in tracked:
        return
    found = cache.versions([table])
    if found is None:
        tracked[_UNTRACKABLE] = "1"
    else:
        tracked.update(found)


def wide_token(table: str) -> str:
    """The token of every change to ``table`` whose records are not known one by one."""
    return f"{table}|wide"


def row_token(table: str, key: Any) -> str:
    """The token of one record of ``table`` (by primary key)."""
    return f"{table}|r:{key}"


#: Field types whose equality in a filter pins a partition: Python's equality and ``repr`` of these
#: are the database's (case-sensitive strings everywhere, CONVENTIONS.md), so a read's value and a
#: written record's value name the same token exactly when they are equal.
PARTITION_TYPES = frozenset({int, str, bool, uuid.UUID})


def partition_token(table: str, field: str, value: Any) -> str:
    """The token of the records of ``table`` whose ``field`` equals ``value``."""
    return f"{table}|p:{field}:{hashlib.blake2b(repr(value).encode(), digest_size=10).hexdigest()}"


def partition_fields(b: Any) -> frozenset[str]:
    """The fields of binding ``b`` the cache partitions on: the key fields reads are usually pinned by
    (primary key, unique fields, foreign keys, fields with an index of their own), of a partition type.
    A write that changes one of these without knowing its value before makes the table's wide token move."""
    spec = b.spec
    if spec is None:
        return frozenset()
    table = b.table
    keyed = {c.name for c in table.primary_key.columns} | {fk.parent.name for fk in table.foreign_keys}
    keyed |= {next(iter(i.columns)).name for i in table.indexes if len(i.columns) == 1}
    keyed |= {next(iter(c.columns)).name for c in table.constraints
              if isinstance(c, sa.UniqueConstraint) and len(c.columns) == 1}
    keyed |= {n for n, f in spec.fields.items() if f.unique}
    # A table someone else made (existing_schema_mode) may compare strings case-insensitively or
    # ignoring trailing spaces (MySQL's default collation, SQLite's NOCASE): equal in SQL, different
    # tokens here. Its str fields pin nothing.
    types = PARTITION_TYPES - {str} if table.info.get("dataflow_foreign_collation") else PARTITION_TYPES
    return frozenset(n for n in keyed if n in spec.fields and spec.fields[n].pytype in types)


def partitions_of(b: Any, record: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """The (field, value) partitions ``record`` is in; None when one cannot be named exactly."""
    out = []
    for name in b.partitions:
        if name not in record:
            return None
        value = record[name]
        if value is not None and type(value) is not b.spec.fields[name].pytype:
            return None
        out.append((name, value))
    return out


def _pinned(b: Any, filter: Any) -> tuple[str, Any] | None:
    """A (field, value) the filter requires by plain top-level equality on a partition field; else None."""
    if not isinstance(filter, Mapping) or not b.partitions:
        return None
    for name in sorted(k for k in filter if isinstance(k, str) and k in b.partitions):
        value = filter[name]
        if value is None or type(value) is b.spec.fields[name].pytype:
            return name, value
    return None


def _tokens(call: Any, cache: Cache) -> list[str] | None:
    """The tokens a cached read depends on: by primary key, its row's; with a plain equality on a
    partition field, that partition's; each with the table's wide token. Otherwise, or while another
    layout of the table shares the store, the table's. None: run uncached (the store is down)."""
    fine = _fine_tokens(call)
    if fine is None:
        return [call.binding.table.name]
    ok = cache.fine(call.binding)
    if ok is None:
        return None
    return fine if ok else [call.binding.table.name]


def _fine_tokens(call: Any) -> list[str] | None:
    table = call.binding.table.name
    if call.action == "read" and call.id is not MISSING_ID:
        try:
            key = call.binding.model_codec.key(call.id)
        except Exception:  # the read itself reports a bad key
            return None
        if isinstance(key, str) and call.binding.table.info.get("dataflow_foreign_collation"):
            return None  # a table made elsewhere may compare keys case-insensitively: "a" finds "A"
        return [wide_token(table), row_token(table, key)]
    if call.action in ("read", "list", "count"):
        pinned = _pinned(call.binding, call.filter)
        if pinned is not None:
            return [wide_token(table), partition_token(table, *pinned)]
    return None


#: Bound values whose ``repr`` is exact and process-independent (memo keys).
_SCALARS = frozenset({str, int, float, bool, type(None)})


class _Memo:
    """What the executor consults for a cacheable read: look-up before the statement, store after."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def _key(self, call: Any, p: Any, params: Mapping[str, Any]) -> str:
        ctx = call.ctx
        values = sorted(params.items())
        if all(type(v) in _SCALARS for _, v in values):
            # Plain values (the usual case): their repr is exact and the same in every process, and
            # cheaper than the JSON form. Tagged, so it can never equal a JSON-form digest.
            h = hashlib.blake2b(repr(("r", p.sql, values, ctx.tenant, ctx.tenant_bypass, self.cache.scope)).encode(),
                                digest_size=16).hexdigest()
        else:
            h = digest(p.sql, values, ctx.tenant, ctx.tenant_bypass, self.cache.scope)
        table = call.binding.table.name
        return self.cache.key(f"{table}:{call.action}:{h}", table)

    def lookup(self, call: Any, p: Any, params: Mapping[str, Any]) -> tuple[Any, Any]:
        try:
            key = self._key(call, p, params)
        except TypeError:  # a bound value the codec does not know: run uncached
            return None, None
        tokens = _tokens(call, self.cache)
        if tokens is None:
            return None, None
        value, versions = self.cache.fetch(key, tokens)
        if value is not MISS:
            return value, None
        return None, (key, versions)

    def store(self, call: Any, p: Any, params: Mapping[str, Any], records: list, token: Any) -> None:
        if token is None or token[1] is None:
            return
        key, versions = token
        try:
            payload = encode(records)
        except TypeError:
            return
        self.cache.put(key, records, payload, call.state["cache_ttl"], versions)


__all__ = ["Cache", "LocalStore", "RedisStore", "ClusterStore", "encode", "decode", "MISS", "track"]
