#!/usr/bin/env bash
# Creates .venv-feast with a pinned Feast (redis extra), apart from the project venv: Feast pulls in a large
# tree (pandas, pyarrow, dask, fastapi, SQLAlchemy, ...) with its own pins, which the runtime never needs.
# The real-Feast test (tests/workloads/test_feast_real.py) and scripts/bench_feast.py run from it.
#   scripts/feast_venv.sh            create/refresh (idempotent; prints the feast binary path)
# HYBRIDML_FEAST_VENV puts it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
FEAST_VERSION="0.67.0"
VENV="${HYBRIDML_FEAST_VENV:-.venv-feast}"
exec scripts/tool_venv.sh "$VENV" "feast-$FEAST_VERSION" "feast[redis]==$FEAST_VERSION" feast
