"""Progress of long work (issue 11): ``progress=`` on the bulk operations and ``migrate``, and the CLI's bar.

A callback hears ``(done, total)`` after each batch (bulk loads) or statement (migrations), never
going down, last ``(total, total)``; one that raises aborts the operation with ``AbortedError`` and
leaves nothing written. ``progress=True`` draws a bar on a terminal and logs otherwise.
"""

from __future__ import annotations

import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Optional

import pytest
import sqlalchemy as sa

import dataflow
from dataflow import AbortedError, DataFlow, Field, TransactionError, ValidationError
from dataflow.cli import main
from dataflow.progress import reporter

SRC = str(Path(dataflow.__file__).resolve().parents[1])


class Recorder:
    """A progress callback that records its calls and raises on the call numbered ``fail_at`` (1-based)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[tuple[int, int | None]] = []
        self.fail_at = fail_at

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyError("stop here")


def assert_well_formed(calls: list[tuple[int, int | None]], total: int) -> None:
    """Monotonic, never past the total, and ending at (total, total)."""
    assert calls, "no progress reported"
    dones = [d for d, _ in calls]
    assert dones == sorted(dones) and len(set(dones)) == len(dones), calls
    assert all(t in (total, None) for _, t in calls) and all(d <= total for d in dones), calls
    assert calls[-1] == (total, total), calls


def items(db: DataFlow):
    @db.model
    class Item:
        name: str
        n: int = 0

    return Item


def rows(count: int, start: int = 0) -> list[dict]:
    return [{"name": f"item{i}", "n": i} for i in range(start, start + count)]


def keyed(count: int) -> list[dict]:
    return [{"id": i, "name": f"item{i}", "n": i} for i in range(1, count + 1)]


def table_names(db: DataFlow) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


# ------------------------------------------------------------------ bulk loads
def test_bulk_create_reports_each_batch_and_ends_at_the_total(db):
    items(db)
    # The fast path (COPY on PostgreSQL, executemany elsewhere), in batches of 5.
    p = Recorder()
    assert db.bulk_create("Item", rows(23), batch_size=5, progress=p)["inserted"] == 23
    assert p.calls == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    # Records of two shapes (two INSERTs, each in batches), with ids returned, with conflicts skipped.
    for kw, data in [({}, rows(3, 100) + [{"id": 900 + i, "name": "keyed"} for i in range(4)]),
                     ({"return_ids": True}, rows(7, 200)),
                     ({"on_conflict": "skip", "conflict_on": ["id"]}, [{"id": i, "name": "dup"} for i in (1, *range(300, 306))])]:
        p = Recorder()
        before = db.count("Item")
        result = db.bulk_create("Item", data, batch_size=2, progress=p, **kw)
        assert_well_formed(p.calls, len(data))
        assert [d for d, _ in p.calls] == ([2, 3, 5, 7] if not kw else [2, 4, 6, 7]), (kw, p.calls)
        assert result["processed"] == len(data) and db.count("Item") == before + result["inserted"]
    assert result.get("skipped") == 1
    # Nothing to load: one call, (0, 0).
    p = Recorder()
    db.bulk_create("Item", [], progress=p)
    assert p.calls == [(0, 0)]


def test_bulk_upsert_reports_each_batch(db):
    items(db)
    db.bulk_create("Item", rows(4))
    p = Recorder()
    data = [{"id": i, "name": f"new{i}", "n": i} for i in range(1, 11)]  # 4 stored, 6 new
    result = db.bulk_upsert("Item", data, conflict_on=["id"], batch_size=4, progress=p)
    assert (result["inserted"], result["updated"]) == (6, 4)
    assert p.calls == [(4, 10), (8, 10), (10, 10)]
    assert db.count("Item") == 10 and db.read("Item", 1)["name"] == "new1"


def test_bulk_update_and_delete_report_start_then_rows_matched(db):
    items(db)
    db.bulk_create("Item", rows(12))
    p = Recorder()
    assert db.bulk_update("Item", {"n": {"$gte": 5}}, {"name": "late"}, progress=p) == 7
    assert p.calls == [(0, None), (7, 7)]
    assert db.count("Item", {"name": "late"}) == 7
    p = Recorder()
    assert db.bulk_delete("Item", {"n": {"$lt": 3}}, progress=p) == 3
    assert p.calls == [(0, None), (3, 3)]
    p = Recorder()
    assert db.bulk_update("Item", {"name": "nobody"}, {"n": 1}, progress=p) == 0
    assert p.calls == [(0, None), (0, 0)]
    assert db.count("Item") == 9


# ------------------------------------------------------------------ a callback that raises
def assert_aborted(info: pytest.ExceptionInfo, what: str) -> None:
    exc = info.value
    assert isinstance(exc.original, KeyError) and exc.__cause__ is exc.original
    assert str(exc) == f"Item {what} stopped: its progress callback raised KeyError"
    assert "stop here" not in str(exc)  # the callback's message is the caller's own: not repeated


@pytest.mark.parametrize("fail_at", [2, 5])  # mid-way; at the last call, (total, total)
def test_a_raising_callback_writes_nothing(db, fail_at):
    items(db)
    with pytest.raises(AbortedError) as info:
        db.bulk_create("Item", rows(23), batch_size=5, progress=Recorder(fail_at))
    assert_aborted(info, "bulk create")
    assert db.count("Item") == 0
    with pytest.raises(AbortedError):  # the per-batch path (ids returned)
        db.bulk_create("Item", rows(23), batch_size=5, return_ids=True, progress=Recorder(fail_at))
    assert db.count("Item") == 0

    db.bulk_create("Item", rows(5))
    upsert = [{"id": i, "name": "changed"} for i in range(1, 24)]
    with pytest.raises(AbortedError) as info:
        db.bulk_upsert("Item", upsert, conflict_on=["id"], batch_size=5, progress=Recorder(fail_at))
    assert_aborted(info, "bulk upsert")
    assert db.count("Item") == 5 and db.count("Item", {"name": "changed"}) == 0

    at = min(fail_at, 2)  # update and delete make two calls
    with pytest.raises(AbortedError) as info:
        db.bulk_update("Item", {"n": {"$gte": 0}}, {"name": "changed"}, progress=Recorder(at))
    assert_aborted(info, "bulk update")
    with pytest.raises(AbortedError):
        db.bulk_delete("Item", {"n": {"$gte": 0}}, progress=Recorder(at))
    assert db.count("Item") == 5 and db.count("Item", {"name": "changed"}) == 0


def test_a_raising_callback_inside_a_transaction_dooms_it(db):
    items(db)
    db.bulk_create("Item", rows(2))
    with pytest.raises(TransactionError):
        with db.transaction():
            db.create("Item", {"name": "before"})
            with pytest.raises(AbortedError):
                db.bulk_create("Item", rows(10), batch_size=3, progress=Recorder(2))
    assert db.count("Item") == 2


def test_audited_load_aborted_leaves_no_rows_and_no_trail(db_url):
    with DataFlow(db_url, audit_log=True) as db:
        items(db)
        with pytest.raises(AbortedError):
            db.bulk_upsert("Item", keyed(10), conflict_on=["id"], batch_size=4, progress=Recorder(2))
        with pytest.raises(AbortedError):
            db.bulk_create("Item", rows(10), batch_size=4, progress=Recorder(3))
        assert db.count("Item") == 0 and db.audit_log(table="items") == []
        db.bulk_create("Item", rows(3), progress=Recorder())
        assert len(db.audit_log(table="items")) == 3


# ------------------------------------------------------------------ what progress may be
def test_progress_must_be_a_bool_none_or_a_function(db):
    items(db)
    for bad in ["yes", 1, 0.5, [print]]:
        calls = [lambda: db.bulk_create("Item", rows(3), progress=bad),
                 lambda: db.bulk_upsert("Item", keyed(3), conflict_on=["id"], progress=bad),
                 lambda: db.bulk_update("Item", {"n": 1}, {"n": 2}, progress=bad),
                 lambda: db.bulk_delete("Item", {"n": 1}, progress=bad),
                 lambda: db.migrate(progress=bad)]
        for call in calls:
            with pytest.raises(ValidationError, match=rf"progress must be True, False, None or a function "
                                                      rf"f\(done, total\), got {type(bad).__name__}$"):
                call()
    assert db.count("Item") == 0


def test_progress_true_off_a_terminal_logs_and_false_is_silent(db, caplog, capsys):
    items(db)
    with caplog.at_level(logging.INFO, logger="dataflow.progress"):
        assert db.bulk_create("Item", rows(40), batch_size=4, progress=True)["inserted"] == 40
        assert db.bulk_update("Item", {"n": {"$lt": 10}}, {"n": 0}, progress=True) == 10
        assert db.bulk_upsert("Item", keyed(3), conflict_on=["id"], progress=False)["processed"] == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "dataflow.progress"]
    loads = [line for line in lines if line.startswith("Item bulk create")]
    assert len(loads) == 10 and loads[-1] == "Item bulk create: 40 of 40 records (100%)"  # a line per tenth
    assert lines[-2:] == ["Item bulk update: started", "Item bulk update: 10 of 10 records (100%)"]
    assert not any("upsert" in line for line in lines)
    out, err = capsys.readouterr()
    assert "\x1b[" not in out + err  # no bar drawn into captured output


def test_a_retried_operation_never_reports_less_than_before():
    """A deadlock retry runs the body again: the reporter starts over without going back."""
    p = Recorder()
    report = reporter(p, "Item bulk create")
    report.begin(10)
    report.advance(4)
    report.advance(4)
    report.begin(10)  # the retry
    for _ in range(3):
        report.advance(4 if report.done < 8 else 2)
    report.finish()
    assert p.calls == [(4, 10), (8, 10), (10, 10)]


# ------------------------------------------------------------------ migrations
def two_models(db: DataFlow) -> None:
    @db.model
    class Owner:
        name: str

    @db.model
    class Pet:
        name: str
        owner_id: Annotated[Optional[int], Field(references="Owner", index=True)] = None


def test_migrate_reports_one_call_per_statement(db):
    two_models(db)
    p = Recorder()
    plan = db.migrate(progress=p)
    n = len(plan.sql)
    assert plan.applied and n >= 2
    assert p.calls == [(i, n) for i in range(1, n + 1)]
    for kw in ({}, {"dry_run": True}):  # nothing (more) to apply: (0, 0)
        p = Recorder()
        assert db.migrate(progress=p, **kw).is_empty
        assert p.calls == [(0, 0)]


def test_migrate_stopped_by_its_callback(db_url, backend):
    db = DataFlow(db_url)
    try:
        two_models(db)
        with pytest.raises(AbortedError) as info:
            db.migrate(progress=Recorder(1))
        exc = info.value
        assert isinstance(exc.original, KeyError) and exc.__cause__ is exc.original
        assert str(exc).startswith("migrate stopped: its progress callback raised KeyError after statement 1 of ")
        history = db.history()
        if backend != "mysql":  # transactional DDL: rolled back, nothing recorded
            assert "Nothing was changed" in str(exc)
            assert history == [] and not table_names(db) & {"owners", "pets"}
        else:  # MySQL committed the first statement: it is recorded as a partial migration
            assert "owners" in table_names(db) and "pets" not in table_names(db)
            assert len(history) == 1 and history[0]["partial"] is True
            assert "stopped by the progress callback after statement 1" in history[0]["description"]
            assert f"partial migration #{history[0]['id']}" in str(exc)
        p = Recorder()
        plan = db.migrate(progress=p)  # the next migration finishes the work
        assert plan.applied and p.calls[-1] == (len(plan.sql), len(plan.sql))
        assert {"owners", "pets"} <= table_names(db) and db.history()[-1]["partial"] is False
    finally:
        db.close()


# ------------------------------------------------------------------ the CLI
APP = """
from dataflow import DataFlow

db = DataFlow({url!r})

@db.model
class Owner:
    name: str

@db.model
class Pet:
    name: str
    legs: int = 4
"""


def run_cli(tmp_path: Path, db_url: str, *args: str, **kw) -> subprocess.CompletedProcess:
    (tmp_path / "progress_app.py").write_text(textwrap.dedent(APP.format(url=db_url)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "dataflow.cli", "migrate", "progress_app.py:db", *args],
                          cwd=tmp_path, env=env, text=True, timeout=120, **kw)


def test_cli_migrate_prints_a_line_per_statement_off_a_terminal(tmp_path, db_url, monkeypatch, capsys):
    proc = run_cli(tmp_path, db_url, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert "Applied 2 change(s)" in proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("migrate: ")]
    n = len(lines)
    assert n >= 2 and lines == [f"migrate: statement {i} of {n} applied" for i in range(1, n + 1)]
    assert proc.stdout.count("CREATE TABLE") <= n
    # Nothing more to do: no progress lines (in this process: the command's own entry point).
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert main(["migrate", "progress_app.py:db"]) == 0
    finally:
        sys.modules.pop("progress_app", None)
    out, err = capsys.readouterr()
    assert "No changes" in out and "migrate:" not in err


def test_cli_migrate_draws_a_bar_on_a_terminal(tmp_path):
    (tmp_path / "progress_app.py").write_text(textwrap.dedent(APP.format(url=f"sqlite:///{tmp_path / 'bar.db'}")))
    leader, follower = pty.openpty()  # standard error is a terminal; standard output a pipe
    try:
        child = subprocess.Popen([sys.executable, "-m", "dataflow.cli", "migrate", "progress_app.py:db"],
                                 cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower, text=True,
                                 env={**os.environ, "PYTHONPATH": SRC, "TERM": "xterm", "COLUMNS": "100"})
    finally:
        os.close(follower)
    drawn = b""
    try:
        while select.select([leader], [], [], 60)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child is gone and the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
        out = child.stdout.read() if child.stdout else ""
        assert child.wait(timeout=60) == 0, drawn
    finally:
        os.close(leader)
        if child.stdout:
            child.stdout.close()
    text = drawn.decode(errors="replace")
    assert "Applied 2 change(s)" in out
    assert "migrate" in text and "2/2" in text and "statements" in text and "100%" in text
    assert "migrate: statement" not in text  # a bar, not the lines
