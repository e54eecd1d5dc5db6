#!/usr/bin/env bash
# Tear down the `local` stack: stop the data path if `local_up.sh --dataplane` started it, `pulumi destroy
# --stack local` (everything the stack created on the local clusters; the KServe controller still runs then and lifts
# its finalizer from the InferenceServices), then stop the local control planes (only the processes `hybridml local up`
# started, KServe's controller among them) and remove the test hosts of dc-local's racks.
#   scripts/local_down.sh            destroy + stop (cluster data kept in .local/: a later up resumes fast)
#   scripts/local_down.sh --purge    also delete .local/clusters (etcd data, certificates, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=local
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1
eval "$(scripts/toolchain.sh --env)"
# the data path (a no-op when it is not running)
.venv/bin/python -m hybridml.cli local dataplane down local || true
# shellcheck source=scripts/pulumi_env.sh
. scripts/pulumi_env.sh
# the rack resources' provider plugin that local_up.sh put there (deleting a rack resource leaves its hosts alone)
[ -d .state/plugins ] && export PATH="$PWD/.state/plugins:$PATH"

if pulumi stack select "$STACK" >/dev/null 2>&1; then
  if .venv/bin/python -m hybridml.cli.local status local >/dev/null 2>&1; then
    recover_pending "$STACK"
    pulumi destroy --stack "$STACK" --yes --skip-preview
  else
    echo "local control planes are not running: start them (hybridml local up) to destroy what the stack" \
         "created, or they keep it until --purge" >&2
    # the provider drops objects of unreachable clusters from the state (deleteUnreachable)
    pulumi destroy --stack "$STACK" --yes --skip-preview
  fi
else
  echo "no stack $STACK in $PULUMI_BACKEND_URL: nothing to destroy"
fi
.venv/bin/python -m hybridml.cli.local down
# the test hosts local_up.sh brought up for dc-local's racks (and a real node's kernel settings)
.venv/bin/python scripts/testhosts.py down
if [ "$PURGE" = 1 ]; then
  rm -rf .local/clusters .local/kubeconfig
  echo "removed .local/clusters"
fi
