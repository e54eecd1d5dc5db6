#!/usr/bin/env bash
# Builds the hybridml local toolchain from source with `go`, using only the Go module proxy:
#   pulumi CLI + Python language host, the pulumi-resource-kubernetes plugin, kube-apiserver,
#   kube-controller-manager, kube-scheduler, kubectl, etcd, kwok (+ its stage configs), the KubeRay
#   operator (ray-operator), the Envoy Gateway controller (envoy-gateway, for the local data path) and the
#   KServe controller manager (kserve-controller).
# No release binaries are downloaded. Pins live in scripts/toolchain/versions.env.
#
# Layout (cache keyed by version; a warm run is a no-op that takes well under a second):
#   $HYBRIDML_CACHE (default ~/.cache/hybridml)
#     go/mod, go/build              GOMODCACHE / GOCACHE
#     src/<tool>-<version>/         generated wrapper modules
#     bin/<tool>-<version>/         built binaries (+ .complete stamp)
#     bin/current/                  symlinks to the pinned binaries: put this on PATH
#     pulumi-home/                  PULUMI_HOME with the kubernetes plugin installed
#
# Usage:
#   scripts/toolchain.sh [TOOL...]      build what is missing (TOOL: pulumi kubernetes-provider
#                                       kubernetes etcd kwok kuberay-operator envoy-gateway kserve-controller
#                                       kubernetes-node containerd cni-plugins node-images; default all),
#                                       print an export line
#   eval "$(scripts/toolchain.sh --env)"  same, build logs on stderr, exports on stdout
#   scripts/toolchain.sh --check        exit 0 if everything is built, 1 otherwise (builds nothing)
#   scripts/toolchain.sh --print-versions
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TC_DIR="$HERE/toolchain"
# shellcheck disable=SC1091
source "$TC_DIR/versions.env"

CACHE="${HYBRIDML_CACHE:-$HOME/.cache/hybridml}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
CURRENT="$BIN/current"
PULUMI_HOME_DIR="$CACHE/pulumi-home"

ALL_TOOLS=(pulumi kubernetes-provider kubernetes etcd kwok kuberay-operator envoy-gateway kserve-controller
           kubernetes-node containerd cni-plugins node-images)

log() { printf '[toolchain] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

tool_version() {
  case "$1" in
    pulumi) echo "$PULUMI_VERSION" ;;
    kubernetes-provider) echo "$PULUMI_KUBERNETES_VERSION" ;;
    kubernetes) echo "$KUBERNETES_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    kuberay-operator) echo "$KUBERAY_VERSION" ;;
    envoy-gateway) echo "$ENVOY_GATEWAY_VERSION" ;;
    kserve-controller) echo "$KSERVE_VERSION" ;;
    kubernetes-node|node-images) echo "$KUBERNETES_VERSION" ;;
    containerd) echo "$CONTAINERD_VERSION" ;;
    cni-plugins) echo "$CNI_PLUGINS_VERSION" ;;
    *) die "unknown tool: $1 (known: ${ALL_TOOLS[*]})" ;;
  esac
}
tool_dir() { echo "$BIN/$1-$(tool_version "$1")"; }
# The recipe a build is stamped with; our own language host's source is part of the pulumi recipe.
tool_recipe() {
  if [[ "$1" == pulumi ]]; then
    echo "$TOOLCHAIN_RECIPE-langhost-$(sha256sum "$HERE/toolchain/langhost/main.go" | cut -c1-12)"
  elif [[ "$1" == node-images ]]; then
    echo "$TOOLCHAIN_RECIPE-images-$(cat "$HERE/toolchain/oci_image.py" "$HERE/toolchain/images/hello.c" | sha256sum | cut -c1-12)"
  else
    echo "$TOOLCHAIN_RECIPE"
  fi
}
stamp_ok() { [[ -f "$(tool_dir "$1")/.complete" ]] && grep -qx "recipe=$(tool_recipe "$1")" "$(tool_dir "$1")/.complete"; }

print_env() {
  cat <<EOF
export PATH="$CURRENT:\$PATH"
export PULUMI_HOME="$PULUMI_HOME_DIR"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export HYBRIDML_TOOLCHAIN_BIN="$CURRENT"
export HYBRIDML_KWOK_STAGES="$CURRENT/kwok-stages"
EOF
}

# ---------------------------------------------------------------------------------------------
MODE=build
REQ_TOOLS=()
for arg in "$@"; do
  case "$arg" in
    --env) MODE="env" ;;
    --check) MODE="check" ;;
    --print-versions) MODE="versions" ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option $arg" ;;
    *) tool_version "$arg" >/dev/null; REQ_TOOLS+=("$arg") ;;
  esac
done
[[ ${#REQ_TOOLS[@]} -gt 0 ]] || REQ_TOOLS=("${ALL_TOOLS[@]}")

if [[ $MODE == versions ]]; then
  grep -E '^[A-Z_]+=' "$TC_DIR/versions.env"
  exit 0
fi
if [[ $MODE == check ]]; then
  rc=0
  for t in "${REQ_TOOLS[@]}"; do
    if stamp_ok "$t"; then log "ok       $t $(tool_version "$t")"; else log "missing  $t $(tool_version "$t")"; rc=1; fi
  done
  [[ -d $CURRENT ]] || rc=1
  exit $rc
fi

# --- Go environment: everything under the cache, never touching ~/go -----------------------
GO_BIN="${GO:-}"
if [[ -z $GO_BIN ]]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"; else GO_BIN=/usr/local/go/bin/go; fi
fi
export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOPATH="$CACHE/go/path"
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS="-buildvcs=false -mod=mod"
export GO111MODULE=on
GO_PARALLEL="${HYBRIDML_GO_PARALLEL:-2}"
BUILD_FLAGS=(-p "$GO_PARALLEL" -trimpath)

gocmd() { "$GO_BIN" "$@"; }

# Directory / go.mod of a module version in the module cache (downloads it if needed). Run from
# $SRC, outside any module, so that no surrounding go.mod is involved.
mod_json() { (cd "$SRC" && gocmd mod download -json "$1@$2"); }
mod_dir() { mod_json "$1" "$2" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
mod_file() { mod_json "$1" "$2" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p'; }

# Print the replace directives of a go.mod as "LHS => RHS" lines (block and single forms).
replaces_of() {
  awk '
    /^replace[ \t]*\(/ { blk = 1; next }
    blk && /^\)/       { blk = 0; next }
    { line = $0; sub(/\/\/.*/, "", line) }
    blk && line ~ /=>/ { gsub(/^[ \t]+|[ \t]+$/, "", line); print line; next }
    /^replace[ \t]/    { sub(/^replace[ \t]+/, "", line); gsub(/^[ \t]+|[ \t]+$/, "", line); print line }
  ' "$1"
}

# Non-local replace lines of an upstream go.mod, as `replace` directives for a wrapper module.
# Local (./ ../ /) replaces are handled by the caller, which pins those modules to published versions.
nonlocal_replaces() {
  local lhs rhs
  while IFS= read -r line; do
    lhs="${line%%=>*}"; rhs="${line#*=>}"
    lhs="$(echo "$lhs" | xargs)"; rhs="$(echo "$rhs" | xargs)"
    case "$rhs" in
      .*|/*) ;;
      *) echo "replace $lhs => $rhs" ;;
    esac
  done < <(replaces_of "$1")
}
# Module paths that an upstream go.mod replaces with a local directory.
local_replace_modules() {
  local lhs rhs
  while IFS= read -r line; do
    lhs="${line%%=>*}"; rhs="${line#*=>}"
    lhs="$(echo "$lhs" | xargs)"; rhs="$(echo "$rhs" | xargs)"
    case "$rhs" in
      *FORBIDDEN_DEPENDENCY*) ;;
      .*|/*) echo "${lhs%% *}" ;;
    esac
  done < <(replaces_of "$1")
}

STEP_TIMES=()
step() { # step NAME CMD...  -- runs CMD, records its wall time
  local name="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  log "==> $name"
  "$@"
  t1=$(date +%s.%N)
  local dt
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  log "<== $name: ${dt}s"
  STEP_TIMES+=("$name ${dt}s")
}

# Atomically publish a finished build directory.
publish() { # publish TOOL TMPDIR
  local dest; dest="$(tool_dir "$1")"
  {
    echo "recipe=$(tool_recipe "$1")"
    echo "version=$(tool_version "$1")"
    echo "go=$("$GO_BIN" env GOVERSION)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } > "$2/.complete"
  chmod 0755 "$2"
  rm -rf "$dest"
  mv "$2" "$dest"
}

new_wrapper() { # new_wrapper DIR MODULE_NAME -> fresh dir with a go.mod header
  rm -rf "$1"; mkdir -p "$1"
  printf 'module %s\n\ngo 1.26.0\n\n' "$2" > "$1/go.mod"
}
tools_go() { # tools_go DIR IMPORT...
  local dir="$1"; shift
  {
    echo '//go:build tools'
    echo
    echo 'package tools'
    echo
    echo 'import ('
    for i in "$@"; do echo "	_ \"$i\""; done
    echo ')'
  } > "$dir/tools.go"
}

# --- 1. pulumi CLI + python language host -----------------------------------------------------
build_pulumi() {
  local v="v$PULUMI_VERSION" w="$SRC/pulumi-$PULUMI_VERSION" out
  out="$(mktemp -d "$BIN/.pulumi.XXXXXX")"
  new_wrapper "$w" hybridml.local/toolchain/pulumi
  local pkgmod sdkmod sdkdir
  pkgmod="$(mod_file github.com/pulumi/pulumi/pkg/v3 "$v")"
  sdkmod="$(mod_file github.com/pulumi/pulumi/sdk/v3 "$v")"
  sdkdir="$(mod_dir github.com/pulumi/pulumi/sdk/v3 "$v")"
  {
    echo "require ("
    echo "	github.com/pulumi/pulumi/pkg/v3 $v"
    echo "	github.com/pulumi/pulumi/sdk/v3 $v"
    echo ")"
    echo
    # local replaces upstream (pkg -> ../sdk) are satisfied by the require above
    { nonlocal_replaces "$pkgmod"; nonlocal_replaces "$sdkmod"; } | sort -u
  } >> "$w/go.mod"
  tools_go "$w" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
  # The upstream language host module (sdk/python/cmd/pulumi-language-python/v3) is not served
  # by the module proxy, so a small compatible host from scripts/toolchain/langhost is used.
  mkdir -p "$w/cmd/pulumi-language-python"
  cp "$TC_DIR/langhost/main.go" "$w/cmd/pulumi-language-python/main.go"
  (cd "$w" && gocmd mod tidy)
  local ldv="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$v"
  (cd "$w" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w $ldv" -o "$out/" \
      github.com/pulumi/pulumi/pkg/v3/cmd/pulumi ./cmd/pulumi-language-python)
  # The exec script that the host runs with python ships in the sdk/v3 module zip.
  install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$out/pulumi-language-python-exec"
  "$out/pulumi" version >/dev/null
  publish pulumi "$out"
}

# --- 2. pulumi-resource-kubernetes -----------------------------------------------------------
build_kubernetes_provider() {
  local w="$SRC/pulumi-kubernetes-$PULUMI_KUBERNETES_VERSION" out moddir
  out="$(mktemp -d "$BIN/.kubernetes-provider.XXXXXX")"
  moddir="$(mod_dir github.com/pulumi/pulumi-kubernetes/provider/v4 "$PULUMI_KUBERNETES_PROVIDER_MODULE_VERSION")"
  rm -rf "$w"; mkdir -p "$w"
  # The main package embeds generated files, so build from a writable copy of the module.
  cp -r "$moddir" "$w/provider"
  chmod -R u+w "$w/provider"
  local sdk=github.com/pulumi/pulumi-kubernetes/sdk/v4
  sed -i "s#^replace $sdk => \.\./sdk\$#replace $sdk => $sdk $PULUMI_KUBERNETES_SDK_MODULE_VERSION#" "$w/provider/go.mod"
  grep -q "^replace $sdk => $sdk " "$w/provider/go.mod" || die "could not rewrite the sdk/v4 replace in provider go.mod"
  (cd "$w/provider" && gocmd mod tidy)
  # As upstream's Makefile: VERSION=... go generate ./cmd/pulumi-resource-kubernetes
  # (writes schema-embed.json with the version set, and terraform-mapping-embed.json).
  (cd "$w/provider/cmd/pulumi-resource-kubernetes" && VERSION="$PULUMI_KUBERNETES_VERSION" gocmd run generate.go)
  local ldv="-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION"
  (cd "$w/provider" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w $ldv" \
      -o "$out/pulumi-resource-kubernetes" ./cmd/pulumi-resource-kubernetes)
  publish kubernetes-provider "$out"
}

# Install the provider into PULUMI_HOME's plugin cache so that `pulumi plugin ls` shows it and
# the engine finds it with automatic plugin acquisition disabled.
install_provider_plugin() {
  local pdir="$PULUMI_HOME_DIR/plugins/resource-kubernetes-v$PULUMI_KUBERNETES_VERSION"
  local src; src="$(tool_dir kubernetes-provider)/pulumi-resource-kubernetes"
  if [[ -x $pdir/pulumi-resource-kubernetes ]] && cmp -s "$pdir/pulumi-resource-kubernetes" "$src"; then
    return 0
  fi
  PULUMI_HOME="$PULUMI_HOME_DIR" PULUMI_SKIP_UPDATE_CHECK=true \
    "$(tool_dir pulumi)/pulumi" plugin install resource kubernetes "v$PULUMI_KUBERNETES_VERSION" \
    --file "$src" --non-interactive >&2
}

# --- 3. kubernetes control plane -------------------------------------------------------------
build_kubernetes() {
  local v="v$KUBERNETES_VERSION" w="$SRC/kubernetes-$KUBERNETES_VERSION" out kmod
  local staging="v0.${KUBERNETES_VERSION#*.}"
  out="$(mktemp -d "$BIN/.kubernetes.XXXXXX")"
  new_wrapper "$w" hybridml.local/toolchain/kubernetes
  kmod="$(mod_file k8s.io/kubernetes "$v")"
  {
    echo "require k8s.io/kubernetes $v"
    echo
    # every staging module (replaced by ./staging/src/... upstream) -> its published v0.X.Y
    local m
    for m in $(local_replace_modules "$kmod"); do echo "replace $m => $m $staging"; done
    nonlocal_replaces "$kmod"
  } >> "$w/go.mod"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  tools_go "$w" "${pkgs[@]}"
  (cd "$w" && gocmd mod tidy)
  # upstream's hack/lib/version.sh sets these so `--version` reports the release
  local vp=k8s.io/component-base/version
  local minor ldv
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  ldv="-X $vp.gitVersion=$v -X $vp.gitMajor=${KUBERNETES_VERSION%%.*} -X $vp.gitMinor=$minor -X $vp.gitTreeState=clean -X $vp.buildDate=1970-01-01T00:00:00Z"
  ldv="$ldv -X k8s.io/client-go/pkg/version.gitVersion=$v"
  (cd "$w" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w $ldv" -o "$out/" "${pkgs[@]}")
  "$out/kube-apiserver" --version >&2
  publish kubernetes "$out"
}

# --- 4. etcd ---------------------------------------------------------------------------------
build_etcd() {
  local v="v$ETCD_VERSION" w="$SRC/etcd-$ETCD_VERSION" out smod
  out="$(mktemp -d "$BIN/.etcd.XXXXXX")"
  new_wrapper "$w" hybridml.local/toolchain/etcd
  smod="$(mod_file go.etcd.io/etcd/server/v3 "$v")"
  {
    echo "require go.etcd.io/etcd/server/v3 $v"
    echo
    local m
    # sibling modules (api, client/pkg, client/v3, pkg) at the same release
    for m in $(local_replace_modules "$smod"); do echo "replace $m => $m $v"; done
    nonlocal_replaces "$smod"
  } >> "$w/go.mod"
  tools_go "$w" go.etcd.io/etcd/server/v3
  (cd "$w" && gocmd mod tidy)
  (cd "$w" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
  "$out/etcd" --version >&2
  publish etcd "$out"
}

# --- 5. kwok ---------------------------------------------------------------------------------
build_kwok() {
  local v="v$KWOK_VERSION" out moddir
  out="$(mktemp -d "$BIN/.kwok.XXXXXX")"
  moddir="$(mod_dir sigs.k8s.io/kwok "$v")"
  # kwok has no replace directives: `go install pkg@version` works as is (-mod is not allowed there)
  GOFLAGS=-buildvcs=false GOBIN="$out" gocmd install "${BUILD_FLAGS[@]}" -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$v"
  # Stage configs (node initialise/heartbeat, pod create/ready/complete/delete) shipped in the module.
  mkdir -p "$out/kwok-stages"
  local f
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
           pod/general/pod-create.yaml pod/general/pod-init-container-running.yaml \
           pod/general/pod-init-container-completed.yaml pod/general/pod-ready.yaml \
           pod/general/pod-complete.yaml pod/general/pod-delete.yaml; do
    install -m 0644 "$moddir/kustomize/stage/$f" "$out/kwok-stages/$(basename "$f")"
  done
  "$out/kwok" --version >&2
  publish kwok "$out"
}

# --- 6. KubeRay operator --------------------------------------------------------------------
build_kuberay_operator() {
  local v="v$KUBERAY_VERSION" out
  out="$(mktemp -d "$BIN/.kuberay-operator.XXXXXX")"
  # the module has no replace directives: `go install pkg@version` builds it as released (its main
  # package is the module root; the binary is named ray-operator)
  GOFLAGS=-buildvcs=false GOBIN="$out" gocmd install "${BUILD_FLAGS[@]}" -ldflags="-s -w" \
    "github.com/ray-project/kuberay/ray-operator@$v"
  "$out/ray-operator" --help >/dev/null 2>&1 || die "ray-operator $v does not run"
  publish kuberay-operator "$out"
}

# --- 7. Envoy Gateway controller (the local data path: hybridml local dataplane) --------------
build_envoy_gateway() {
  local v="v$ENVOY_GATEWAY_VERSION" out
  out="$(mktemp -d "$BIN/.envoy-gateway.XXXXXX")"
  # the module has no replace directives: `go install pkg@version` builds the release as is; the version
  # is stamped in as upstream's Makefile does (`envoy-gateway version`)
  GOFLAGS=-buildvcs=false GOBIN="$out" gocmd install "${BUILD_FLAGS[@]}" \
    -ldflags="-s -w -X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=$v" \
    "github.com/envoyproxy/gateway/cmd/envoy-gateway@$v"
  "$out/envoy-gateway" version | grep -qx "ENVOY_GATEWAY_VERSION: $v" || die "envoy-gateway $v does not report its version"
  publish envoy-gateway "$out"
}

# --- KServe controller manager (reconciles the Triton pipelines' InferenceServices locally) ----
build_kserve_controller() {
  local v="v$KSERVE_VERSION" w="$SRC/kserve-$KSERVE_VERSION" out kmod kdir
  out="$(mktemp -d "$BIN/.kserve-controller.XXXXXX")"
  kmod="$(mod_file github.com/kserve/kserve "$v")"
  kdir="$(mod_dir github.com/kserve/kserve "$v")"
  # its go.mod replaces modules (controller-runtime, expr, protoc-gen-validate), so `go install @version` refuses
  # it: a wrapper module requires it and carries those replace lines
  [[ -z "$(local_replace_modules "$kmod")" ]] || die "kserve $v replaces modules by local paths: pin them in build_kserve_controller"
  new_wrapper "$w" hybridml.local/toolchain/kserve
  { echo "require github.com/kserve/kserve $v"; echo; nonlocal_replaces "$kmod"; } >> "$w/go.mod"
  tools_go "$w" github.com/kserve/kserve/cmd/manager
  (cd "$w" && gocmd mod tidy)
  (cd "$w" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w" -o "$out/kserve-controller" github.com/kserve/kserve/cmd/manager)
  # what an install of the release brings besides the binary travels with it (hybridml/local/kserve.py reads it): the
  # default inferenceservice-config, the webhook registrations, the default ClusterStorageContainer with its Helm
  # chart's values, and the CRDs ../shared/crds lacks (TrainedModel: the manager watches it; ClusterStorageContainer:
  # its pod webhook lists them)
  mkdir -p "$out/kserve-release"
  install -m 0644 "$kdir/config/configmap/inferenceservice.yaml" "$kdir/config/webhook/manifests.yaml" \
    "$kdir/config/storagecontainers/default.yaml" "$kdir/charts/kserve-resources/values.yaml" \
    "$kdir/config/crd/full/serving.kserve.io_trainedmodels.yaml" \
    "$kdir/config/crd/full/clusterstoragecontainer/serving.kserve.io_clusterstoragecontainers.yaml" "$out/kserve-release/"
  local usage; usage="$("$out/kserve-controller" --help 2>&1 || true)"
  [[ $usage == *-webhook-port* ]] || die "kserve-controller $v does not run: $usage"
  publish kserve-controller "$out"
}

# --- the datacenter test hosts' real node: kubelet, kubeadm, containerd, CNI loopback, images ---
# tools/testhosts packages these into the test hosts' apt repository (README "On-prem racks").
build_kubernetes_node() {
  local v="v$KUBERNETES_VERSION" w="$SRC/kubernetes-node-$KUBERNETES_VERSION" out kmod minor ldv m
  local staging="v0.${KUBERNETES_VERSION#*.}" vp=k8s.io/component-base/version
  out="$(mktemp -d "$BIN/.kubernetes-node.XXXXXX")"
  # the same wrapper as build_kubernetes (same module graph: with a warm GOCACHE only the node packages compile)
  new_wrapper "$w" hybridml.local/toolchain/kubernetes-node
  kmod="$(mod_file k8s.io/kubernetes "$v")"
  {
    echo "require k8s.io/kubernetes $v"; echo
    for m in $(local_replace_modules "$kmod"); do echo "replace $m => $m $staging"; done
    nonlocal_replaces "$kmod"
  } >> "$w/go.mod"
  tools_go "$w" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm
  (cd "$w" && gocmd mod tidy)
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  ldv="-X $vp.gitVersion=$v -X $vp.gitMajor=${KUBERNETES_VERSION%%.*} -X $vp.gitMinor=$minor -X $vp.gitTreeState=clean -X $vp.buildDate=1970-01-01T00:00:00Z"
  ldv="$ldv -X k8s.io/client-go/pkg/version.gitVersion=$v"
  (cd "$w" && gocmd build "${BUILD_FLAGS[@]}" -ldflags="-s -w $ldv" -o "$out/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubeadm)
  "$out/kubelet" --version | grep -qx "Kubernetes $v" || die "kubelet $v does not report its version"
  publish kubernetes-node "$out"
}

build_containerd() {
  local v="v$CONTAINERD_VERSION" out m=github.com/containerd/containerd/v2
  out="$(mktemp -d "$BIN/.containerd.XXXXXX")"
  # no replace directives: `go install @version`, with upstream's static build tags (its Makefile); the shim
  # additionally without gRPC (no_grpc), as upstream builds it
  local tags="urfave_cli_no_docs osusergo netgo static_build" ldv="-X $m/version.Version=$v -X $m/version.Revision=release -X $m/version.Package=$m"
  GOFLAGS=-buildvcs=false GOBIN="$out" gocmd install "${BUILD_FLAGS[@]}" -tags "$tags" -ldflags="-s -w $ldv" \
    "$m/cmd/containerd@$v" "$m/cmd/ctr@$v"
  GOFLAGS=-buildvcs=false GOBIN="$out" gocmd install "${BUILD_FLAGS[@]}" -tags "$tags no_grpc" -ldflags="-s -w $ldv" \
    "$m/cmd/containerd-shim-runc-v2@$v"
  "$out/containerd" --version | grep -q " $v " || die "containerd $v does not report its version"
  # upstream's systemd unit, for the package tools/testhosts makes (in systemd/, off PATH)
  mkdir -p "$out/systemd"
  install -m 0644 "$(mod_dir "$m" "$v")/containerd.service" "$out/systemd/containerd.service"
  publish containerd "$out"
}

build_cni_plugins() {
  local v="v$CNI_PLUGINS_VERSION" out
  out="$(mktemp -d "$BIN/.cni-plugins.XXXXXX")"
  # only loopback: the test hosts' node has no pod network (README "On-prem racks"); in cni/, off PATH
  mkdir -p "$out/cni"
  GOFLAGS=-buildvcs=false GOBIN="$out/cni" gocmd install "${BUILD_FLAGS[@]}" -ldflags="-s -w" \
    "github.com/containernetworking/plugins/plugins/main/loopback@$v"
  publish cni-plugins "$out"
}

# The sandbox (pause) image from the Kubernetes module's own source, as upstream builds it (static C, scratch
# image, user 65535), and a small workload image: OCI archives for `ctr images import` (no registry is reachable).
build_node_images() {
  local v="v$KUBERNETES_VERSION" out kdir tag hello
  command -v gcc >/dev/null || die "gcc not found: apt-get install gcc libc6-dev (static pause and workload images)"
  out="$(mktemp -d "$BIN/.node-images.XXXXXX")"
  kdir="$(mod_dir k8s.io/kubernetes "$v")"
  tag="$(sed -n 's/^TAG ?= *//p' "$kdir/build/pause/Makefile")"
  [[ -n $tag ]] || die "no pause TAG in $kdir/build/pause/Makefile"
  hello="$(sha256sum "$HERE/toolchain/images/hello.c" | cut -c1-12)"
  mkdir -p "$out/node-images" "$out/.work"
  gcc -Os -Wall -Werror -static -DVERSION="v$tag-hybridml" -o "$out/.work/pause" "$kdir/build/pause/linux/pause.c"
  gcc -Os -Wall -Werror -static -o "$out/.work/hello" "$HERE/toolchain/images/hello.c"
  python3 "$HERE/toolchain/oci_image.py" "$out/node-images/pause.tar" "registry.k8s.io/pause:$tag" \
    --file "$out/.work/pause:/pause" --entrypoint /pause --user 65535:65535
  python3 "$HERE/toolchain/oci_image.py" "$out/node-images/hello.tar" "hybridml.local/hello:$hello" \
    --file "$out/.work/hello:/hello" --entrypoint /hello --user 65534:65534
  printf '{"sandbox": "registry.k8s.io/pause:%s", "workload": "hybridml.local/hello:%s"}\n' "$tag" "$hello" \
    > "$out/node-images/images.json"
  rm -rf "$out/.work"
  publish node-images "$out"
}

# --- bin/current -----------------------------------------------------------------------------
link_current() {
  local tmp="$BIN/.current.$$" t f
  rm -rf "$tmp"; mkdir -p "$tmp"
  for t in "${ALL_TOOLS[@]}"; do
    stamp_ok "$t" || continue
    for f in "$(tool_dir "$t")"/*; do
      # plugins are found in PULUMI_HOME's plugin cache (an ambient copy on PATH draws warnings)
      [[ $(basename "$f") == pulumi-resource-* ]] && continue
      ln -s "$f" "$tmp/$(basename "$f")"
    done
  done
  links() { find "$1" -mindepth 1 -maxdepth 1 -printf '%f %l\n' | sort; }
  if [[ -d $CURRENT && ! -L $CURRENT ]] && diff -q <(links "$tmp") <(links "$CURRENT") >/dev/null; then
    rm -rf "$tmp"; return 0
  fi
  rm -rf "$CURRENT.old"
  [[ -e $CURRENT ]] && mv "$CURRENT" "$CURRENT.old"
  mv "$tmp" "$CURRENT"
  rm -rf "$CURRENT.old"
}

# ---------------------------------------------------------------------------------------------
main_build() {
  mkdir -p "$BIN" "$SRC" "$GOMODCACHE" "$GOCACHE"
  exec 9>"$CACHE/.toolchain.lock"
  flock 9
  # leftovers of an interrupted build (we hold the lock: nothing else is building)
  find "$BIN" -mindepth 1 -maxdepth 1 -name '.*' -exec rm -rf {} +
  local t0 t1 t
  t0=$(date +%s.%N)
  # provider install needs the pulumi CLI
  local want=("${REQ_TOOLS[@]}")
  if [[ " ${want[*]} " == *" kubernetes-provider "* && " ${want[*]} " != *" pulumi "* ]]; then
    want=(pulumi "${want[@]}")
  fi
  for t in "${want[@]}"; do
    if stamp_ok "$t"; then
      log "cached   $t $(tool_version "$t") ($(tool_dir "$t"))"
      continue
    fi
    [[ -x $GO_BIN ]] || die "go not found (set GO=/path/to/go)"
    step "build $t $(tool_version "$t")" "build_${t//-/_}"
  done
  if stamp_ok kubernetes-provider && stamp_ok pulumi; then install_provider_plugin; fi
  link_current
  t1=$(date +%s.%N)
  if [[ ${#STEP_TIMES[@]} -gt 0 ]]; then
    log "build times:"
    for t in "${STEP_TIMES[@]}"; do log "  $t"; done
  fi
  log "total: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s"
}

main_build
if [[ $MODE == env ]]; then
  print_env
else
  print_env | head -n1
  log "or: eval \"\$(scripts/toolchain.sh --env)\""
fi
