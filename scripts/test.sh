#!/usr/bin/env bash
# The test command (README): creates/refreshes the virtualenv, then runs pytest.
#   scripts/test.sh                 all tests
#   scripts/test.sh --setup-only    only install what the tests need
#   scripts/test.sh -k placement    extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HYBRIDML_VENV:-.venv}"
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev]'
  touch "$stamp"
fi
if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
exec "$VENV/bin/python" -m pytest "$@"
