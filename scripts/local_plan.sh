#!/usr/bin/env bash
# Main job until the local Pulumi stack lands: set up, then plan the local environment end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test.sh --setup-only
mkdir -p out
exec .venv/bin/hybridml plan infra/environments/local.yaml --svg out/local-placement.svg --json out/local-plan.json
