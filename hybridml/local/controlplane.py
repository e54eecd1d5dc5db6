"""Local Kubernetes control planes: etcd + kube-apiserver + kube-controller-manager +
kube-scheduler + kwok per cluster, as supervised background processes on 127.0.0.1, with a
stand-in for KEDA's HPAs (keda_sim.py: no KEDA operator runs here).

Nodes are kwok fake nodes (annotation ``kwok.x-k8s.io/node: fake``), so Deployments get pods
that the scheduler places by nodeSelector/affinity/tolerations/resources and that kwok marks
Running; no container ever runs.

State layout (``state_dir`` defaults to ``<repo>/.local``)::

    <state_dir>/kubeconfig                      merged kubeconfig, one context per cluster
    <state_dir>/clusters/<name>/cluster.json    ports and definition of the cluster
    <state_dir>/clusters/<name>/kubeconfig      admin kubeconfig (context <name>)
    <state_dir>/clusters/<name>/pki/            CA, certificates, service-account keys
    <state_dir>/clusters/<name>/etcd/           etcd data
    <state_dir>/clusters/<name>/logs/<component>.log
    <state_dir>/clusters/<name>/run/<component>.pid

``up`` is idempotent: running components are kept, dead ones restarted, CRDs re-applied only
when their file changed, nodes created/updated/removed to match the definition.
``down`` stops only the processes recorded in the pidfiles (checking their identity).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from .kubeapi import KubeAPI, KubeAPIError
from .pki import ensure_pki
from .toolchain import find_binaries, kwok_stage_files

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = Path(os.environ.get("HYBRIDML_LOCAL_STATE_DIR") or REPO_ROOT / ".local")
DEFAULT_CRD_DIR = Path(os.environ.get("HYBRIDML_CRD_DIR") or REPO_ROOT.parent / "shared" / "crds")


def state_dir_for(environment: str) -> Path:
    """Where an environment's local control planes live: `.local` for the embedded `local` stack,
    `.local/envs/<env>` for any other (e.g. the `sim` fleet), so their clusters never collide
    (both may have a site called aws-use1). The merged kubeconfig is `<state dir>/kubeconfig`."""
    return DEFAULT_STATE_DIR if environment == "local" else DEFAULT_STATE_DIR / "envs" / environment

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "keda-sim")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
MANAGED_BY_LABEL = "hybridml.io/local-managed-by"
MANAGED_BY_VALUE = "hybridml-local"
CRD_HASH_ANNOTATION = "hybridml.io/crd-source-sha256"
FIELD_MANAGER = "hybridml-local"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"

DEFAULT_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}

# --- sizing --------------------------------------------------------------------------------------
# One set of settings serves both the small `local` env (a handful of nodes) and the `sim` fleet
# (1,590 kwok nodes over 7 control planes, thousands of pods) on a 2-core, 24 GiB machine
# (measurements: scripts/sim_pod_throughput.py and the notes of issue 8):
# * controller-manager and scheduler call the apiserver at a bounded rate (CLIENT_QPS): on 2 cores
#   shared by 7 control planes, higher rates only queue requests in the apiservers (p99 of pod
#   creates 5-9 s at 50-200 qps) without starting pods sooner;
# * the apiserver admits that many requests in flight (priority & fairness stays off: one tenant);
# * kwok nodes heartbeat like a real kubelet with node leases, only slower: a Lease renewal every
#   quarter of NODE_LEASE_SECONDS, a full node status every 4-5 min (stages/node-heartbeat.yaml;
#   upstream kwok rewrites every node's status every 20-25 s, the bulk of the idle load at 1,600 nodes);
#   `up` deletes the node Leases before it (re)starts kwok (see _release_node_leases);
# * nodes are created and updated by parallel requests (NODE_SYNC_WORKERS connections).
# The apiserver's live heap is 450-700 MiB, almost all of it the 30 CRDs' schemas (OpenAPI, CEL), so
# every apiserver holds ~0.8-1.3 GiB whatever the fleet; COMPONENT_ENV could trade memory for GC CPU
# (GOGC=50: ~300 MiB less each, measurably more GC under load; left at Go's default).
CLIENT_QPS = {"kube-controller-manager": (15, 30), "kube-scheduler": (30, 60)}  # (qps, burst)
MAX_REQUESTS_INFLIGHT, MAX_MUTATING_REQUESTS_INFLIGHT = 800, 400
CONCURRENT_SYNCS = {"deployment": 10, "replicaset": 10, "statefulset": 10, "service-endpoint": 10,
                    "ephemeralvolume": 10, "job": 10}
# kwok renews a node's Lease every quarter of its duration: 360 s -> every 90 s, ~18 Lease writes/s for
# the sim's 1,590 nodes (at the kubelet's 40 s, 160/s: measured 44 % of all writes while pods start).
NODE_LEASE_SECONDS = 360
NODE_MONITOR_GRACE = "300s"  # NotReady after this long without a renewal (> 3 renewals: slack for a busy machine)
# With no metrics API an HPA here only holds its workload within its bounds (keda_sim.py): syncing each of
# the sim's ~620 HPAs every 60 s instead of Kubernetes' 15 s (a scale read each) spares the busy apiservers.
HPA_SYNC_PERIOD = "60s"
COMPONENT_ENV: dict[str, dict[str, str]] = {"keda-sim": {"PYTHONPATH": str(REPO_ROOT)}}
ETCD_QUOTA_BYTES = 2 * 1024 ** 3
KWOK_OPTIONS = {"nodeLeaseParallelism": 8, "nodePlayStageParallelism": 8, "podPlayStageParallelism": 16}
NODE_SYNC_WORKERS = 8
MAX_PARALLEL_CLUSTERS = 8


# --- definitions ---------------------------------------------------------------------------------
@dataclass
class Taint:
    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def to_k8s(self) -> dict[str, str]:
        d = {"key": self.key, "effect": self.effect}
        if self.value:
            d["value"] = self.value
        return d


@dataclass
class NodeDef:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Taint] = field(default_factory=list)
    capacity: dict[str, str] = field(default_factory=dict)


@dataclass
class ClusterDef:
    name: str
    nodes: list[NodeDef] = field(default_factory=list)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def parse_taint(t: Any) -> Taint:
    """A taint from a Taint, a mapping/object with key/value/effect, or ``key[=value]:Effect``."""
    if isinstance(t, Taint):
        return t
    if isinstance(t, str):
        kv, _, effect = t.partition(":")
        key, _, value = kv.partition("=")
        return Taint(key=key, value=value, effect=effect or "NoSchedule")
    return Taint(
        key=str(_get(t, "key")), value=str(_get(t, "value", "") or ""), effect=str(_get(t, "effect", "NoSchedule"))
    )


def coerce_node(n: Any) -> NodeDef:
    if isinstance(n, NodeDef):
        return n
    capacity = _get(n, "capacity", {}) or {}
    if not isinstance(capacity, Mapping):
        capacity = capacity.model_dump(by_alias=True) if hasattr(capacity, "model_dump") else vars(capacity)
    return NodeDef(
        name=str(_get(n, "name")),
        labels={str(k): str(v) for k, v in (_get(n, "labels", {}) or {}).items()},
        taints=[parse_taint(t) for t in (_get(n, "taints", []) or [])],
        capacity={str(k): str(v) for k, v in capacity.items() if v is not None},
    )


def coerce_cluster(c: Any) -> ClusterDef:
    """A ClusterDef from a ClusterDef, a mapping or any object with ``name`` and ``nodes``."""
    if isinstance(c, ClusterDef):
        return c
    return ClusterDef(name=str(_get(c, "name")), nodes=[coerce_node(n) for n in (_get(c, "nodes", []) or [])])


def scheduler_configuration(kubeconfig: Path) -> dict[str, Any]:
    """kube-scheduler's configuration: bin-pack (MostAllocated), GPUs weighted highest.

    The default scoring (LeastAllocated) spreads pods, so single-GPU pods scatter over every GPU node
    and a 2-GPU replica finds no node with 2 free GPUs although the pool has them (fragmentation).
    GPU clusters bin-pack; the placement's node counts assume it.
    """
    qps, burst = CLIENT_QPS["kube-scheduler"]
    return {
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": qps, "burst": burst},
        "leaderElection": {"leaderElect": False},
        "profiles": [{
            "schedulerName": "default-scheduler",
            "pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {
                "type": "MostAllocated",
                "resources": [{"name": "nvidia.com/gpu", "weight": 10}, {"name": "cpu", "weight": 1},
                              {"name": "memory", "weight": 1}]}}}],
        }],
    }


# --- paths / state -------------------------------------------------------------------------------
@dataclass
class ClusterPaths:
    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def crd_cache(self) -> Path:
        return self.root / "crds.json"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def scheduler_config(self) -> Path:
        return self.root / "scheduler.yaml"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    def pidfile(self, component: str) -> Path:
        return self.run / f"{component}.pid"

    def logfile(self, component: str) -> Path:
        return self.logs / f"{component}.log"


def _state_dir(state_dir: str | os.PathLike | None) -> Path:
    return Path(state_dir).resolve() if state_dir is not None else DEFAULT_STATE_DIR


def _cluster_dirs(state_dir: Path) -> list[ClusterPaths]:
    base = state_dir / "clusters"
    if not base.is_dir():
        return []
    return [ClusterPaths(p) for p in sorted(base.iterdir()) if p.is_dir()]


def _load_state(paths: ClusterPaths) -> dict[str, Any]:
    try:
        return json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _free_ports(n: int, exclude: set[int]) -> list[int]:
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# --- processes -----------------------------------------------------------------------------------
_CHILDREN: dict[int, subprocess.Popen] = {}
_PORT_LOCK = threading.Lock()


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces: split after the closing parenthesis
    return stat.rsplit(")", 1)[1].split()


def _proc_start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) and state of a process, or None if gone/zombie."""
    rest = _proc_stat(pid)
    if rest is None:
        return None
    state, start = rest[0], rest[19]
    if state in ("Z", "X"):
        return None
    return start


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _read_pidfile(paths: ClusterPaths, component: str) -> dict[str, Any] | None:
    try:
        return json.loads(paths.pidfile(component).read_text())
    except (OSError, ValueError):
        return None


def _running_pid(paths: ClusterPaths, component: str) -> int | None:
    """The pid of a component started by ``up``, if that very process is still running."""
    rec = _read_pidfile(paths, component)
    if not rec:
        return None
    pid = int(rec["pid"])
    _reap(pid)
    start = _proc_start_time(pid)
    if start is None or start != rec.get("start_time"):
        return None
    return pid


def _start(paths: ClusterPaths, component: str, argv: list[str], env: Mapping[str, str] | None = None) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.run.mkdir(parents=True, exist_ok=True)
    with open(paths.logfile(component), "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **env} if env else None,
        )
    _CHILDREN[proc.pid] = proc
    start = None
    for _ in range(50):
        start = _proc_start_time(proc.pid)
        if start is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    _write_json(paths.pidfile(component), {"pid": proc.pid, "start_time": start, "argv": argv})
    return proc.pid


def _stop(paths: ClusterPaths, component: str, timeout: float = 15.0) -> bool:
    """Stop a component started by ``up`` (by pidfile). Returns True if a process was stopped."""
    pid = _running_pid(paths, component)
    stopped = False
    if pid is not None:
        stopped = True
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                _reap(pid)
                if _proc_start_time(pid) is None:
                    break
                time.sleep(0.05)
            else:
                continue
            break
        _reap(pid)
    paths.pidfile(component).unlink(missing_ok=True)
    return stopped


# --- kubeconfigs ---------------------------------------------------------------------------------
def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _kubeconfig(name: str, server: str, pki: Path, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority-data": _b64(pki / "ca.crt")}}],
        "users": [
            {
                "name": f"{name}-{user}",
                "user": {
                    "client-certificate-data": _b64(pki / f"{user}.crt"),
                    "client-key-data": _b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-{user}"}}],
        "current-context": name,
        "preferences": {},
    }


def _write_yaml(path: Path, data: Any, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(tmp, mode)
    tmp.replace(path)


def write_merged_kubeconfig(state_dir: str | os.PathLike | None = None) -> Path:
    """Merge the admin kubeconfigs of all clusters in ``state_dir`` (one context per cluster)."""
    sd = _state_dir(state_dir)
    merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for paths in _cluster_dirs(sd):
        if not paths.kubeconfig.exists():
            continue
        kc = yaml.safe_load(paths.kubeconfig.read_text())
        for key in ("clusters", "users", "contexts"):
            merged[key] += kc.get(key, [])
    merged["current-context"] = merged["contexts"][0]["name"] if merged["contexts"] else ""
    out = sd / "kubeconfig"
    _write_yaml(out, merged)
    return out


# --- components ----------------------------------------------------------------------------------
def _argv(component: str, bins: Mapping[str, Path], paths: ClusterPaths, ports: Mapping[str, int]) -> list[str]:
    pki = paths.pki
    ec, ep, api = ports["etcd_client"], ports["etcd_peer"], ports["apiserver"]
    if component == "etcd":
        return [
            str(bins["etcd"]),
            "--name=default",
            f"--data-dir={paths.etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{ec}",
            f"--advertise-client-urls=http://127.0.0.1:{ec}",
            f"--listen-peer-urls=http://127.0.0.1:{ep}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ep}",
            f"--initial-cluster=default=http://127.0.0.1:{ep}",
            f"--quota-backend-bytes={ETCD_QUOTA_BYTES}",
            "--max-request-bytes=10485760",
            "--snapshot-count=5000",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
    if component == "kube-apiserver":
        issuer = "https://kubernetes.default.svc.cluster.local"
        return [
            str(bins["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{ec}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={issuer}",
            f"--api-audiences={issuer}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
            f"--max-requests-inflight={MAX_REQUESTS_INFLIGHT}",
            f"--max-mutating-requests-inflight={MAX_MUTATING_REQUESTS_INFLIGHT}",
            "--profiling=false",
            "--event-ttl=15m",
            "--default-watch-cache-size=10",
        ]
    common = [
        "--leader-elect=false",
        "--profiling=false",
        "--secure-port=0",
    ]
    if component in CLIENT_QPS:
        common += [f"--kube-api-qps={CLIENT_QPS[component][0]}", f"--kube-api-burst={CLIENT_QPS[component][1]}"]
    if component == "kube-controller-manager":
        kc = paths.component_kubeconfig("controller-manager")
        return [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={kc}",
            *common,
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *(f"--concurrent-{k}-syncs={v}" for k, v in CONCURRENT_SYNCS.items()),
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
            f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_PERIOD}",
            "--enable-hostpath-provisioner",  # PVCs of the serving stack bind (kwok pods never mount them)
        ]
    if component == "kube-scheduler":
        # --config replaces the deprecated client flags: qps/burst and leader election are in the file
        return [str(bins["kube-scheduler"]), f"--config={paths.scheduler_config}", "--profiling=false",
                "--secure-port=0"]
    if component == "kwok":
        argv = [
            str(bins["kwok"]),
            f"--kubeconfig={paths.component_kubeconfig('kwok')}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.240.0.1",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--config={paths.kwok_config}",
        ]
        ours = sorted((Path(__file__).parent / "stages").glob("*.yaml"))
        for f in [u for u in kwok_stage_files() if u.name not in {o.name for o in ours}] + ours:
            argv.append(f"--config={f}")  # upstream stages + ours (stages/: load balancers; ours replace upstream's)
        return argv
    if component == "keda-sim":  # keda_sim.py: the HPAs KEDA would own (no KEDA operator runs here)
        return [sys.executable, "-m", "hybridml.local.keda_sim", f"--state-dir={paths.root.parent.parent}",
                f"--cluster={paths.name}"]
    raise ValueError(component)


# --- CRDs ----------------------------------------------------------------------------------------
def _sanitize_crd(crd: dict[str, Any]) -> dict[str, Any]:
    crd = dict(crd)
    crd.pop("status", None)
    meta = dict(crd.get("metadata") or {})
    for k in ("creationTimestamp", "resourceVersion", "uid", "generation", "managedFields"):
        meta.pop(k, None)
    annotations = dict(meta.get("annotations") or {})
    annotations.pop("cert-manager.io/inject-ca-from", None)
    meta["annotations"] = annotations
    crd["metadata"] = meta
    spec = dict(crd.get("spec") or {})
    conv = spec.get("conversion") or {}
    if conv.get("strategy") == "Webhook":
        # No conversion webhook runs locally: serve every version without conversion.
        spec["conversion"] = {"strategy": "None"}
    crd["spec"] = spec
    return crd


_CRD_PARSE_CACHE: dict[str, list[dict[str, Any]]] = {}
_CRD_PARSE_LOCK = threading.Lock()


def _parse_crds(raw: bytes, sha: str) -> list[dict[str, Any]]:
    """The sanitized CRDs of a manifest (parsed once per process for all clusters)."""
    with _CRD_PARSE_LOCK:
        if sha not in _CRD_PARSE_CACHE:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            _CRD_PARSE_CACHE[sha] = [
                _sanitize_crd(doc)
                for doc in yaml.load_all(raw, Loader=loader)
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
            ]
        return _CRD_PARSE_CACHE[sha]


def _crd_files(crd_dir: Path, patterns: Sequence[str] | None = None) -> list[Path]:
    files = sorted(p for p in crd_dir.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    if patterns is not None:
        files = [p for p in files if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    return files


def install_crds(
    api: KubeAPI,
    crd_dir: Path,
    cache_file: Path,
    timeout: float = 120.0,
    patterns: Sequence[str] | None = None,
) -> list[str]:
    """Apply the CustomResourceDefinitions found in ``crd_dir`` (files matching ``patterns``,
    default all); wait until all are Established.

    A CRD whose source file is unchanged since it was applied (sha256 recorded in an annotation)
    is skipped without parsing the file.
    """
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    existing = {
        m["metadata"]["name"]: (m["metadata"].get("annotations") or {}).get(CRD_HASH_ANNOTATION)
        for m in api.list_metadata(base)
    }
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    names: list[str] = []
    pending_crds: list[dict[str, Any]] = []
    for f in _crd_files(crd_dir, patterns):
        raw = f.read_bytes()
        sha = hashlib.sha256(raw).hexdigest()
        cached = cache.get(f.name)
        if cached and cached.get("sha256") == sha and all(existing.get(n) == sha for n in cached["names"]):
            names += cached["names"]
            continue
        file_names = []
        for crd in _parse_crds(raw, sha):
            crd["metadata"]["annotations"][CRD_HASH_ANNOTATION] = sha
            name = crd["metadata"]["name"]
            if name in existing:
                api.apply(f"{base}/{name}", crd, field_manager=FIELD_MANAGER)
            else:
                api.post(base, crd)
            file_names.append(name)
            pending_crds.append(crd)
        cache[f.name] = {"sha256": sha, "names": file_names}
        names += file_names
    _write_json(cache_file, cache)
    _wait_crds_established(api, pending_crds, timeout)
    return names


def _wait_crds_established(api: KubeAPI, crds: list[dict[str, Any]], timeout: float) -> None:
    """Wait until every CRD is served by discovery, which lists a CRD only once it is Established
    (much cheaper than polling the CRD objects, some of which are close to a megabyte)."""
    deadline = time.monotonic() + timeout
    pending = [
        (c["spec"]["group"], v["name"], c["spec"]["names"]["plural"], c["metadata"]["name"])
        for c in crds
        for v in c["spec"]["versions"]
        if v.get("served", True)
    ]
    while pending:
        discovery: dict[str, set[str]] = {}
        still = []
        for group, version, plural, name in pending:
            gv = f"/apis/{group}/{version}"
            if gv not in discovery:
                status_code, data = api.request_raw("GET", gv)
                discovery[gv] = (
                    {r["name"] for r in json.loads(data).get("resources", [])} if status_code == 200 else set()
                )
            if plural not in discovery[gv]:
                still.append((group, version, plural, name))
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not Established after {timeout:.0f}s: {sorted({p[3] for p in pending})}")
            time.sleep(0.2)


# --- nodes ---------------------------------------------------------------------------------------
def _node_object(n: NodeDef) -> dict[str, Any]:
    capacity = dict(DEFAULT_CAPACITY)
    capacity.update({k: str(v) for k, v in n.capacity.items()})
    labels = {
        "type": "kwok",
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
    }
    labels.update(n.labels)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": n.name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": labels,
        },
        "spec": {"taints": [parse_taint(t).to_k8s() for t in n.taints]},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }


_QTY_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
               "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": 10 ** 3, "M": 10 ** 6,
               "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18}


_QTY = re.compile(r"^([+-]?[0-9]*\.?[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


def quantity(v: Any) -> Decimal | None:
    """A Kubernetes resource quantity as a number ("63000m" == "63", "1179648Mi" == "1152Gi"); None if unparsable."""
    m = _QTY.match(str(v).strip())
    if not m:
        return None
    number, suffix = Decimal(m.group(1)), m.group(2)
    if not suffix:
        return number
    if suffix in _QTY_SUFFIX:
        return number * _QTY_SUFFIX[suffix]
    return number * Decimal(10) ** int(suffix[1:])


def _same_quantity(a: Any, b: Any) -> bool:
    qa, qb = quantity(a), quantity(b)
    return a == b if qa is None or qb is None else qa == qb


# Annotations set at creation only: kube-controller-manager's TTL controller owns
# node.alpha.kubernetes.io/ttl afterwards (it raises it on clusters of 100+ nodes).
_CREATE_ONLY_ANNOTATIONS = frozenset({"node.alpha.kubernetes.io/ttl"})


def _node_ops(obj: dict[str, Any], live: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
    """The requests that make a live node match ``obj``: (method, path, body)."""
    name = obj["metadata"]["name"]
    if live is None:
        return [("POST", "/api/v1/nodes", obj)]
    ops: list[tuple[str, str, Any]] = []
    meta_patch: dict[str, Any] = {}
    live_labels = live["metadata"].get("labels") or {}
    if any(live_labels.get(k) != v for k, v in obj["metadata"]["labels"].items()):
        meta_patch["labels"] = obj["metadata"]["labels"]
    live_ann = live["metadata"].get("annotations") or {}
    want_ann = {k: v for k, v in obj["metadata"]["annotations"].items() if k not in _CREATE_ONLY_ANNOTATIONS}
    if any(live_ann.get(k) != v for k, v in want_ann.items()):
        meta_patch["annotations"] = want_ann
    patch: dict[str, Any] = {}
    if meta_patch:
        patch["metadata"] = meta_patch
    # keep taints added by Kubernetes itself (node.kubernetes.io/*), replace ours
    live_taints = live.get("spec", {}).get("taints") or []
    system = [t for t in live_taints if t.get("key", "").startswith("node.kubernetes.io/")]
    want_taints = obj["spec"]["taints"]
    mine = [
        {k: t[k] for k in ("key", "value", "effect") if k in t}
        for t in live_taints
        if not t.get("key", "").startswith("node.kubernetes.io/")
    ]
    def canon(ts: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in t.items() if v != ""}, sort_keys=True) for t in ts)

    if canon(mine) != canon(want_taints):
        patch["spec"] = {"taints": system + want_taints}
    if patch:
        ops.append(("PATCH", f"/api/v1/nodes/{name}", patch))
    cap = obj["status"]["capacity"]
    live_cap = live.get("status", {}).get("capacity") or {}
    if any(k not in live_cap or not _same_quantity(live_cap[k], v) for k, v in cap.items()):
        ops.append(("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"capacity": cap, "allocatable": cap}}))
    return ops


def _run_parallel(api: KubeAPI, ops: Sequence[tuple[str, str, Any]], workers: int) -> None:
    """Send the requests over up to ``workers`` connections (each thread its own client)."""
    if not ops:
        return
    local = threading.local()
    clients: list[KubeAPI] = []
    lock = threading.Lock()

    def client() -> KubeAPI:
        c = getattr(local, "api", None)
        if c is None:
            c = local.api = KubeAPI(api.host, api.port, api.ca_file, api.cert_file, api.key_file, api.timeout)
            with lock:
                clients.append(c)
        return c

    def run(op: tuple[str, str, Any]) -> None:
        method, path, body = op
        c = client()
        if method == "POST":
            c.post(path, body)
        elif method == "DELETE":
            c.delete(path)
        else:
            c.merge_patch(path, body)

    try:
        n = max(1, min(workers, len(ops)))
        if n == 1:
            for op in ops:
                run(op)
        else:
            with ThreadPoolExecutor(max_workers=n) as pool:
                for f in [pool.submit(run, op) for op in ops]:
                    f.result()
    finally:
        for c in clients:
            c.close()


def sync_nodes(api: KubeAPI, nodes: Sequence[NodeDef], workers: int = NODE_SYNC_WORKERS) -> dict[str, int]:
    """Create/update the kwok nodes of a cluster and delete the managed ones no longer defined.

    One list of the managed nodes, then the creates, patches and deletes in parallel over
    ``workers`` connections (1,600 nodes: seconds, not minutes). Returns counts per action."""
    wanted = {n.name: _node_object(n) for n in nodes}
    res = api.get("/api/v1/nodes", params={"labelSelector": f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"})
    current = {m["metadata"]["name"]: m for m in (res or {}).get("items") or []}
    deletes = [("DELETE", f"/api/v1/nodes/{name}", None) for name in sorted(set(current) - set(wanted))]
    # a wanted node present without our label (created by hand?): adopt it, i.e. update it
    missing = [name for name in wanted if name not in current]
    if missing:
        present = {m["metadata"]["name"] for m in api.list_metadata("/api/v1/nodes")}
        for name in missing:
            if name in present and (live := api.get_or_none(f"/api/v1/nodes/{name}")) is not None:
                current[name] = live
    creates: list[tuple[str, str, Any]] = []
    updates: list[tuple[str, str, Any]] = []
    for name, obj in wanted.items():
        live = current.get(name)
        (creates if live is None else updates).extend(_node_ops(obj, live))
    _run_parallel(api, deletes + creates + updates, workers)
    return {"created": len(creates), "updated": len(updates), "deleted": len(deletes), "total": len(wanted)}


# --- public API ----------------------------------------------------------------------------------
@dataclass
class ClusterStatus:
    name: str
    server: str | None
    kubeconfig: str
    components: dict[str, int | None]  # component -> pid (None: not running)

    @property
    def running(self) -> bool:
        return all(pid is not None for pid in self.components.values())

    @property
    def stopped(self) -> bool:
        return all(pid is None for pid in self.components.values())


def _api_for(paths: ClusterPaths, port: int) -> KubeAPI:
    return KubeAPI("127.0.0.1", port, paths.pki / "ca.crt", paths.pki / "admin.crt", paths.pki / "admin.key")


def _wait_etcd(port: int, timeout: float, alive: Any) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if json.loads(r.read()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        if not alive():
            raise RuntimeError("etcd exited during startup")
        time.sleep(0.1)
    raise TimeoutError(f"etcd on port {port} not healthy after {timeout:.0f}s")


def _release_node_leases(api: KubeAPI) -> None:
    """Delete the node Leases before (re)starting kwok: those of a previous kwok would stay held by
    it until they expire (NODE_LEASE_SECONDS), and kwok leaves the pods of nodes whose Lease it does
    not hold Pending. Every node of these clusters is a kwok node."""
    api.request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", ok=(200, 404))


def _log_tail(paths: ClusterPaths, component: str, n: int = 30) -> str:
    try:
        return "\n".join(paths.logfile(component).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def up_cluster(
    cluster: Any,
    state_dir: str | os.PathLike | None = None,
    crd_dir: str | os.PathLike | None = None,
    *,
    crd_patterns: Sequence[str] | None = None,
    timeout: float = 180.0,
    log: Any = None,
) -> ClusterStatus:
    """Bring one cluster up (idempotent). See :func:`up`."""
    c = coerce_cluster(cluster)
    sd = _state_dir(state_dir)
    say = log or (lambda msg: None)
    bins = find_binaries()
    kwok_stage_files()  # fail early if the kwok stage configs are missing
    paths = ClusterPaths(sd / "clusters" / c.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = _load_state(paths)

    # ports: reuse the recorded ones (kubeconfigs stay valid) unless a stranger took one
    with _PORT_LOCK:
        ports: dict[str, int] = dict(state.get("ports") or {})
        running_any = any(_running_pid(paths, comp) for comp in COMPONENTS)
        if set(ports) != {"etcd_client", "etcd_peer", "apiserver"} or (
            not running_any and not all(_port_free(p) for p in ports.values())
        ):
            taken: set[int] = set()
            for other in _cluster_dirs(sd):
                taken |= set((_load_state(other).get("ports") or {}).values())
            ec, ep, api_port = _free_ports(3, taken)
            ports = {"etcd_client": ec, "etcd_peer": ep, "apiserver": api_port}
            for comp in COMPONENTS:  # ports changed: nothing running may keep the old ones
                _stop(paths, comp)
        state.update({"name": c.name, "ports": ports, "definition": asdict(c)})
        _write_json(paths.state_file, state)

    ensure_pki(paths.pki, c.name)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    _write_yaml(paths.kubeconfig, _kubeconfig(c.name, server, paths.pki, "admin"))
    for comp in ("controller-manager", "scheduler", "kwok"):
        _write_yaml(paths.component_kubeconfig(comp), _kubeconfig(c.name, server, paths.pki, comp))
    _write_yaml(paths.kwok_config, {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
                                    "options": dict(KWOK_OPTIONS)}, mode=0o644)
    _write_yaml(paths.scheduler_config, scheduler_configuration(paths.component_kubeconfig("scheduler")), mode=0o644)

    def ensure(component: str) -> bool:
        if _running_pid(paths, component) is not None:
            return False
        say(f"[{c.name}] starting {component}")
        _start(paths, component, _argv(component, bins, paths, ports), COMPONENT_ENV.get(component))
        return True

    def alive(component: str):
        return lambda: _running_pid(paths, component) is not None

    paths.etcd_data.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.etcd_data, 0o700)
    try:
        if ensure("etcd"):
            _wait_etcd(ports["etcd_client"], 60, alive("etcd"))
        api = _api_for(paths, ports["apiserver"])
        ensure("kube-apiserver")
        api.wait_healthy(timeout, alive=alive("kube-apiserver"))
        for comp in ("kube-controller-manager", "kube-scheduler"):
            ensure(comp)
        if _running_pid(paths, "kwok") is None:
            _release_node_leases(api)
        ensure("kwok")
        ensure("keda-sim")
    except (RuntimeError, TimeoutError) as e:
        tails = "\n".join(
            f"--- {comp} log tail ---\n{_log_tail(paths, comp)}" for comp in COMPONENTS if paths.logfile(comp).exists()
        )
        raise RuntimeError(f"cluster {c.name}: {e}\n{tails}") from e

    if crd_dir is not None and Path(crd_dir).is_dir():
        t0 = time.monotonic()
        names = install_crds(api, Path(crd_dir), paths.crd_cache, timeout=timeout, patterns=crd_patterns)
        say(f"[{c.name}] {len(names)} CRDs in place ({time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    counts = sync_nodes(api, c.nodes)
    say(f"[{c.name}] {counts['total']} kwok nodes in place ({counts['created']} created, {counts['updated']} "
        f"updated, {counts['deleted']} deleted; {time.monotonic() - t0:.1f}s)")
    t0 = time.monotonic()
    size = warm_openapi(api)
    say(f"[{c.name}] OpenAPI schema built ({size / 1e6:.1f} MB; {time.monotonic() - t0:.1f}s)")
    api.close()

    # components that die right after starting (bad flag, port clash) are reported now
    time.sleep(0.2)
    dead = [comp for comp in COMPONENTS if _running_pid(paths, comp) is None]
    if dead:
        tails = "\n".join(f"--- {comp} log tail ---\n{_log_tail(paths, comp)}" for comp in dead)
        raise RuntimeError(f"cluster {c.name}: components exited: {', '.join(dead)}\n{tails}")
    return _status_of(paths)


OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def warm_openapi(api: KubeAPI, timeout: float = 600.0) -> int:
    """Have the API server build its OpenAPI v2 document now (returns its size in bytes).

    The server builds it lazily on the first request after a start or a CRD change: with the serving
    stack's CRDs that is megabytes of schema and tens of CPU-seconds. Every Pulumi Kubernetes provider
    fetches it when it starts (timeout 32 s), so a fleet rollout that starts seven site stacks on
    seven freshly started control planes at once timed out on it ("configured Kubernetes cluster is
    unreachable: unable to load schema information"); built here, while nothing else competes for the
    CPU, every later fetch is served from the server's cache in milliseconds."""
    api.close()
    previous, api.timeout = api.timeout, timeout
    try:
        status_code, body = api.request_raw("GET", "/openapi/v2", accept=OPENAPI_V2_PROTOBUF)
    finally:
        api.close()
        api.timeout = previous
    if status_code != 200:
        raise RuntimeError(f"{api.server}/openapi/v2: HTTP {status_code}: {body[:200]!r}")
    return len(body)


def up(
    clusters: Iterable[Any],
    state_dir: str | os.PathLike | None = None,
    crd_dir: str | os.PathLike | None = DEFAULT_CRD_DIR,
    *,
    crd_patterns: Sequence[str] | None = None,
    timeout: float = 180.0,
    log: Any = None,
) -> dict[str, ClusterStatus]:
    """Start (or reconcile) one local control plane per cluster definition.

    ``clusters``: ClusterDef objects, mappings, or objects with ``name`` and ``nodes``; a node has
    ``name``, ``labels`` (dict), ``taints`` (``key=value:Effect`` strings or key/value/effect
    mappings) and ``capacity`` (cpu, memory, pods, ``nvidia.com/gpu``...).
    ``crd_dir``: directory of CRD manifests to install (None: none); ``crd_patterns``: only the
    files whose names match one of these globs (e.g. ``["kserve.*", "lws.*"]``; CRDs take most of
    a cold start). ``log``: callable receiving progress lines. Returns status per cluster; also
    writes ``<state_dir>/kubeconfig`` with one context per cluster.
    """
    defs = [coerce_cluster(c) for c in clusters]
    names = [d.name for d in defs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate cluster names: {names}")
    # Clusters come up concurrently: each apiserver spends most of its start-up (CRDs above all)
    # on its own, so they overlap well even on two cores.
    with ThreadPoolExecutor(max_workers=max(1, min(len(defs), MAX_PARALLEL_CLUSTERS))) as pool:
        futures = {
            d.name: pool.submit(
                up_cluster, d, state_dir, crd_dir, crd_patterns=crd_patterns, timeout=timeout, log=log
            )
            for d in defs
        }
        result = {name: f.result() for name, f in futures.items()}
    write_merged_kubeconfig(state_dir)
    return result


def _status_of(paths: ClusterPaths) -> ClusterStatus:
    state = _load_state(paths)
    port = (state.get("ports") or {}).get("apiserver")
    return ClusterStatus(
        name=paths.name,
        server=f"https://127.0.0.1:{port}" if port else None,
        kubeconfig=str(paths.kubeconfig),
        components={comp: _running_pid(paths, comp) for comp in COMPONENTS},
    )


def status(state_dir: str | os.PathLike | None = None) -> dict[str, ClusterStatus]:
    """Which components of which clusters are running (from the pidfiles)."""
    return {p.name: _status_of(p) for p in _cluster_dirs(_state_dir(state_dir))}


def down(state_dir: str | os.PathLike | None = None, clusters: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Stop the processes that ``up`` started (only those recorded in pidfiles).

    Data (etcd, certificates, kubeconfigs) is kept, so a later ``up`` resumes the same clusters.
    Returns the stopped components per cluster.
    """
    wanted = set(clusters) if clusters is not None else None
    stopped: dict[str, list[str]] = {}
    for paths in _cluster_dirs(_state_dir(state_dir)):
        if wanted is not None and paths.name not in wanted:
            continue
        stopped[paths.name] = [comp for comp in reversed(COMPONENTS) if _stop(paths, comp)]
    return stopped


def component_cpu_seconds(state_dir: str | os.PathLike | None = None) -> dict[str, float]:
    """CPU seconds (user + system) the running components have used so far, per component, summed over the
    clusters (for measuring where a rollout's CPU goes: take it before and after)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for paths in _cluster_dirs(_state_dir(state_dir)):
        for comp in COMPONENTS:
            pid = _running_pid(paths, comp)
            if pid is None:
                continue
            fields = _proc_stat(pid)
            if fields is not None:   # utime, stime
                out[comp] = out.get(comp, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def api_client(name: str, state_dir: str | os.PathLike | None = None) -> KubeAPI:
    """An admin client (stdlib) for a cluster brought up by :func:`up`."""
    paths = ClusterPaths(_state_dir(state_dir) / "clusters" / name)
    port = (_load_state(paths).get("ports") or {}).get("apiserver")
    if not port:
        raise KeyError(f"no local cluster {name!r} in {paths.root.parent}")
    return _api_for(paths, int(port))


__all__ = [
    "ClusterDef",
    "ClusterStatus",
    "KubeAPIError",
    "NodeDef",
    "Taint",
    "api_client",
    "down",
    "install_crds",
    "status",
    "sync_nodes",
    "up",
    "up_cluster",
    "write_merged_kubeconfig",
]
