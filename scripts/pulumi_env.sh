# Sourced by scripts/local_up.sh and scripts/local_down.sh: the Pulumi environment of the `local`
# stack with the Go-built CLI (scripts/toolchain.sh must have put it on PATH).
#   file:// backend in the repo's ignored .state/, a fixed passphrase (the local stack holds no
#   secret: never use it for dev/prod), no update checks, no plugin downloads (offline).
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$PWD/.state}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-local-only}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
case "$PULUMI_BACKEND_URL" in file://*) mkdir -p "${PULUMI_BACKEND_URL#file://}" ;; esac

# An update killed mid-way (SIGINT twice, SIGKILL, a lost machine) leaves pending operations in the
# state. With server-side apply, re-creating an object that exists adopts it, so clearing the pending
# creates and refreshing lets the next `pulumi up` converge without orphans.
recover_pending() {
  local stack="$1"
  if pulumi stack export --stack "$stack" 2>/dev/null | python3 -c \
      'import json,sys; d=json.load(sys.stdin); sys.exit(0 if (d.get("deployment") or {}).get("pending_operations") else 1)'; then
    echo "stack $stack: the previous update was interrupted; clearing its pending operations and refreshing"
    pulumi refresh --stack "$stack" --yes --skip-preview --clear-pending-creates
    # Re-created objects get a new field manager; where the API server defaulted fields inside an
    # atomic list the dead manager's list differs and the apply conflicts: this run takes them over.
    export PULUMI_K8S_ENABLE_PATCH_FORCE=true
  fi
}
