#!/usr/bin/env bash
# Set up, then run the Quick Start demo on the embedded default database (SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python examples/quickstart.py "$@"
