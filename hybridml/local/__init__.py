"""The local room: Kubernetes control planes on loopback, for the `local` stack and the `sim` fleet.

One control plane per cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok,
Go binaries built by ``scripts/toolchain.sh``), with kwok fake nodes, so the serving stack is placed
and "runs" exactly as the real fleet would, with no container and no GPU. What lives here:

- controlplane.py  bring clusters up (idempotent), their status, down; an admin API client
- paths.py         the state dir layout (``.local``, ``.local/envs/<env>``) and kubeconfigs
- processes.py     supervised processes: pidfiles, start/stop, loopback ports
- components.py    each component's flags and configuration, and the sizing of the fleet
- pki.py           a CA and the certificates per cluster (openssl)
- crds.py          the serving stack's CRDs installed and Established
- nodes.py         cluster/node definitions, their kwok Node objects (infra.kube), node sync
- keda_sim.py      a stand-in for KEDA's HPAs, run as one more process per cluster
- kserve.py        the real KServe controller manager's set-up (ConfigMap, CRDs, certificate, webhooks by URL)
- fromspec.py, sites.py   spec + plan -> the clusters of each site, brought up with a StorageClass
- kubeapi.py       a minimal stdlib client; toolchain.py finds the Go-built binaries

It may import infra, policies, clusters and datacenter; never hybridml.cli, hybridml.ops or
hybridml.program (those call in here). Benchmark metric readers are in tools/sim_metrics.py.

    from hybridml.local import up, down, status
    up([{"name": "gpu", "nodes": [{"name": "gpu-0", "labels": {...},
                                   "taints": ["nvidia.com/gpu=present:NoSchedule"],
                                   "capacity": {"cpu": "192", "memory": "2Ti", "nvidia.com/gpu": "8"}}]}])
"""

from .controlplane import ClusterStatus, api_client, down, status, up
from .nodes import ClusterDef, NodeDef
from .paths import DEFAULT_CRD_DIR, DEFAULT_STATE_DIR, state_dir_for

__all__ = [
    "DEFAULT_CRD_DIR",
    "DEFAULT_STATE_DIR",
    "ClusterDef",
    "ClusterStatus",
    "NodeDef",
    "api_client",
    "down",
    "state_dir_for",
    "status",
    "up",
]
