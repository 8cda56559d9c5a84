"""Cache layouts: processes sharing a Redis cache agree on a table's fine tokens, or none of them uses them.

Which fields pin a partition follows a process's model declarations and DataFlow version (see
``dataflow.cache``). Two processes that disagree (a rolling deploy, a model declared differently)
would each bump only the partition tokens *they* know: a read cached by one, pinned on a field the
other does not partition on, would outlive the other's one-record writes. So each process records
its table's *layout* in the store, a fingerprint of what decides the fine tokens (the DataFlow
version, the partition fields and their types, the primary key), and checks the others':

- Registering: ``<prefix>layouts:<table>`` (with the table's hash tag in a cluster) is a hash of
  fingerprint -> Redis server time of its last heartbeat. One Lua script, atomically: read the hash,
  drop fingerprints silent for ``LIVE_S``, (re-)register ours when it is absent or older than
  ``BEAT_S``, return the other live ones. Redis's clock, so the processes' clocks do not matter.
- A process runs that script for a table before its first fine-grained use (a read by primary key or
  pinned on a partition, a one-record write), then at most every ``CHECK_EVERY_S`` while it uses the
  table; the answer is kept in memory in between (the hot path costs a dict look-up).
- While another layout is live the table is *mixed* for this process: its cached reads depend on the
  table's token only (every write of every layout replaces it) and its one-record writes replace the
  table's wide token too (every layout's pinned reads depend on it). When it first sees a new layout
  (or registers while others are live) it replaces the wide token once: its own pinned entries, stored
  before, may have missed the other layout's writes. When the others stop heartbeating it returns to
  fine tokens.

Why that is exact: of two layouts live together, the one that registered second saw the first (one
atomic script) and was mixed from its first fine-grained use; the first may keep fine tokens until it
looks again, but the second's writes replace the wide token that the first's pinned reads depend on,
and the second's reads depend on the table token that the first's writes replace. The remaining
window: if Redis loses the registry (a restart without persistence, eviction, a failover that drops
its latest writes), two layouts can both run fine tokens until the next look, so a pinned read may be
served stale for at most ``CHECK_EVERY_S`` after the other layout's first write. Skewed clocks do
not matter (the registry keeps Redis's time). Processes on a DataFlow without this registry are not
seen at all.

The in-process store serves one process: it has no registry and always uses fine tokens.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import Cache

#: Seconds between two looks at a table's registry (the window above).
CHECK_EVERY_S = 1.5
#: A layout whose last heartbeat is older than this is gone.
LIVE_S = 600
#: A process registers its layout again when its heartbeat is older than this.
BEAT_S = 60

#: KEYS[1]: the registry; ARGV: our fingerprint, LIVE_S, BEAT_S. Returns the other live fingerprints.
SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
local live, beat = tonumber(ARGV[2]), tonumber(ARGV[3])
local seen = redis.call('HGETALL', KEYS[1])
local others, mine = {}, nil
for i = 1, #seen, 2 do
  local age = now - (tonumber(seen[i + 1]) or 0)
  if seen[i] == ARGV[1] then mine = age
  elseif age < live then others[#others + 1] = seen[i]
  else redis.call('HDEL', KEYS[1], seen[i]) end
end
if mine == nil or mine >= beat then
  redis.call('HSET', KEYS[1], ARGV[1], now)
  redis.call('EXPIRE', KEYS[1], live)
end
return others
"""


def fingerprint(b: Any) -> str:
    """What decides binding ``b``'s fine tokens, hashed: DataFlow's version, partition fields and types, key."""
    from . import __version__

    table = b.table
    fields = sorted((n, b.spec.fields[n].pytype.__name__) for n in b.partitions)
    key = [c.name for c in table.primary_key.columns]
    foreign = bool(table.info.get("dataflow_foreign_collation"))
    return hashlib.blake2b(repr((__version__, fields, key, foreign)).encode(), digest_size=8).hexdigest()


class Layouts:
    """One process's view of the layouts of the tables it uses (a shared store only)."""

    def __init__(self, cache: "Cache") -> None:
        self.cache = cache
        #: table -> (monotonic time to look again, fine tokens allowed).
        self._state: dict[str, tuple[float, bool]] = {}
        #: table -> the other live fingerprints seen at the last look.
        self._others: dict[str, frozenset[str]] = {}

    def fine(self, b: Any) -> bool | None:
        """May this process use fine tokens for ``b``'s table? False: mixed; None: the store is down."""
        state = self._state.get(b.table.name)
        if state is not None and state[0] > time.monotonic():
            return state[1]
        return self._look(b)

    def _look(self, b: Any) -> bool | None:
        from .cache import wide_token

        table = b.table.name
        others = self.cache.registry(table, fingerprint(b))
        if others is None:
            self._state.pop(table, None)
            return None
        if others - self._others.get(table, frozenset()):
            self.cache._bump({wide_token(table)})  # our pinned entries may have missed the newcomer's writes
        self._others[table] = others
        fine = not others
        self._state[table] = (time.monotonic() + CHECK_EVERY_S, fine)
        return fine
