"""Property-based fuzz of the API from its own OpenAPI document (schemathesis), against a real server.

Checks: no 5xx; status codes, content types and bodies as documented; schema-violating requests
refused. Not checked: "every schema-valid request is accepted" (positive_data_acceptance): a valid
body may still name a missing foreign key or repeat a unique value, and a ``filter`` string must be
JSON, none of which an OpenAPI schema can say.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from served import Served

APP = Path(__file__).resolve().parent / "apps" / "rest_app.py"


def test_fuzz_finds_no_server_errors(module_url, tmp_path):
    if not module_url.startswith("sqlite"):
        # It exercises the HTTP layer (routing, schemas, error mapping), the same on every backend; the
        # REST tests run on every backend. Once keeps the suite within its time budget.
        pytest.skip("the OpenAPI fuzz runs once, on SQLite")
    with Served(APP, module_url, tmp_path) as app:
        cli = Path(sys.executable).parent / "schemathesis"
        run = subprocess.run(
            [str(cli), "run", f"{app.base}/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance", "--exclude-path", "/boom",
             "--max-examples", "15", "--seed", "20261130", "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        errors = [line for line in app.output().splitlines() if "Traceback" in line]
        assert not errors, app.output()[-4000:]
