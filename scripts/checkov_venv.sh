#!/usr/bin/env bash
# Creates .venv-checkov with a pinned checkov, apart from the project venv: checkov pins old versions of
# common packages (e.g. packaging) that clash with pytest and the project's own dependencies.
#   scripts/checkov_venv.sh            create/refresh (idempotent; prints the checkov binary path)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION="3.3.30"
VENV="${HYBRIDML_CHECKOV_VENV:-.venv-checkov}"
exec scripts/tool_venv.sh "$VENV" "checkov-$CHECKOV_VERSION" "checkov==$CHECKOV_VERSION" checkov
