#!/usr/bin/env bash
# Set up, then run the whole test suite. Database tests run on SQLite and, when reachable at the
# addresses in DEVELOPERS.md, on PostgreSQL and MySQL; set DATAFLOW_TEST_URLS to choose yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PG_URL="${DATAFLOW_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}"
MY_URL="${DATAFLOW_TEST_MYSQL:-mysql://root@127.0.0.1:3306/test}"
if [ -z "${DATAFLOW_TEST_URLS:-}" ]; then
  urls="sqlite"
  if .venv/bin/python - "$PG_URL" <<'PY' 2>/dev/null; then urls="$urls,$PG_URL"; fi
import sys, psycopg; psycopg.connect(sys.argv[1].replace("postgresql://", "postgresql://", 1), connect_timeout=3).close()
PY
  if .venv/bin/python - <<'PY' 2>/dev/null; then urls="$urls,$MY_URL"; fi
import pymysql; pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database="test", connect_timeout=3).close()
PY
  export DATAFLOW_TEST_URLS="$urls"
fi
echo "DATAFLOW_TEST_URLS=$DATAFLOW_TEST_URLS"
# Lint and types first (configured in pyproject.toml; both start clean and must stay clean).
.venv/bin/ruff check .
.venv/bin/mypy
if [ $# -gt 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
# The whole suite: on DATAFLOW_TEST_WORKERS processes (pytest-xdist, default 2; each worker makes its own
# scratch databases), then the tests that restart a database server, alone (a restart would cut the
# other workers' connections). Fails if either part fails or the first collected nothing.
workers="${DATAFLOW_TEST_WORKERS:-2}"
status=0
.venv/bin/python -m pytest -n "$workers" --dist worksteal -m "not restarts_server" || status=$?
restarts=0
.venv/bin/python -m pytest -m restarts_server || restarts=$?
if [ "$restarts" -ne 0 ] && [ "$restarts" -ne 5 ]; then  # 5: none selected (no local PostgreSQL to restart)
  [ "$status" -eq 0 ] && status=$restarts
fi
exit "$status"
