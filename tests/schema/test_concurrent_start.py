"""Three app processes start at once on one database: exactly one migrates, none fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dataflow
from dataflow.schema.history import history

APP = Path(__file__).with_name("concurrent_app.py")
HOLD = 1.0  # seconds the migrating process holds the lock before its DDL


def test_three_processes_starting_at_once_migrate_exactly_once(engine, db_url):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(dataflow.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    start_at = time.time() + 2.5  # after every interpreter has imported DataFlow
    procs = [subprocess.Popen([sys.executable, str(APP), db_url, str(start_at), str(HOLD)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(3)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{out}\n{err}"
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert [r["error"] for r in results] == [None, None, None]
    assert sorted(r["applied"] for r in results) == [False, False, True], results
    [migrated] = [r for r in results if r["applied"]]
    assert migrated["operations"] >= 3
    # The others saw the tables missing as they started, yet applied nothing and failed nothing: they
    # waited for the lock and found the migrator's tables there (at least one of them took that path).
    others = [r for r in results if not r["applied"]]
    assert migrated["missing_at_start"] and any(r["missing_at_start"] for r in others), results
    [row] = history(engine)
    assert row["tables"] == ["customers", "orders"]
