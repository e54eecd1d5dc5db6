"""Read, from a live cluster, what hybridml/ops/prerequisites.py asks about: the groups and kinds its API server serves
(discovery), the CRDs of the required kinds (apiextensions: Established, served versions), the named objects, and the
default StorageClasses. A bounded number of GETs: one per required group version and CRD, one per named object.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hybridml.ops.observe import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, _api_client, _short
from hybridml.ops.prerequisites import DEFAULT_CLASS_ANNOTATION, ClusterSnapshot, Requirement

# Where the kinds a rendered object may name live: (API prefix, plural, namespaced).
OBJECT_APIS: dict[str, tuple[str, str, bool]] = {
    "Secret": ("/api/v1", "secrets", True), "ConfigMap": ("/api/v1", "configmaps", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True), "Service": ("/api/v1", "services", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True), "Namespace": ("/api/v1", "namespaces", False),
    "StorageClass": ("/apis/storage.k8s.io/v1", "storageclasses", False),
    "PriorityClass": ("/apis/scheduling.k8s.io/v1", "priorityclasses", False),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterIssuer": ("/apis/cert-manager.io/v1", "clusterissuers", False),
    "Issuer": ("/apis/cert-manager.io/v1", "issuers", True),
    "GatewayClass": ("/apis/gateway.networking.k8s.io/v1", "gatewayclasses", False),
    "IPAddressPool": ("/apis/metallb.io/v1beta1", "ipaddresspools", True),
}


class ClusterUnreachable(Exception):
    """The cluster could not be read (bad context, connection, authorization): its message says which."""


def _get(api, path: str) -> dict[str, Any] | None:
    """GET `path` as JSON; None on 404."""
    from kubernetes.client.exceptions import ApiException

    try:
        resp = api.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False,
                            _return_http_data_only=True, _request_timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(resp.data)


def snapshot(api, reqs: Iterable[Requirement]) -> ClusterSnapshot:
    """What `api`'s cluster holds of `reqs`."""
    snap = ClusterSnapshot()
    reqs = list(reqs)
    plurals: dict[tuple[str, str], str] = {}
    for group, version in sorted({(q.group, q.version) for q in reqs if q.what == "crd"}):
        body = _get(api, f"/apis/{group}/{version}") or {}
        for res in body.get("resources") or []:
            if "/" not in res["name"]:
                snap.discovered.add((f"{group}/{version}", res["kind"]))
                plurals[(group, res["kind"])] = res["name"]
        if not body:   # the version is not served: find the kind's plural in another version of the group
            for v in (_get(api, f"/apis/{group}") or {}).get("versions") or []:
                for res in (_get(api, f"/apis/{v['groupVersion']}") or {}).get("resources") or []:
                    if "/" not in res["name"]:
                        plurals.setdefault((group, res["kind"]), res["name"])
    for q in reqs:
        if q.what != "crd" or (q.group, q.kind) not in plurals:
            continue
        crd = _get(api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plurals[(q.group, q.kind)]}.{q.group}")
        if crd is not None:
            served = frozenset(v["name"] for v in crd["spec"]["versions"] if v.get("served"))
            established = any(c.get("type") == "Established" and c.get("status") == "True"
                              for c in (crd.get("status") or {}).get("conditions") or [])
            snap.crds[(q.group, q.kind)] = (crd["metadata"]["name"], served, established)
    for q in reqs:
        if q.what == "default-storage-class":
            for sc in (_get(api, "/apis/storage.k8s.io/v1/storageclasses") or {}).get("items") or []:
                if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                    snap.default_storage_classes.append(sc["metadata"]["name"])
        elif q.what == "address-pool":
            for pool in (_get(api, "/apis/metallb.io/v1beta1/ipaddresspools") or {}).get("items") or []:
                snap.objects.add((q.kind, pool["metadata"].get("namespace"), pool["metadata"]["name"]))
        elif q.what == "object" and q.kind in OBJECT_APIS:
            prefix, plural, namespaced = OBJECT_APIS[q.kind]
            path = f"{prefix}/namespaces/{q.namespace}/{plural}/{q.name}" if namespaced else f"{prefix}/{plural}/{q.name}"
            if _get(api, path) is not None:
                snap.objects.add((q.kind, q.namespace, q.name))
    return snap


def read_snapshot(kubeconfig: Path, context: str | None, reqs: Iterable[Requirement]) -> ClusterSnapshot:
    """`snapshot` of the cluster of `context` in `kubeconfig`; ClusterUnreachable when it cannot be read."""
    try:
        api = _api_client(kubeconfig, context)   # type: ignore[arg-type]  # None: the current context
    except Exception as exc:   # noqa: BLE001 - a missing file, context or credential: said in one line
        raise ClusterUnreachable(f"kubeconfig {kubeconfig}: context {context!r}: {_short(exc)}") from None
    try:
        return snapshot(api, reqs)
    except Exception as exc:   # noqa: BLE001 - connection refused, TLS, 403: said in one line
        raise ClusterUnreachable(f"context {context!r}: {_short(exc)}") from None
    finally:
        api.close()
