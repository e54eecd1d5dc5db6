"""Local Kubernetes control planes (etcd, kube-apiserver, controller-manager, scheduler, kwok)
built by ``scripts/toolchain.sh``: one per cluster, with kwok fake nodes.

    from hybridml.local import up, down, status
    up([{"name": "gpu", "nodes": [{"name": "gpu-0", "labels": {...},
                                   "taints": ["nvidia.com/gpu=present:NoSchedule"],
                                   "capacity": {"cpu": "192", "memory": "2Ti", "nvidia.com/gpu": "8"}}]}])
"""

from .controlplane import (
    DEFAULT_CRD_DIR,
    DEFAULT_STATE_DIR,
    ClusterDef,
    ClusterStatus,
    NodeDef,
    Taint,
    api_client,
    down,
    install_crds,
    status,
    state_dir_for,
    sync_nodes,
    up,
    up_cluster,
    write_merged_kubeconfig,
)
from .kubeapi import KubeAPI, KubeAPIError
from .toolchain import ToolchainMissing, find_binaries

__all__ = [
    "DEFAULT_CRD_DIR",
    "DEFAULT_STATE_DIR",
    "ClusterDef",
    "ClusterStatus",
    "KubeAPI",
    "KubeAPIError",
    "NodeDef",
    "Taint",
    "ToolchainMissing",
    "api_client",
    "down",
    "find_binaries",
    "install_crds",
    "state_dir_for",
    "status",
    "sync_nodes",
    "up",
    "up_cluster",
    "write_merged_kubeconfig",
]
