#!/usr/bin/env bash
# A pinned Python tool in a virtualenv of its own, apart from the project venv (its pins would clash):
#   scripts/tool_venv.sh VENV NAME REQUIREMENT BINARY
# creates/refreshes VENV once per NAME (a stamp file), then prints VENV/bin/BINARY. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="$1" NAME="$2" REQUIREMENT="$3" BINARY="$4"
stamp="$VENV/.installed-$NAME"
if [ ! -f "$stamp" ]; then
  rm -rf "$VENV"
  python3.11 -m venv "$VENV" 2>/dev/null || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "$REQUIREMENT" >&2
  touch "$stamp"
fi
echo "$VENV/bin/$BINARY"
