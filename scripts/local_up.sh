#!/usr/bin/env bash
# The main command (README): the whole `local` stack on this machine, in one go.
#   1. set-up: the virtualenv (scripts/test.sh --setup-only)
#   2. toolchain: Go-built pulumi, kubernetes provider, Kubernetes, etcd, kwok, KubeRay operator, KServe controller
#      (cached; no-op when warm)
#   3. local control planes: one per site of the local spec, nodes simulated by kwok (hybridml local up), each with
#      the real KServe controller manager (Standard mode, webhooks on loopback) reconciling the Triton pipelines
#   4. test hosts for dc-local's racks (root: network namespaces with sshd, scripts/testhosts.py up; kept when up)
#   5. pulumi up --stack local --yes (stack created if needed; file:// backend in .state/, local passphrase):
#      the clusters, dc-local's racks bootstrapped by Ansible (Pulumi.local.yaml hybridml:bootstrapRacks, one
#      resource per rack) and the serving stack. Without root the racks are left out, and it says so.
#   6. with --dataplane: the data path (hybridml local dataplane up local): the real Envoy Gateway controller
#      (standalone) and Envoy proxies serving the program's gateway objects on 127.0.0.1, in front of SIMULATED
#      model servers; stop it with `hybridml local dataplane down local`
# Idempotent: a second run changes nothing. Prints the time of each phase.
#
#   scripts/local_up.sh                 # everything
#   scripts/local_up.sh --dataplane     # and then the data path (README "Data path on the local stack")
#   scripts/local_up.sh -- --diff       # extra arguments after `--` go to `pulumi up`
# Environment: PULUMI_BACKEND_URL (default file://$PWD/.state), PULUMI_CONFIG_PASSPHRASE (default
# local-only: the local stack holds no secret), HYBRIDML_CRD_DIR (default ../shared/crds).
# GPUs are SIMULATED (kwok fake nodes); the racks are test hosts on this machine, bootstrapped for real by Ansible
# over SSH (README "On-prem racks" says which of their nodes are kwok nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=local
PULUMI_ARGS=()
DATAPLANE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; PULUMI_ARGS+=("$@"); break ;;
    --dataplane) DATAPLANE=1; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (extra pulumi arguments go after --)" >&2; exit 2 ;;
  esac
done

t_all=$(date +%s.%N)
t_phase=$t_all
declare -a TIMINGS=()
phase_done() {
  local now; now=$(date +%s.%N)
  TIMINGS+=("$(awk -v a="$now" -v b="$t_phase" -v n="$1" 'BEGIN { printf "%-22s %6.1f s", n, a - b }')")
  t_phase=$now
}
phase() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

phase "set-up (virtualenv)"
scripts/test.sh --setup-only
phase_done "set-up"

phase "toolchain"
eval "$(scripts/toolchain.sh --env)"
phase_done "toolchain"

# shellcheck source=scripts/pulumi_env.sh
. scripts/pulumi_env.sh

phase "local control planes (simulated GPUs and racks: kwok nodes)"
.venv/bin/python -m hybridml.cli.local up local
phase_done "control planes"

phase "test hosts (dc-local's racks; Ansible bootstraps them inside pulumi up)"
RACKS=1
racks_off() {
  RACKS=0
  printf '\n!! RACKS LEFT OUT: %s.\n!! pulumi up runs with hybridml:bootstrapRacks=false (a copy of Pulumi.local.yaml,\n' "$1"
  printf '!! --config-file): dc-local is its control plane and kwok nodes only, no host is bootstrapped.\n\n'
  local file; file="$(mktemp --suffix=.yaml)"
  .venv/bin/python -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); d["config"]["hybridml:bootstrapRacks"] = False
yaml.safe_dump(d, open(sys.argv[2], "w"), sort_keys=False)' "Pulumi.$STACK.yaml" "$file"
  PULUMI_ARGS=(--config-file "$file" "${PULUMI_ARGS[@]}")
}
if [ "$(id -u)" != 0 ]; then
  racks_off "not root (test hosts are network namespaces and overlay mounts)"
elif [ -f .state/testhosts/inventory-overrides.yaml ] && .venv/bin/python scripts/testhosts.py status >/dev/null 2>&1; then
  echo "test hosts already up (.state/testhosts): kept"
elif ! .venv/bin/python scripts/testhosts.py up --from-spec local; then
  racks_off "the test hosts could not be created (see above)"
fi
if [ "$RACKS" = 1 ] && ! command -v pulumi-resource-pulumi-python >/dev/null; then
  # the engine runs Python dynamic providers (one per rack) through this plugin; the Go-built CLI lacks it
  mkdir -p .state/plugins
  printf '#!/bin/sh\nexec "%s/.venv/bin/python" -u -m pulumi.dynamic "$@"\n' "$PWD" >.state/plugins/pulumi-resource-pulumi-python
  chmod 0755 .state/plugins/pulumi-resource-pulumi-python
  export PATH="$PWD/.state/plugins:$PATH"
fi
phase_done "test hosts"

phase "pulumi up --stack $STACK"
pulumi stack select "$STACK" --create >/dev/null
recover_pending "$STACK"
pulumi up --stack "$STACK" --yes --skip-preview "${PULUMI_ARGS[@]}"
if [ "$RACKS" = 1 ]; then
  echo "racks (hosts the last bootstrap of each rack changed):"
  pulumi stack output racks --stack "$STACK" --json
fi
phase_done "pulumi up"

phase "pods"
kubeconfig=.local/kubeconfig
for ctx in $(kubectl --kubeconfig "$kubeconfig" config get-contexts -o name); do
  total=$(kubectl --kubeconfig "$kubeconfig" --context "$ctx" get pods -A --no-headers \
            --field-selector=status.phase!=Succeeded 2>/dev/null | wc -l)
  running=$(kubectl --kubeconfig "$kubeconfig" --context "$ctx" get pods -A --no-headers \
              --field-selector=status.phase=Running 2>/dev/null | wc -l)
  echo "$ctx: $running pods Running (of $total; kwok-simulated nodes)"
done
phase_done "pods check"

if [ "$DATAPLANE" = 1 ]; then
  phase "data path (real Envoy Gateway + Envoy on 127.0.0.1; model servers SIMULATED)"
  .venv/bin/python -m hybridml.cli local dataplane up local
  phase_done "data path"
fi

printf '\n== timings\n'
printf '%s\n' "${TIMINGS[@]}"
awk -v a="$(date +%s.%N)" -v b="$t_all" 'BEGIN { printf "%-22s %6.1f s\n", "total", a - b }'
echo "kubeconfig: $kubeconfig (contexts hybridml-<site>); tear down: scripts/local_down.sh"
