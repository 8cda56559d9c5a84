"""The ``dataflow`` command on a real app module: migrate, models, history, and its exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest
import sqlalchemy as sa

from dataflow import DataFlow
from dataflow.cli import main

APP = """
from typing import Optional
from dataflow import DataFlow

db = DataFlow({url!r})
not_a_db = 42

@db.model
class Member:
    name: str
{extra}
"""


@pytest.fixture
def app(tmp_path, monkeypatch, db_url):
    """Write an app module in a fresh directory; return a function that (re)writes it, giving its name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))

    def write(extra: str = "", body: str | None = None) -> str:
        name = f"cli_app_{uuid.uuid4().hex[:8]}"
        source = body if body is not None else APP.format(url=db_url, extra=textwrap.indent(extra, "    "))
        (tmp_path / f"{name}.py").write_text(source)
        return name

    yield write


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command as a fresh process would: the app module is imported anew each time."""
    try:
        code = main(list(argv))
    finally:
        for name in [n for n in sys.modules if n.startswith("cli_app_")]:
            db = getattr(sys.modules.pop(name), "db", None)
            if isinstance(db, DataFlow):  # also those a failed command left open
                db.close()
    out, err = capsys.readouterr()
    return code, out, err


def table_names(db_url: str) -> set[str]:
    from dataflow.core.config import DataFlowConfig
    from dataflow.core.engine import create_engine

    engine = create_engine(DataFlowConfig(database_url=db_url))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_usage_errors_exit_2(app, capsys):
    module = app()
    assert run(capsys, )[0] == 2
    assert run(capsys, "migrate")[0] == 2
    assert run(capsys, "frobnicate", f"{module}:db")[0] == 2
    assert run(capsys, "migrate", f"{module}:db", "--bogus")[0] == 2
    for target, says in [("no_such_module_xyz:db", "no module named 'no_such_module_xyz'"),
                         (f"{module}:nothere", "has no attribute 'nothere'"),
                         (f"{module}:not_a_db", "is a int, not a DataFlow instance"),
                         ("missing.py:db", "no file 'missing.py'"),
                         (f"{module}:1bad", "is not MODULE:ATTRIBUTE")]:
        code, out, err = run(capsys, "models", target)
        assert (code, says in err) == (2, True), err


def test_a_module_that_fails_to_import_exits_1(app, capsys):
    module = app(body="raise RuntimeError('boom at import')\n")
    code, out, err = run(capsys, "models", f"{module}:db")
    assert code == 1 and "RuntimeError: boom at import" in err


def test_models_lists_models_and_fields(app, capsys):
    module = app("email: Optional[str] = None\n")
    code, out, err = run(capsys, "models", f"{module}:db")
    assert code == 0, err
    assert "Member (table members)" in out and "  name: str  (required)" in out
    assert "  email: str  (nullable)" in out
    code, out, _ = run(capsys, "models", f"{module}.py")  # a file; the attribute defaults to db
    assert code == 0 and "Member (table members)" in out
    code, out, _ = run(capsys, "models", f"{module}:db", "--json")
    assert code == 0 and json.loads(out)["Member"]["table"] == "members"


def test_migrate_dry_run_then_migrate_then_history(app, capsys, db_url):
    module = app()
    code, out, err = run(capsys, "migrate", f"{module}:db", "--dry-run")
    assert code == 0, err
    assert "Dry run: nothing was changed." in out and "create table members" in out and "CREATE TABLE" in out
    assert "members" not in table_names(db_url)

    code, out, err = run(capsys, "migrate", f"{module}:db")
    assert code == 0, err
    assert "Applied 1 change(s)" in out and "members" in table_names(db_url)
    code, out, _ = run(capsys, "migrate", f"{module}:db")
    assert code == 0 and "No changes" in out

    code, out, err = run(capsys, "history", f"{module}:db", "--sql")
    assert code == 0, err
    assert out.startswith("#1  ") and "create table members" in out and "CREATE TABLE members" in out
    code, out, _ = run(capsys, "history", f"{module}:db", "--json")
    [row] = json.loads(out)
    assert row["tables"] == ["members"]


def test_migrate_errors_exit_1_and_destructive_needs_the_flag(app, capsys, db_url):
    assert run(capsys, "migrate", f"{app('legacy: Optional[str] = None')}:db")[0] == 0

    code, out, err = run(capsys, "migrate", f"{app('age: int')}:db")  # required, no default
    assert code == 1 and "error:" in err and "Member.age" in err and "Nothing was changed" in err

    dropped = app()
    code, out, err = run(capsys, "migrate", f"{dropped}:db")
    assert code == 0 and "drop column members.legacy" in out and "NOT applied" in out
    code, out, err = run(capsys, "migrate", f"{dropped}:db", "--allow-destructive")
    assert code == 0 and "Applied 1 change(s)" in out
    code, out, _ = run(capsys, "history", f"{dropped}:db")
    assert "[destructive]" in out


def test_console_script_is_installed():
    exe = shutil.which("dataflow") or str(__import__("pathlib").Path(sys.executable).with_name("dataflow"))
    proc = subprocess.run([exe, "models"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: dataflow" in proc.stderr
