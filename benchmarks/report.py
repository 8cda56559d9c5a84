"""Ratios against each path's baseline, the targets, and the printed table.

Each ratio is stated in its target's own terms (the issue's):

* operations layer, bulk create: its rows/s over the raw driver's rows/s, at least 0.80;
* operations layer, single creates, reads by id and List: its time over the raw driver's, at most 1.30;
* node path: its time over the raw driver's statement followed, per operation, by a no-op node
  fed the same payload and returning the generated node's own output (suite.PAIR), at most 1.25:
  the SDK walks every value a node returns, so the baseline carries the same output (for List,
  100 records), and the two run interleaved as a node's statement does (README).

Two more twins for information (noop.py): a plain no-op node returning ``{"success": True}``,
whose ratio column shows node / (raw + it); and the generated node class with ``run`` replaced
("DataFlow node, run() no-op"): node / (raw + it) is what DataFlow's database work adds over the
raw driver once every SDK cost is on both sides. (The plain twins pay the SDK's default input and
output validation, which DataFlow's nodes replace with cheaper checks of their own.)

``workflow10``: ten DataFlow nodes in one workflow against the same ten statements on the raw
driver (the operations layer: at most 1.30x its time; the node path: at most 1.25x of raw + ten
no-op nodes). ``cache``: a List of 100 rows; each path's time against the raw SELECT's, with the
issue's targets: a hit from the in-process cache at most 200 µs through the direct API, a hit from
Redis at most one round trip (counted) plus decoding (the ``floor`` row: one GET and the decoding,
no DataFlow). ``hitrate``: the hit rate of a read-mostly workload, above 0.90 with no stale read.

The query cases (queries.py) compare DataFlow's queries with the hand-written SQL of the seed's
Migration Guide: at most 1.20x its time. Their ``sql`` row, for information, is the raw driver
running DataFlow's own SQL: its ratio is the share of DataFlow's SQL, the rest is DataFlow's Python.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    baseline: str     # what the path is compared with
    limit: float
    higher_is_better: bool

    def describe(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='}{self.limit:.2f}"

    def met(self, ratio: float) -> bool:
        return ratio >= self.limit if self.higher_is_better else ratio <= self.limit


#: (case, path) -> target; the no-op node and the raw driver are baselines, with none.
TARGETS = {
    ("bulk", "ops"): Target("raw rows/s", 0.80, True),
    ("create", "ops"): Target("raw time", 1.30, False),
    ("list", "ops"): Target("raw time", 1.30, False),
    ("read", "ops"): Target("raw time", 1.30, False),
    ("create", "node"): Target("raw, then no-op", 1.25, False),
    ("bulk", "node"): Target("raw, then no-op", 1.25, False),
    ("list", "node"): Target("raw, then no-op", 1.25, False),
    ("read", "node"): Target("raw, then no-op", 1.25, False),
    ("query", "ops"): Target("hand-written SQL", 1.20, False),
    ("query", "list"): Target("hand-written SQL", 1.20, False),
    ("aggregate", "ops"): Target("hand-written SQL", 1.20, False),
    ("workflow10", "ops"): Target("raw time", 1.30, False),
    ("workflow10", "node"): Target("raw + no-op time", 1.25, False),
}

#: The cache's targets are not ratios: µs per hit in-process, round trips per hit with Redis.
MEMORY_HIT_US = 200.0
REDIS_ROUND_TRIPS = 1.0
HIT_RATE = 0.90

HEADER = ("backend", "case", "path", "seconds", "rate", "ratio", "vs", "target", "result")


def ratio(case: str, path: str, times: dict[str, float]) -> float | None:
    """The path's ratio to its baseline, in its target's terms; None for a baseline path."""
    if (case, path) not in TARGETS:
        return None
    if path == "node":
        if "pair" in times:  # the raw statement and the same-output twin, interleaved (suite.PAIR)
            return times["node"] / times["pair"]
        return times["node"] / (times["raw"] + times.get("echo", times.get("noop", 0.0)))  # workflow10
    if case == "bulk":
        return times["raw"] / times["ops"]  # rows/s over rows/s: the same rows, so inverse times
    return times[path] / times["raw"]


def rows_of(timings: list[dict]) -> list[tuple[str, ...]]:
    """Table rows, in run order, with ratio and verdict."""
    times: dict[tuple[str, str, str], dict[str, float]] = {}
    for t in timings:
        times.setdefault((t["backend"], t["case"], t["label"]), {})[t["path"]] = t["seconds"]
    out = []
    for t in timings:
        unit = "rows/s" if t["case"] == "bulk" else "ops/s"
        rate = f"{t['units'] / t['seconds']:,.0f} {unit}"
        if t["case"] == "cache":
            rate = f"{t['seconds'] / t['units'] * 1e6:,.1f} µs/call"
        elif t["case"] == "workflow10":
            rate = f"{t['seconds'] / t['units'] * 1e3:,.2f} ms/run"
        run = times[(t["backend"], t["case"], t["label"])]
        r = ratio(t["case"], t["path"], run)
        target = TARGETS.get((t["case"], t["path"]))
        if t["case"] in ("cache", "hitrate"):
            cells = _cache_cells(t, run)
        elif t["path"] == "pair":
            cells = ("", "node target baseline", "", "")
        elif t["path"] == "echo" and "node" in run:
            cells = (f"{run['node'] / (run['raw'] + run['echo']):.2f}", "node / (raw + this)", "", "info")
        elif t["path"] in ("noop", "shell") and "node" in run and "echo" in run:
            cells = (f"{run['node'] / (run['raw'] + run[t['path']]):.2f}", "node / (raw + this)", "", "info")
        elif t["path"] == "sql":
            cells = (f"{run['sql'] / run['raw']:.2f}", "hand-written SQL", "", "info")
        elif r is None or target is None:
            cells = ("", "baseline" if t["path"] == "raw" else "SDK cost", "", "")
        else:
            cells = (f"{r:.2f}", target.baseline, target.describe(), "PASS" if target.met(r) else "MISS")
        out.append((t["backend"], t["label"], t["how"], f"{t['seconds']:.4f}", rate, *cells))
    return out


def _cache_cells(t: dict, run: dict[str, float]) -> tuple[str, str, str, str]:
    """(ratio, vs, target, result) for the cache and hit-rate rows."""
    path, extra = t["path"], t.get("extra") or {}
    if t["case"] == "hitrate":
        rate, stale = extra.get("hit_rate", 0.0), extra.get("stale", 0)
        if path == "other":  # writes elsewhere: the ceiling of this workload, for information
            return f"{rate:.2f}", "hit rate", "", "info"
        ok = rate > HIT_RATE and stale == 0
        return f"{rate:.2f}", "hit rate", f">{HIT_RATE:.2f}, 0 stale", "PASS" if ok else "MISS"
    if path == "raw":
        return "", "baseline", "", ""
    if path == "floor":
        return f"{run['redis'] / run['floor']:.2f}", "Redis hit / this", "", "info"
    r = f"{run[path] / run['raw']:.2f}"
    if path == "memory":
        us = t["seconds"] / t["units"] * 1e6
        return r, "raw time", f"<={MEMORY_HIT_US:.0f} µs", "PASS" if us <= MEMORY_HIT_US else "MISS"
    if path == "redis":
        trips = extra.get("round_trips")
        if trips is None:
            return r, "raw time", "", "info"
        return r, "raw time", f"<={REDIS_ROUND_TRIPS:.0f} round trip", "PASS" if trips <= REDIS_ROUND_TRIPS else "MISS"
    return r, "raw time", "", "info"


def table(rows: list[tuple[str, ...]]) -> str:
    """A plain fixed-width table (numbers right-aligned)."""
    numeric = {3, 4, 5}
    all_rows = [HEADER, *rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(HEADER))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    rule = "  ".join("-" * w for w in widths)
    body, last = [], None
    for r in rows:
        if last is not None and (r[0], r[1]) != last:
            body.append("")
        body.append(line(r).rstrip())
        last = (r[0], r[1])
    return "\n".join([line(HEADER).rstrip(), rule, *body])
