#!/usr/bin/env bash
# Lint and types (CI runs this before the tests; any finding fails): ruff on the whole tree (pycodestyle,
# pyflakes, import order, bugbear, pyupgrade) and mypy on the product packages (strict on infra/ and
# policies/, basic elsewhere; settings in pyproject.toml). Needs the venv: scripts/test.sh --setup-only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${HYBRIDML_VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/mypy"
