"""Configuration: URLs and drivers, DataFlowConfig, dicts, environment, errors, pools, lifecycle."""

import logging
import threading
import warnings

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from kailash.nodes.base import NodeRegistry

from dataflow import DatabaseError, DatabaseUnavailableError, DataFlow, DataFlowConfig, DataFlowError, SettingError, ValidationError
from dataflow.core.config import DataFlowConfig as ConfigFromSeedPath

SECRET = "s3cret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No DATAFLOW_* setting from the outer environment leaks into these tests."""
    for name in DataFlowConfig.names():
        monkeypatch.delenv(f"DATAFLOW_{name.upper()}", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)


def declare(db):
    @db.model
    class User:
        name: str

    return User


# ---------------------------------------------------------------- URLs and drivers
@pytest.mark.parametrize("url, drivername, driver", [
    ("sqlite:///app.db", "sqlite+pysqlite", "pysqlite"),
    ("sqlite:///:memory:", "sqlite+pysqlite", "pysqlite"),
    ("sqlite://", "sqlite+pysqlite", "pysqlite"),
    ("postgresql://user:pass@127.0.0.1:5432/app", "postgresql+psycopg", "psycopg"),
    ("postgres://user:pass@127.0.0.1/app", "postgresql+psycopg", "psycopg"),
    ("postgresql+psycopg://user@127.0.0.1/app", "postgresql+psycopg", "psycopg"),
    ("mysql://root@127.0.0.1:3306/app", "mysql+pymysql", "pymysql"),
    ("mariadb://root@127.0.0.1/app", "mysql+pymysql", "pymysql"),
    ("mysql+pymysql://root@127.0.0.1/app", "mysql+pymysql", "pymysql"),
])
def test_url_schemes_map_to_our_drivers(url, drivername, driver, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with DataFlow(url) as db:  # nothing connects until the first operation
        assert db.url.drivername == drivername
        assert db.engine.dialect.driver == driver
        assert db.backend == drivername.split("+")[0]
        if db.backend == "mysql":
            assert db.url.query["charset"] == "utf8mb4"


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://"])
def test_sqlite_memory_uses_one_shared_connection(url):
    with DataFlow(url) as db:
        assert isinstance(db.engine.pool, sa.StaticPool)


def test_sqlite_memory_is_shared_across_threads():
    with DataFlow("sqlite:///:memory:") as db:
        declare(db)
        db.create("User", name="main")
        seen: dict = {}

        def worker():
            try:
                seen["count"] = db.count("User")
                db.create("User", name="thread")
            except Exception as exc:  # reported below
                seen["error"] = exc

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert "error" not in seen, seen.get("error")
        assert seen["count"] == 1
        assert [r["name"] for r in db.list("User")] == ["main", "thread"]


# ---------------------------------------------------------------- where the URL comes from
def test_default_is_dataflow_db_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with DataFlow() as db:
        assert db.safe_url == "sqlite+pysqlite:///dataflow.db"
        declare(db)
        assert not (tmp_path / "dataflow.db").exists()  # nothing happens at declaration
        db.create("User", name="a")
        assert (tmp_path / "dataflow.db").exists()
    with DataFlow() as again:  # the same file, another instance
        declare(again)
        assert again.count("User") == 1


def test_environment_variable_names_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATAFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'from_env.db'}")
    with DataFlow() as db:
        declare(db)
        db.create("User", name="a")
    assert (tmp_path / "from_env.db").exists() and not (tmp_path / "dataflow.db").exists()
    with DataFlow(f"sqlite:///{tmp_path / 'explicit.db'}") as db:  # an explicit URL wins
        assert db.url.database.endswith("explicit.db")


def test_environment_fills_other_settings(monkeypatch):
    monkeypatch.setenv("DATAFLOW_POOL_SIZE", "7")
    monkeypatch.setenv("DATAFLOW_LOG_LEVEL", "INFO")
    cfg = DataFlowConfig.build({"database_url": "sqlite://"})
    assert (cfg.pool_size, cfg.log_level) == (7, "INFO")
    assert DataFlowConfig.build({"database_url": "sqlite://", "pool_size": 3}).pool_size == 3  # explicit wins
    monkeypatch.setenv("DATAFLOW_POOL_SIZE", "many")
    with pytest.raises(ValidationError, match=r"^DATAFLOW_POOL_SIZE must be"):
        DataFlow("sqlite://")


def test_config_object(tmp_path):
    assert ConfigFromSeedPath is DataFlowConfig
    config = DataFlowConfig(database_url=f"sqlite:///{tmp_path / 'cfg.db'}", pool_size=20, max_overflow=10,
                            auto_migrate=True, existing_schema_mode=False)
    with DataFlow(config=config) as db:
        assert (db.config.pool_size, db.config.max_overflow) == (20, 10)
        assert db.url.database.endswith("cfg.db")
        declare(db)
        db.create("User", name="a")
    assert (tmp_path / "cfg.db").exists()


@pytest.mark.parametrize("how", ["positional", "keyword"])
def test_config_dict(tmp_path, how):
    settings = {"database_url": f"sqlite:///{tmp_path / 'dict.db'}", "pool_size": 4, "echo": False}
    db = DataFlow(settings) if how == "positional" else DataFlow(config=settings)
    with db:
        assert (db.config.pool_size, db.config.echo) == (4, False)
        assert db.url.database.endswith("dict.db")


def test_keyword_settings_next_to_the_url():
    with DataFlow("sqlite://", pool_size=20, max_overflow=10, auto_migrate=False,
                  existing_schema_mode=True) as db:
        assert (db.config.pool_size, db.config.max_overflow) == (20, 10)
        assert (db.config.auto_migrate, db.config.existing_schema_mode) == (False, True)


@pytest.mark.parametrize("make", [
    lambda: DataFlow("sqlite://", pool_sise=5),
    lambda: DataFlow({"database_url": "sqlite://", "pool_sise": 5}),
    lambda: DataFlow(config={"database_url": "sqlite://", "pool_sise": 5}),
])
def test_unknown_setting(make):
    with pytest.raises(ValidationError) as info:
        make()
    assert str(info.value).startswith("Unknown DataFlow setting(s): pool_sise; known settings: ")
    assert "pool_size" in str(info.value)


def test_config_of_the_wrong_kind():
    with pytest.raises(ValidationError, match=r"^DataFlow config must be a URL, a dict or a DataFlowConfig, got list$"):
        DataFlow(config=["sqlite://"])


# ---------------------------------------------------------------- bad URLs
@pytest.mark.parametrize("url, message", [
    ("not a url", "Malformed database URL"),
    ("://nothing", "Malformed database URL"),
    ("postgresql://u:s3cret@127.0.0.1:port/db", "Malformed database URL"),
    ("oracle://u:s3cret@127.0.0.1/db", "Unsupported database URL scheme 'oracle' in 'oracle://u:***@127.0.0.1/db'; "
                                       "use sqlite://, postgresql:// or mysql://"),
    ("http://example.com/db", "Unsupported database URL scheme 'http'"),
    ("mssql+pyodbc://u:s3cret@127.0.0.1/db", "Unsupported database 'mssql'; use SQLite, PostgreSQL or MySQL"),
    ("postgresql://u:s3cret@127.0.0.1", "Database URL 'postgresql+psycopg://u:***@127.0.0.1' names no database; "
                                        "add '/dbname'"),
    ("postgresql+psycopg2://u:s3cret@127.0.0.1/db", "No driver for 'postgresql+psycopg2://u:***@127.0.0.1/db': "
                                                   "install it, or drop '+psycopg2' to use the driver DataFlow "
                                                   "ships (postgresql+psycopg)"),
    ("mysql+mysqldb://u:s3cret@127.0.0.1/db", "No driver for 'mysql+mysqldb://u:***@127.0.0.1/db"),
    ("postgresql://u:p@ss@127.0.0.1/db", "percent-encode"),
])
def test_bad_urls_raise_validation_error_without_the_password(url, message):
    with pytest.raises(ValidationError) as info:
        DataFlow(url)
    text = str(info.value)
    assert message in text
    assert SECRET not in text and "p@ss" not in text and ":ss@" not in text
    if "Malformed" in message:
        assert "expected 'sqlite:///path.db', 'postgresql://user:pass@host:5432/db'" in text


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@127.0.0.1:1/x", "mysql://u:s3cret@127.0.0.1:1/x"])
def test_unreachable_database_error_hides_the_password(url, caplog):
    caplog.set_level(logging.DEBUG)
    db = DataFlow(url)
    try:
        assert SECRET not in repr(db) and SECRET not in db.safe_url
        declare(db)
        with pytest.raises(DatabaseError) as info:
            db.create("User", name="a")
        text = str(info.value)
        assert SECRET not in text
        assert "is unreachable or the connection was lost" in text
        assert "check that the server is running and the URL is right" in text
        assert ":***@127.0.0.1:1/x" in text
        assert info.value.original is not None
        assert all(SECRET not in r.getMessage() for r in caplog.records)
    finally:
        db.close()


# ---------------------------------------------------------------- pools
@pytest.mark.parametrize("url", ["postgresql://u@127.0.0.1/x", "mysql://u@127.0.0.1/x"])
def test_pool_settings_reach_the_sqlalchemy_pool(url):
    with DataFlow(url, pool_size=20, max_overflow=10, pool_timeout=5, pool_recycle=60) as db:
        pool = db.engine.pool
        assert isinstance(pool, sa.QueuePool)
        assert (pool.size(), pool._max_overflow, pool._timeout, pool._recycle) == (20, 10, 5, 60)


def test_pool_limits_hold_on_a_live_database(db_url, backend, caplog):
    caplog.set_level(logging.DEBUG, logger="dataflow.engine")
    with DataFlow(db_url, pool_size=2, max_overflow=1, pool_timeout=0.3) as db:
        declare(db)
        db.create("User", name="a")
        if backend == "sqlite":  # pool_size/max_overflow do not apply: ignored, and said so (a warning)
            assert [r.levelname for r in caplog.records if "do not apply to SQLite" in r.getMessage()] == ["WARNING"]
            return
        assert (db.engine.pool.size(), db.engine.pool._max_overflow) == (2, 1)
        held = [db.engine.connect() for _ in range(3)]
        try:
            with pytest.raises(sa_exc.TimeoutError):
                db.engine.connect()
        finally:
            for conn in held:
                conn.close()
        assert db.count("User") == 1


# ---------------------------------------------------------------- lifecycle
def test_tables_are_created_on_the_first_operation_not_at_declaration(db_url):
    with DataFlow(db_url) as db:
        declare(db)
        assert sa.inspect(db.engine).get_table_names() == []
        assert db.count("User") == 0
        assert "users" in sa.inspect(db.engine).get_table_names()


def test_context_manager_closes(tmp_path):
    with DataFlow(f"sqlite:///{tmp_path / 'cm.db'}") as db:
        declare(db)
        db.create("User", name="a")
        assert "UserCreateNode" in NodeRegistry.list_nodes()
    assert db._closed
    assert "UserCreateNode" not in NodeRegistry.list_nodes()
    with pytest.raises(DataFlowError, match=r"This DataFlow instance is closed; create a new one"):
        db.count("User")
    db.close()  # closing twice is harmless


def test_an_unreachable_database_fails_at_the_first_operation_not_at_construction():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db = DataFlow("postgresql://nobody@127.0.0.1:1/never")
    try:
        declare(db)
        with pytest.raises(DatabaseError, match=r"^User create: connect failed: the database at "
                                                 r"postgresql\+psycopg://nobody@127\.0\.0\.1:1/never is unreachable"):
            db.create("User", name="x")
    finally:
        db.close()


@pytest.fixture
def noted(db, backend):
    """A server database with one Note stored, so the pool holds a live connection."""
    if backend == "sqlite":
        pytest.skip("an embedded database has no server connection to lose")

    @db.model
    class Note:
        text: str

    db.create("Note", text="before")
    return db


@pytest.fixture
def unchecked(backend, db_url):
    """As ``noted``, with pool_pre_ping off: a pooled connection is used as it is, dead or alive."""
    if backend == "sqlite":
        pytest.skip("an embedded database has no server connection to lose")
    db = DataFlow(db_url, pool_pre_ping=False)

    @db.model
    class Note:
        text: str

    db.create("Note", text="before")
    yield db
    db.close()


def test_a_write_that_met_a_dead_connection_fails_clearly_then_the_pool_recovers(unchecked, db_url,
                                                                                  kill_other_sessions):
    db = unchecked
    kill_other_sessions(db_url)
    # The pooled connection is dead and nothing checks it; the write sent on it fails clearly, names no
    # secret, and is not tried again (its statement may have reached the server)...
    with pytest.raises(DatabaseUnavailableError, match="Note create failed: the database at .* is unreachable or "
                                                       "the connection was lost") as info:
        db.create("Note", text="lost")
    assert info.value.sent is True
    # ...the pool drops it, and the next operation gets a fresh connection.
    assert db.create("Note", text="after")["text"] == "after"
    assert [r["text"] for r in db.list("Note")] == ["before", "after"]


def test_a_connection_killed_while_idle_is_replaced_before_use(noted, db_url, kill_other_sessions):
    db = noted
    kill_other_sessions(db_url)
    # The server's farewell waits on the idle connection's socket: checkout sees it, pings, and
    # replaces the connection before the write is sent, so the write succeeds.
    assert db.create("Note", text="after")["text"] == "after"
    assert db.count("Note") == 2


def test_a_connection_idle_past_the_ping_interval_is_pinged(noted, monkeypatch):
    from dataflow.core import engine as engine_module

    db = noted
    pings: list[bool] = []
    real_ping = db.engine.dialect.do_ping
    monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(True) or real_ping(conn))
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 3600.0)
    assert db.count("Note") == 1
    assert pings == []  # just used, nothing waiting on its socket: no round trip spent on a ping
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_S", 0.0)
    assert db.count("Note") == 1
    assert pings == [True]


def test_a_write_that_could_not_connect_is_tried_again(noted, backend):
    """A failure to connect comes before anything was sent: the write is retried once, and applied once."""
    db = noted
    refused: list[int] = []

    @sa.event.listens_for(db.engine, "do_connect")
    def first_to_a_closed_port(dialect, conn_rec, cargs, cparams):  # noqa: ANN001
        if not refused:  # a real connection attempt, to a port nothing listens on
            refused.append(cparams.get("port", 0))
            cparams["port"] = 1

    db.engine.dispose()  # the pool starts over: the next operation connects
    assert db.create("Note", text="retried")["text"] == "retried"
    assert len(refused) == 1
    assert sorted(r["text"] for r in db.list("Note")) == ["before", "retried"]


def test_a_write_that_cannot_connect_says_so_and_that_nothing_was_sent(noted):
    db = noted

    @sa.event.listens_for(db.engine, "do_connect")
    def closed_port(dialect, conn_rec, cargs, cparams):  # noqa: ANN001
        cparams["port"] = 1

    db.engine.dispose()
    with pytest.raises(DatabaseUnavailableError, match=r"^Note create failed: the database at .* is unreachable") \
            as info:
        db.create("Note", text="never")
    assert info.value.sent is False


# ---------------------------------------------------------------- no silent settings
# Every setting's feature is built now; the refusal machinery stays for the next one (config.UNBUILT).
@pytest.fixture
def unbuilt_metrics(monkeypatch):
    """Pretend the metrics endpoint were not built, as it was before issue 11."""
    from dataflow.core import config

    monkeypatch.setitem(config.UNBUILT, "enable_metrics", "the Prometheus metrics endpoint")
    monkeypatch.setattr(config, "_warned", set())


def test_settings_of_unbuilt_features_are_refused(unbuilt_metrics):
    with pytest.raises(SettingError, match=r"^enable_metrics is not supported yet"):
        DataFlow("sqlite://", enable_metrics=True)
    with pytest.raises(SettingError, match=r"^enable_metrics "):
        DataFlow({"database_url": "sqlite://", "enable_metrics": True})


def test_unbuilt_settings_from_the_environment_are_warned_about(unbuilt_metrics, monkeypatch, caplog):
    monkeypatch.setenv("DATAFLOW_ENABLE_METRICS", "true")
    with pytest.warns(RuntimeWarning, match=r"DATAFLOW_ENABLE_METRICS is set, but the Prometheus metrics endpoint "
                                            r"is not built"):
        cfg = DataFlowConfig.build({"database_url": "sqlite://"})
    assert cfg.enable_metrics is False
    assert "DATAFLOW_ENABLE_METRICS is set" in caplog.text


def test_unknown_dataflow_variables_are_warned_about(monkeypatch):
    monkeypatch.setenv("DATAFLOW_POOLSIZE", "3")
    monkeypatch.setattr("dataflow.core.config._warned", set())
    with pytest.warns(RuntimeWarning, match=r"^DATAFLOW_POOLSIZE is not a DataFlow setting and is ignored"):
        DataFlowConfig.build({"database_url": "sqlite://"})


def test_database_url_is_the_fallback_for_the_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'from_database_url.db'}")
    with DataFlow() as db:
        assert db.url.database.endswith("from_database_url.db")
    monkeypatch.setenv("DATAFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'ours.db'}")
    with DataFlow() as db:  # DATAFLOW_DATABASE_URL comes first
        assert db.url.database.endswith("ours.db")


def test_the_default_sqlite_file_is_logged(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    caplog.set_level(logging.INFO, logger="dataflow.config")
    with DataFlow() as db:
        assert db.url.database == "dataflow.db"
    assert f"using the SQLite file {tmp_path / 'dataflow.db'}" in caplog.text


def test_log_level_sets_the_dataflow_loggers(monkeypatch):
    logger = logging.getLogger("dataflow")
    before = logger.level
    try:
        monkeypatch.setenv("DATAFLOW_LOG_LEVEL", "debug")
        with DataFlow("sqlite://"):
            assert logging.getLogger("dataflow.operations").getEffectiveLevel() == logging.DEBUG
        with pytest.raises(SettingError, match=r"^log_level must be one of"):
            DataFlow("sqlite://", log_level="LOUD")
    finally:
        logger.setLevel(before)


def test_repr_of_the_config_masks_passwords():
    cfg = DataFlowConfig.build({"database_url": f"postgresql://u:{SECRET}@127.0.0.1/x"})
    assert SECRET not in repr(cfg) and "***" in repr(cfg)
    with DataFlow(f"postgresql://u:{SECRET}@127.0.0.1/x") as db:
        assert SECRET not in repr(db) and SECRET not in repr(db.config)
