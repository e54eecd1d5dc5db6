"""What runs in a local control plane, and with which flags: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok, the KubeRay operator, the KServe controller manager (Go binaries of
scripts/toolchain.sh; kserve.py sets up what the latter reads) and keda-sim,
the stand-in for KEDA's HPAs (keda_sim.py, started as ``python -m hybridml.local.keda_sim`` with the
repository on its PYTHONPATH: COMPONENT_ENV).

The flags, the component configuration files (kubeconfigs per identity, kwok.yaml, scheduler.yaml)
and the sizing that lets one machine carry the whole simulated fleet live here together, so a
change of one is made knowing the others (the sizing notes below).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra import labels as L
from infra.kube import KWOK_NODE_ANNOTATION

from . import kserve
from .paths import REPO_ROOT, ClusterPaths, client_kubeconfig, write_yaml
from .toolchain import kwok_stage_files

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "keda-sim", "kuberay-operator",
              kserve.COMPONENT)
# Started only where its CRDs are installed (controlplane.up_cluster): KubeRay exits two minutes after its start when
# one of the kinds it watches (RayCluster, RayJob, RayService) is not served.
CRD_COMPONENTS = {"kuberay-operator": ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"),
                  kserve.COMPONENT: kserve.SERVED_CRDS}
# What such a component needs in the cluster before it starts and after (kserve.setup: its ConfigMap, certificate
# and webhook registrations), called as setup(api, paths, start, running).
COMPONENT_SETUP = {kserve.COMPONENT: kserve.setup}
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
STAGES_DIR = Path(__file__).parent / "stages"   # our kwok Stages (they replace upstream's of the same name)
# the client identities with a kubeconfig of their own (certificates: pki.CLIENTS)
COMPONENT_IDENTITIES = ("controller-manager", "scheduler", "kwok", "kuberay-operator", kserve.COMPONENT)

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
#   `up` deletes the node Leases before it (re)starts kwok (see nodes.release_node_leases);
# * nodes are created and updated by parallel requests (nodes.NODE_SYNC_WORKERS connections), and
#   the clusters come up in parallel (controlplane.MAX_PARALLEL_CLUSTERS).
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
# The KubeRay operator's API client (its defaults: 100 qps, burst 200): a few RayClusters per control plane.
KUBERAY_QPS, KUBERAY_BURST = 20, 40


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
                "resources": [{"name": L.GPU_RESOURCE, "weight": 10}, {"name": "cpu", "weight": 1},
                              {"name": "memory", "weight": 1}]}}}],
        }],
    }


def kwok_configuration() -> dict[str, Any]:
    return {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration", "options": dict(KWOK_OPTIONS)}


def write_component_files(paths: ClusterPaths, cluster: str, server: str) -> None:
    """The files the components read: a kubeconfig per identity, kwok's and the scheduler's configuration."""
    for identity in COMPONENT_IDENTITIES:
        write_yaml(paths.component_kubeconfig(identity), client_kubeconfig(cluster, server, paths.pki, identity))
    write_yaml(paths.kwok_config, kwok_configuration(), mode=0o644)
    write_yaml(paths.scheduler_config, scheduler_configuration(paths.component_kubeconfig("scheduler")), mode=0o644)


def component_argv(component: str, bins: Mapping[str, Path], paths: ClusterPaths,
                   ports: Mapping[str, int]) -> list[str]:
    """The command line of one component of the cluster at ``paths`` (``bins``: toolchain.find_binaries)."""
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
            # Node + bootstrap tokens: real kubelets (datacenter test hosts) join by the TLS bootstrap
            "--authorization-mode=Node,RBAC",
            "--enable-bootstrap-token-auth",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",  # as kubeadm's: no DNS for node names here
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
            # kubeadm's token discovery: cluster-info signed per bootstrap token, expired tokens removed
            "--controllers=*,bootstrapsigner,tokencleaner",
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
        ours = sorted(STAGES_DIR.glob("*.yaml"))
        for f in [u for u in kwok_stage_files() if u.name not in {o.name for o in ours}] + ours:
            argv.append(f"--config={f}")  # upstream stages + ours (stages/: load balancers; ours replace upstream's)
        return argv
    if component == "kuberay-operator":
        # KubeRay (scripts/toolchain.sh builds it from its Go module): RayClusters into head and worker pods, which
        # kwok runs; RayJobs into their RayCluster and submitter. No webhooks (ENABLE_WEBHOOKS unset), no leader
        # election, no metrics or probe listener (several control planes share the loopback).
        return [str(bins["ray-operator"]), f"--kubeconfig={paths.component_kubeconfig('kuberay-operator')}",
                "--enable-leader-election=false", "--metrics-addr=0", "--health-probe-bind-address=0",
                "--log-stdout-encoder=console", f"--qps={KUBERAY_QPS}", f"--burst={KUBERAY_BURST}"]
    if component == kserve.COMPONENT:
        return kserve.argv(bins[kserve.BINARY], paths)
    if component == "keda-sim":  # keda_sim.py: the HPAs KEDA would own (no KEDA operator runs here)
        return [sys.executable, "-m", "hybridml.local.keda_sim", f"--state-dir={paths.root.parent.parent}",
                f"--cluster={paths.name}"]
    raise ValueError(component)


def component_env(component: str, paths: ClusterPaths) -> dict[str, str] | None:
    """What a component's process gets on top of this process's environment."""
    if component == kserve.COMPONENT:
        return kserve.process_env(paths)
    return COMPONENT_ENV.get(component)


__all__ = ["CLIENT_QPS", "COMPONENTS", "COMPONENT_ENV", "COMPONENT_SETUP", "CRD_COMPONENTS", "KWOK_OPTIONS",
           "NODE_LEASE_SECONDS", "component_argv", "component_env", "kwok_configuration", "scheduler_configuration",
           "write_component_files"]
