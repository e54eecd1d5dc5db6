"""The kwok nodes of a local cluster: their definitions, the Node objects they become, and the sync
that makes a running cluster's nodes match them.

A definition (ClusterDef, NodeDef) comes from fromspec.py, a YAML file (``python -m hybridml.local
up``) or a test, as dataclasses, mappings or any objects with the same fields. Each node becomes the
Node object of `infra.kube.kwok_node` (the shape every kwok builder of the project shares) plus this
room's managed-by label, which is how `sync_nodes` knows the nodes it may delete. The sync sends only
the requests that change something: `up` on a warm fleet of 1,600 nodes patches none.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from infra import labels as L
from infra.kube import KWOK_NODE_ANNOTATION, Taint, kwok_node, parse_taint, same_quantity

from .kubeapi import KubeAPI

MANAGED_BY_LABEL = L.LOCAL_MANAGED_BY
MANAGED_BY_VALUE = "hybridml-local"
DEFAULT_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}
NODE_SYNC_WORKERS = 8   # connections creating/patching nodes at once (sizing notes: components.py)
# Annotations set at creation only: kube-controller-manager's TTL controller owns
# node.alpha.kubernetes.io/ttl afterwards (it raises it on clusters of 100+ nodes).
_CREATE_ONLY_ANNOTATIONS = frozenset({"node.alpha.kubernetes.io/ttl"})
_SYSTEM_TAINT_PREFIX = "node.kubernetes.io/"   # taints Kubernetes itself sets (unreachable, not-ready, ...)


# --- definitions ---------------------------------------------------------------------------------
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


def coerce_node(n: Any) -> NodeDef:
    """A NodeDef from a NodeDef, a mapping or any object with name, labels, taints and capacity."""
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


# --- Node objects --------------------------------------------------------------------------------
def node_object(n: NodeDef) -> dict[str, Any]:
    """The Node object of a definition: its labels, taints and capacity (over DEFAULT_CAPACITY), as
    allocatable too, and the managed-by label."""
    capacity = dict(DEFAULT_CAPACITY)
    capacity.update({k: str(v) for k, v in n.capacity.items()})
    return kwok_node(n.name, labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE, **n.labels}, taints=n.taints,
                     capacity=capacity)


def node_ops(obj: dict[str, Any], live: dict[str, Any] | None) -> list[tuple[str, str, Any]]:
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
    system = [t for t in live_taints if t.get("key", "").startswith(_SYSTEM_TAINT_PREFIX)]
    want_taints = obj["spec"]["taints"]
    mine = [
        {k: t[k] for k in ("key", "value", "effect") if k in t}
        for t in live_taints
        if not t.get("key", "").startswith(_SYSTEM_TAINT_PREFIX)
    ]

    def canon(ts: list[dict[str, Any]]) -> list[str]:
        return sorted(json.dumps({k: v for k, v in t.items() if v != ""}, sort_keys=True) for t in ts)

    if canon(mine) != canon(want_taints):
        patch["spec"] = {"taints": system + want_taints}
    if patch:
        ops.append(("PATCH", f"/api/v1/nodes/{name}", patch))
    cap = obj["status"]["capacity"]
    live_cap = live.get("status", {}).get("capacity") or {}
    if any(k not in live_cap or not same_quantity(live_cap[k], v) for k, v in cap.items()):
        ops.append(("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"capacity": cap, "allocatable": cap}}))
    return ops


# --- sync ----------------------------------------------------------------------------------------
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
    wanted = {n.name: node_object(n) for n in nodes}
    res = api.get("/api/v1/nodes", params={"labelSelector": f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"})
    current = {m["metadata"]["name"]: m for m in (res or {}).get("items") or []}
    deletes = [("DELETE", f"/api/v1/nodes/{name}", None) for name in sorted(set(current) - set(wanted))]
    # a wanted node present without our label (created by hand?): adopt it, i.e. update it -- unless a real
    # kubelet registered it (no kwok annotation: a datacenter test host's real node, tools/testhosts/realnode.py)
    missing = [name for name in wanted if name not in current]
    if missing:
        present = {m["metadata"]["name"] for m in api.list_metadata("/api/v1/nodes")}
        for name in missing:
            if name in present and (live := api.get_or_none(f"/api/v1/nodes/{name}")) is not None:
                if KWOK_NODE_ANNOTATION not in (live["metadata"].get("annotations") or {}):
                    del wanted[name]
                    continue
                current[name] = live
    creates: list[tuple[str, str, Any]] = []
    updates: list[tuple[str, str, Any]] = []
    for name, obj in wanted.items():
        live = current.get(name)
        (creates if live is None else updates).extend(node_ops(obj, live))
    _run_parallel(api, deletes + creates + updates, workers)
    return {"created": len(creates), "updated": len(updates), "deleted": len(deletes), "total": len(wanted)}


def release_node_leases(api: KubeAPI) -> None:
    """Delete the node Leases before (re)starting kwok: those of a previous kwok would stay held by
    it until they expire (components.NODE_LEASE_SECONDS), and kwok leaves the pods of nodes whose
    Lease it does not hold Pending. Every node of these clusters is a kwok node."""
    api.request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", ok=(200, 404))


__all__ = ["ClusterDef", "MANAGED_BY_LABEL", "MANAGED_BY_VALUE", "NodeDef", "coerce_cluster", "coerce_node",
           "node_object", "node_ops", "release_node_leases", "sync_nodes"]
