"""The query cache on a Redis Cluster: hits, exact invalidation, key placement, nodes going away.

A module fixture starts a real three-primary cluster (``redis-server --cluster-enabled yes`` on free
loopback ports, joined by ``redis-cli --cluster create``) and stops it at the end. The database is
SQLite: what these tests exercise is the store. Each test uses key prefixes of its own, deleted
afterwards; the one test that stops a node runs last and restarts it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot
from test_cache import WRITES, _answer, _fresh, declare, seed

from dataflow import DataFlow, DataFlowConfig
from dataflow.cache import ClusterStore, RedisStore
from dataflow.errors import SettingError

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("redis-cli")),
    reason="redis-server and redis-cli are not installed: no Redis Cluster to test against")


# ---------------------------------------------------------------- the cluster
def _free_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait(condition, what: str, tries: int = 1500) -> None:
    """Poll ``condition`` every 20 ms; fail naming ``what`` after ``tries`` polls (30 s)."""
    for _ in range(tries):
        try:
            if condition():
                return
        except (redis.exceptions.RedisError, OSError):
            pass
        threading.Event().wait(0.02)
    raise AssertionError(f"Redis Cluster: {what}")


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ports = [_free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen] = {}
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--cluster-enabled", "yes",
             "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"), "--save", "", "--appendonly", "no",
             "--bind", "127.0.0.1", "--daemonize", "no"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self.node(port).ping(), f"node {port} did not start")

    def stop(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_connect_timeout=1)

    def wait_ok(self) -> None:
        _wait(lambda: all(self.node(p).cluster("INFO")["cluster_state"] == "ok" for p in self.ports),
              "cluster_state did not become ok")

    def owner(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        slot = key_slot(key.encode())
        for start, end, primary, *_ in self.node(self.ports[0]).execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError(f"slot {slot} is not served")

    def keys(self, prefix: str) -> dict[int, list[str]]:
        """Each node's keys that start with ``prefix``, read from the node itself."""
        pattern = prefix.replace("[", "\\[") + "*"
        return {p: sorted(k.decode() for k in self.node(p).scan_iter(match=pattern, count=1000)) for p in self.ports}

    def purge(self, prefix: str) -> None:
        for port, keys in self.keys(prefix).items():
            pipe = self.node(port).pipeline(transaction=False)
            for key in keys:  # one DEL per key: a node refuses a DEL across slots
                pipe.delete(key)
            pipe.execute()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        for port in c.ports:
            c.start(port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in c.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, timeout=60, capture_output=True)
        c.wait_ok()
        yield c
    finally:
        for port in list(c.procs):
            c.stop(port)


@pytest.fixture
def backend():
    """These tests exercise the cache store; one database is enough, and SQLite is always at hand."""
    urls = os.environ.get("DATAFLOW_TEST_URLS", "sqlite")  # as the root conftest reads it
    if "sqlite" not in [u.strip() for u in urls.split(",")]:
        pytest.skip("DATAFLOW_TEST_URLS does not include sqlite")
    return "sqlite"


def _vkey(prefix: str, token: str, table: str | None = None) -> str:
    """A token's version key as the cluster store lays it out (the layout is asserted on below): in its table's slot."""
    return f"{prefix}v:{token}{{{prefix}{table or token}}}"


@pytest.fixture
def spread(cluster) -> str:
    """A key prefix under which the posts and tags tables live on different primaries."""
    while True:
        prefix = f"dftest:{uuid.uuid4().hex[:10]}:"
        if cluster.owner(_vkey(prefix, "posts")) != cluster.owner(_vkey(prefix, "tags")):
            return prefix


@pytest.fixture
def make(db_url, cluster):
    """DataFlow instances on the test database sharing the cluster; their keys are purged afterwards."""
    made: list[DataFlow] = []

    def build(prefix: str, **settings) -> DataFlow:
        settings.setdefault("redis_url", cluster.url)
        db = DataFlow(db_url, cache_prefix=prefix, **settings)
        declare(db)
        made.append(db)
        return db

    yield build
    for db in made:
        db.close()
    for prefix in {db.config.cache_prefix for db in made}:
        cluster.purge(prefix)


def _summary(db: DataFlow):
    """A cached function reading both tables (with a spread layout: two nodes)."""
    @db.cached(ttl=60)
    def summary():
        return {"posts": db.count("Post"), "views": sum(p["views"] for p in db.list("Post")),
                "tags": [t["label"] for t in db.list("Tag", cache=False)]}  # Tag has a cache_ttl
    return summary


# ---------------------------------------------------------------- hits and placement
def test_cached_reads_hit_and_each_tables_keys_share_its_slot(make, cluster, spread):
    db = make(spread)
    assert db.cache.stats()["backend"] == "redis-cluster" and isinstance(db.cache.store, ClusterStore)
    seed(db)
    db.create("Tag", label="a")
    summary = _summary(db)
    for _ in range(2):
        assert db.count("Post", cache=True) == 3
        assert [p["title"] for p in db.list("Post", {"views": {"$gte": 1}}, cache=True)] == ["p1", "p2"]
        assert db.read("Post", filter={"title": "p2"}, cache=True)["views"] == 2
        assert db.query("Post").where({"title": "p0"}).cached(60).first()["views"] == 0
        assert db.count("Tag") == 1  # the model's cache_ttl
        assert summary() == {"posts": 3, "views": 3, "tags": ["a"]}
    stats = db.cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (6, 6, 6)

    keys = cluster.keys(spread)
    posts_node, tags_node = cluster.owner(_vkey(spread, "posts")), cluster.owner(_vkey(spread, "tags"))
    posts = [k for k in keys[posts_node] if k.startswith((f"{spread}e:posts:", f"{spread}v:posts"))]
    tags = [k for k in keys[tags_node] if k.startswith((f"{spread}e:tags:", f"{spread}v:tags", f"{spread}layouts:tags"))]
    # four entries, the table's token and its wide token (the migration that made the table, the bulk
    # seed); one entry, the table's, wide and the created record's row and partition (its id) tokens, and
    # the table's layout registry (the create used fine tokens)
    assert len(posts) == 6 and len(tags) == 6
    assert [k for k in tags if k.startswith(f"{spread}layouts:")] == [f"{spread}layouts:tags{{{spread}tags}}"]
    assert {k for k in posts if "|" in k} == {_vkey(spread, "posts|wide", "posts")}
    fine = sorted(k.split("{")[0][len(f"{spread}v:"):] for k in tags if "|" in k and "layouts:" not in k)
    assert [f.split(":")[0] if f.startswith("tags|p:") else f for f in fine] == ["tags|p", "tags|r:1", "tags|wide"], fine
    assert fine[0].startswith("tags|p:id:")
    # A table's entries live in its version key's slot (the read's check-and-store is one Lua call) ...
    for group in (posts, tags):
        assert len({int(cluster.node(cluster.ports[0]).cluster("KEYSLOT", k)) for k in group}) == 1
    # ... different tables on different primaries, and a function's entry in a slot of its own name.
    fn = [k for ks in keys.values() for k in ks if k.startswith(f"{spread}e:fn:")]
    assert len(fn) == 1 and fn[0].endswith("{%sfn:%s}" % (spread, f"{__name__}._summary.<locals>.summary"))
    assert sum(len(ks) for ks in keys.values()) == 13  # and nothing else (6 + 6 + the function)


def test_a_prefix_with_a_hash_tag_puts_the_whole_cache_in_one_slot(make, cluster):
    prefix = f"{{dftest-{uuid.uuid4().hex[:10]}}}:"
    db = make(prefix)
    seed(db)
    summary = _summary(db)
    assert db.count("Post", cache=True) == 3 and db.count("Tag", cache=True) == 0
    assert summary() == summary() == {"posts": 3, "views": 3, "tags": []}
    assert db.cache.stats()["entries"] == 3
    keys = cluster.keys(prefix)
    owner = cluster.owner(prefix)
    assert {p for p, ks in keys.items() if ks} == {owner}
    slots = {int(cluster.node(owner).cluster("KEYSLOT", k)) for k in keys[owner]}
    assert slots == {key_slot(prefix.encode())} and len(keys[owner]) == 7  # 3 entries, 4 tokens (each table's and its wide one)


# ---------------------------------------------------------------- invalidation
@pytest.mark.parametrize("layout", ["spread", "one-slot"])
def test_every_kind_of_write_makes_cached_reads_stale(make, spread, layout):
    db = make(spread if layout == "spread" else f"{{{spread}}}")
    summary = _summary(db)
    for kind, write in WRITES.items():
        db.bulk_delete("Post", {}, confirm_all=True)
        seed(db)
        before = (_answer(db), summary())
        assert (_answer(db), summary()) == before  # cached now
        write(db)
        fresh = {"posts": db.count("Post"), "views": sum(p["views"] for p in db.list("Post")), "tags": []}
        assert (_answer(db), summary()) == (_fresh(db), fresh) != before, kind
    db.create("Tag", label="t")  # the function's other table, on another node when spread
    assert summary()["tags"] == ["t"]


@pytest.mark.parametrize("layout", ["spread", "one-slot"])
def test_a_write_racing_a_cached_function_over_two_tables_is_not_stored(make, spread, layout):
    """The function's queries ran, then a write committed, then it stored: nothing may be stored."""
    db = make(spread if layout == "spread" else f"{{{spread}}}")
    seed(db)
    runs = []

    @db.cached(ttl=60)
    def both():
        seen = [db.count("Post"), db.count("Tag", cache=False)]
        if not runs:
            db.create("Tag", label="raced")  # commits (and bumps tags) before the result is stored
        runs.append(seen)
        return seen

    assert both() == [3, 0]
    assert db.cache.stats()["entries"] == 0
    assert both() == [3, 1] and both() == [3, 1]
    assert runs == [[3, 0], [3, 1]] and db.cache.stats()["entries"] == 1


def test_two_instances_sharing_the_cluster_see_each_others_writes(make, spread):
    reader, writer = make(spread), make(spread, node_prefix="Other")
    seed(reader)
    summary = _summary(reader)
    assert reader.count("Post", cache=True) == 3 and reader.count("Post", cache=True) == 3
    assert summary()["tags"] == [] and summary()["tags"] == []
    writer.create("Post", title="elsewhere")
    writer.create("Tag", label="elsewhere")
    assert reader.count("Post", cache=True) == 4
    assert summary() == {"posts": 4, "views": 3, "tags": ["elsewhere"]}
    writer.cache.invalidate_table("posts")  # a write made outside DataFlow, declared
    hits = reader.cache.stats()["hits"]
    assert reader.count("Post", cache=True) == 4 and reader.cache.stats()["hits"] == hits


# ---------------------------------------------------------------- management across nodes
def test_pattern_invalidation_clear_and_stats_reach_every_primary(make, cluster, spread):
    db = make(spread)
    seed(db)
    db.create("Tag", label="a")
    summary = _summary(db)
    for title in ("p0", "p1", "p2"):
        db.read("Post", filter={"title": title}, cache=True)
    db.count("Tag", cache=True)
    db.list("Tag", cache=True)
    summary()
    nodes = lambda: {p for p, ks in cluster.keys(f"{spread}e:").items() if ks}  # noqa: E731
    assert len(nodes()) >= 2
    assert db.cache.stats()["entries"] == 6 and db.cache.stats()["bytes"] > 0
    assert db.cache.invalidate("posts:read:*") == 3
    assert db.cache.stats()["entries"] == 3
    assert db.cache.invalidate("posts:*") == 0
    assert db.cache.invalidate("fn:*") == 1
    assert db.cache.invalidate("tags:*") == 2
    summary()
    db.count("Post", cache=True)
    db.count("Tag", cache=True)
    assert len(nodes()) >= 2
    assert db.cache.clear() == 3
    assert db.cache.stats()["entries"] == 0 and nodes() == set()
    versions = {k for ks in cluster.keys(spread).values() for k in ks}
    tokens = {v for v in versions if "|" not in v and not v.startswith(f"{spread}layouts:")}
    assert tokens == {_vkey(spread, "posts"), _vkey(spread, "tags")}  # tokens (and layout registries) stay


# ---------------------------------------------------------------- settings
def test_cluster_settings(monkeypatch, cluster, make):
    port = cluster.ports[1]
    for settings in ({"redis_url": f"redis+cluster://127.0.0.1:{port}"},
                     {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_cluster": True},
                     {"redis_url": f"rediss+cluster://127.0.0.1:{port}"}):
        cfg = DataFlowConfig.build(database_url="sqlite://", **settings)
        with DataFlow(cfg) as db:  # nothing connects yet
            assert isinstance(db.cache.store, ClusterStore)
    monkeypatch.setenv("DATAFLOW_REDIS_URL", f"redis://127.0.0.1:{port}")
    monkeypatch.setenv("DATAFLOW_REDIS_CLUSTER", "true")
    db = make(f"dftest:{uuid.uuid4().hex[:10]}:", redis_url=None)
    assert db.config.redis_cluster is True and db.cache.stats()["backend"] == "redis-cluster"
    db.create("Post", title="a")
    assert db.count("Post", cache=True) == 1 and db.count("Post", cache=True) == 1
    assert db.cache.stats()["hits"] == 1
    monkeypatch.delenv("DATAFLOW_REDIS_CLUSTER")
    with DataFlow("sqlite://") as plain:
        assert isinstance(plain.cache.store, RedisStore) and not isinstance(plain.cache.store, ClusterStore)

    refused = {
        "redis_cluster needs redis_url": {"redis_cluster": True},
        "redis_cluster must be True or False": {"redis_cluster": "yes", "redis_url": "redis://127.0.0.1"},
        "only database 0": {"redis_url": "redis+cluster://:s3cret@127.0.0.1:7000/2"},
        "host:port separated by commas": {"redis_url": "redis+cluster://:s3cret@127.0.0.1:7000,127.0.0.1:x"},
        "a Redis Cluster URL is": {"redis_url": "unix:///tmp/s3cret.sock", "redis_cluster": True},
    }
    shown = repr(DataFlowConfig.build(database_url="sqlite://",
                                      redis_url="redis+cluster://u:s3c/r@t@h1:7000,h2:7001/0"))
    assert "redis_url='redis+cluster://u:***@h1:7000,h2:7001/0'" in shown and "s3c" not in shown
    monkeypatch.delenv("DATAFLOW_REDIS_URL")
    for message, settings in refused.items():
        with pytest.raises(SettingError, match=message) as info:
            DataFlow("sqlite://", **settings)
        assert "s3cret" not in str(info.value)


def test_several_start_nodes_one_of_them_down(make, cluster, spread):
    """The first address listed does not answer: the cluster is found through the next one."""
    url = f"redis+cluster://127.0.0.1:{_free_port()},127.0.0.1:{cluster.ports[2]}"
    db = make(spread, redis_url=url)
    seed(db)
    assert db.count("Post", cache=True) == 3 and db.count("Post", cache=True) == 3
    assert db.cache.stats()["hits"] == 1 and db.cache.stats()["errors"] == 0


# ---------------------------------------------------------------- outages
def test_unreachable_cluster_runs_uncached_with_one_warning(db_url, caplog):
    with DataFlow(db_url, redis_url=f"redis+cluster://127.0.0.1:{_free_port()}") as db:
        declare(db)
        db.cache.retry_after = 0
        with caplog.at_level(logging.WARNING, logger="dataflow.cache"):
            seed(db)
            for _ in range(3):
                assert db.count("Post", cache=True) == 3
            db.create("Post", title="x")
            summary = _summary(db)
            assert summary()["posts"] == 4 and summary()["posts"] == 4
            assert db.cache.invalidate("*") == 0
        assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
        stats = db.cache.stats()
        assert stats["available"] is False and stats["hits"] == 0 and stats["errors"] >= 1


def test_a_node_stopped_and_started_mid_run(make, cluster, spread, caplog):
    """Runs last: it stops the primary holding the posts table and starts it again."""
    db, other = make(spread), make(spread, node_prefix="Other")
    db.cache.retry_after = other.cache.retry_after = 0
    seed(db)
    db.create("Tag", label="a")
    for instance in (db, other):
        for _ in range(2):
            assert instance.count("Post", cache=True) == 3 and instance.count("Tag", cache=True) == 1
    assert db.cache.stats()["hits"] == 2 and other.cache.stats()["hits"] == 4  # the same entries
    posts_node = cluster.owner(_vkey(spread, "posts"))
    cluster.stop(posts_node)
    try:
        with caplog.at_level(logging.WARNING, logger="dataflow.cache"):
            assert db.count("Post", cache=True) == 3  # answered, uncached
            assert db.count("Tag", cache=True) == 1   # the whole cache waits for the cluster
            db.create("Post", title="while down")     # its token is on the missing node: postponed
            db.create("Tag", label="while down")      # its token's node answers: replaced now
            assert db.count("Post", cache=True) == 4 and db.count("Tag", cache=True) == 2
            # Another instance that has not touched the missing node still serves from the others:
            # the write above reached it, so its tags entry is stale, not served.
            assert other.count("Tag", cache=True) == 2
            stats = db.cache.stats()
            assert stats["available"] is False and stats["errors"] >= 1
        assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    finally:
        cluster.start(posts_node)
        cluster.wait_ok()
    hits = db.cache.stats()["hits"]
    assert db.count("Post", cache=True) == 4 and db.count("Post", cache=True) == 4
    assert db.count("Tag", cache=True) == 2 and db.count("Tag", cache=True) == 2
    # Posts: a miss, then a hit. Tags: two hits, the first on the fresh entry the other instance
    # stored while this one ran uncached.
    assert db.cache.stats()["hits"] == hits + 3 and db.cache.stats()["available"] is True
    assert "caching resumed" in caplog.text
    assert other.count("Post", cache=True) == 4
