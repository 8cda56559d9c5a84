"""app.start()'s address and the lazy import of the web layer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dataflow.errors import ModelError, ValidationError
from dataflow.web.server import address
from served import SRC


def test_address_from_arguments_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("DATAFLOW_HOST", raising=False)
    monkeypatch.delenv("DATAFLOW_PORT", raising=False)
    assert address() == ("0.0.0.0", 8000)
    monkeypatch.setenv("DATAFLOW_HOST", "127.0.0.1")
    monkeypatch.setenv("DATAFLOW_PORT", "9001")
    assert address() == ("127.0.0.1", 9001)
    assert address("::1", 0) == ("::1", 0)
    for bad in ("eighty", "70000", "-1"):
        monkeypatch.setenv("DATAFLOW_PORT", bad)
        with pytest.raises(ValidationError, match="DATAFLOW_PORT"):
            address()


def test_import_dataflow_does_not_import_fastapi():
    code = ("import sys; from dataflow import DataFlow; db = DataFlow('sqlite:///:memory:'); "
            "assert 'fastapi' not in sys.modules and 'dataflow.web' not in sys.modules; "
            "db.endpoint('/x')(lambda: 1); assert 'fastapi' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})


def test_a_resource_cannot_take_the_apps_own_paths():
    from dataflow import DataFlow

    with DataFlow("sqlite:///:memory:") as app:
        with pytest.raises(ModelError, match="/docs is taken"):
            app.resource("docs")(type("R", (), {}))
        app.resource("docs", path="/api/docs")(type("R", (), {}))  # fine elsewhere
