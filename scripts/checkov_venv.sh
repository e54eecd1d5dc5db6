#!/usr/bin/env bash
# Creates .venv-checkov with a pinned checkov, apart from the project venv: checkov pins old versions of
# common packages (e.g. packaging) that clash with pytest and the project's own dependencies.
#   scripts/checkov_venv.sh            create/refresh (idempotent; prints the checkov binary path)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION="3.3.30"
VENV="${HYBRIDML_CHECKOV_VENV:-.venv-checkov}"
stamp="$VENV/.installed-checkov-$CHECKOV_VERSION"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION" >&2
  touch "$stamp"
fi
echo "$VENV/bin/checkov"
