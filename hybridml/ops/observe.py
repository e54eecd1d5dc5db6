"""Read the live clusters of an environment: nodes, pods and the serving workloads, reduced to plain data.

The only module of `hybridml status` that talks to Kubernetes (the official `kubernetes` client). Every
list is paginated (`limit`/`continue`) and read as raw JSON (the client's model deserialisation is
several times slower on thousands of pods); clusters are read concurrently, one thread each. What comes
back is plain dataclasses (`FleetObservation`), which `hybridml.status` compares with the plan.

A cluster that cannot be read (no such context, connection refused, TLS or auth error, timeout) is a
`ClusterObservation` with `reachable=False` and the error, never an exception.

The reducers (`node_from_dict`, `pod_from_dict`, `workload_from_dict`, `parse_quantity`) are pure, so
tests build observations from plain dicts without a cluster.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra import labels as L
from infra.kube import quantity_value

PAGE_SIZE = 500
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0

# Optional APIs: (kind, group, version, plural). Absent from a cluster (404) means "not installed".
LWS_API = ("LeaderWorkerSet", "leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
ISVC_API = ("InferenceService", "serving.kserve.io", "v1beta1", "inferenceservices")
RAY_APIS = (("RayJob", "ray.io", "v1", "rayjobs"), ("RayCluster", "ray.io", "v1", "rayclusters"))


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class NodeObs:
    name: str
    labels: dict[str, str]
    taints: tuple[tuple[str, str, str], ...]   # (key, value, effect)
    cpu: float                                  # allocatable cores
    memory_gib: float                           # allocatable memory
    gpus: int                                   # allocatable nvidia.com/gpu
    ready: bool = True
    unschedulable: bool = False

    @property
    def simulated(self) -> bool:
        return self.labels.get(L.SIMULATED) == "true"


@dataclass(frozen=True)
class PodObs:
    namespace: str
    name: str
    labels: dict[str, str]
    node: str | None
    phase: str                                  # Pending | Running | Succeeded | Failed | Unknown
    ready: bool
    cpu: float                                  # requested cores (containers)
    memory_gib: float
    gpus: int                                   # requested nvidia.com/gpu (limits, else requests)
    terminating: bool = False

    @property
    def active(self) -> bool:
        """Holds (or waits for) resources: neither finished nor being deleted."""
        return self.phase not in ("Succeeded", "Failed") and not self.terminating


@dataclass(frozen=True)
class WorkloadObs:
    kind: str                                   # Deployment | StatefulSet | LeaderWorkerSet | InferenceService
    namespace: str
    name: str
    labels: dict[str, str]
    replicas: int | None                        # spec.replicas (InferenceService: predictor minReplicas)
    ready_replicas: int | None                  # from status; None when no controller wrote a status
    reconciled: bool                            # a controller has written a status for it


@dataclass(frozen=True)
class RayObs:
    """A RayJob or RayCluster (batch pipelines), as its operator reports it."""

    kind: str                                   # RayJob | RayCluster
    namespace: str
    name: str
    labels: dict[str, str]
    state: str                                  # RayJob: status.jobDeploymentStatus; RayCluster: status.state
    job_status: str = ""                        # RayJob: status.jobStatus (Ray's own: PENDING, RUNNING, SUCCEEDED...)
    cluster: str = ""                           # RayJob: the RayCluster it made; RayCluster: itself
    ready_workers: int | None = None            # RayCluster: status.readyWorkerReplicas
    desired_workers: int | None = None
    message: str = ""                           # status.reason / message
    reconciled: bool = False                    # the operator has written a status


@dataclass
class ClusterObservation:
    site: str
    context: str
    reachable: bool
    error: str = ""
    nodes: list[NodeObs] = field(default_factory=list)
    pods: list[PodObs] = field(default_factory=list)
    workloads: list[WorkloadObs] = field(default_factory=list)
    apis: list[str] = field(default_factory=list)   # optional kinds the cluster serves (LeaderWorkerSet, ...)
    ray: list[RayObs] = field(default_factory=list)  # RayJobs and RayClusters (batch pipelines)
    fetch_seconds: float = 0.0


@dataclass
class FleetObservation:
    clusters: dict[str, ClusterObservation]         # site -> what its cluster holds
    fetch_seconds: float = 0.0


Observer = Callable[[Path, Mapping[str, str]], FleetObservation]
"""(kubeconfig, site -> context) -> observation: what `hybridml status` calls; tests inject their own."""


# --------------------------------------------------------------------------- pure reducers


def node_from_dict(d: Mapping[str, Any]) -> NodeObs:
    meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    taints = tuple((t.get("key", ""), t.get("value") or "", t.get("effect", "")) for t in spec.get("taints") or [])
    return NodeObs(name=meta.get("name", ""), labels=dict(meta.get("labels") or {}), taints=taints,
                   cpu=quantity_value(alloc.get("cpu")), memory_gib=quantity_value(alloc.get("memory")) / 2**30,
                   gpus=int(quantity_value(alloc.get(L.GPU_RESOURCE))), ready=ready,
                   unschedulable=bool(spec.get("unschedulable")))


def _requests(containers: list[dict]) -> tuple[float, float, int]:
    cpu = mem = 0.0
    gpus = 0
    for c in containers or []:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        cpu += quantity_value(req.get("cpu", lim.get("cpu")))
        mem += quantity_value(req.get("memory", lim.get("memory")))
        gpus += int(quantity_value(lim.get(L.GPU_RESOURCE, req.get(L.GPU_RESOURCE))))
    return cpu, mem / 2**30, gpus


def pod_from_dict(d: Mapping[str, Any]) -> PodObs:
    meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    cpu, mem, gpus = _requests(spec.get("containers") or [])
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodObs(namespace=meta.get("namespace", ""), name=meta.get("name", ""), labels=dict(meta.get("labels") or {}),
                  node=spec.get("nodeName") or None, phase=status.get("phase") or "Unknown", ready=ready,
                  cpu=cpu, memory_gib=mem, gpus=gpus, terminating=bool(meta.get("deletionTimestamp")))


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def workload_from_dict(kind: str, d: Mapping[str, Any]) -> WorkloadObs:
    meta, spec, status = d.get("metadata") or {}, d.get("spec") or {}, d.get("status") or {}
    replicas: int | None
    if kind == "InferenceService":
        pred = spec.get("predictor") or {}
        replicas = pred.get("minReplicas", 1)
        reconciled = bool(status.get("conditions"))
        ready = None if not reconciled else (replicas if _condition_true(status, "Ready") else 0)
    else:
        replicas = spec.get("replicas", 1)
        if kind in ("Deployment", "StatefulSet"):
            reconciled = status.get("observedGeneration") is not None
        else:   # LeaderWorkerSet: groups
            reconciled = bool(status)
        ready = int(status.get("readyReplicas") or 0) if reconciled else None
    return WorkloadObs(kind=kind, namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                       labels=dict(meta.get("labels") or {}), replicas=replicas, ready_replicas=ready,
                       reconciled=reconciled)


def ray_from_dict(kind: str, d: Mapping[str, Any]) -> RayObs:
    meta, status = d.get("metadata") or {}, d.get("status") or {}
    if kind == "RayJob":
        state, cluster = status.get("jobDeploymentStatus") or "", status.get("rayClusterName") or ""
        ready = desired = None
    else:
        state, cluster = status.get("state") or "", meta.get("name", "")
        ready = status.get("readyWorkerReplicas", status.get("availableWorkerReplicas"))
        desired = status.get("desiredWorkerReplicas")
    message = " ".join(str(status[k]) for k in ("reason", "message") if status.get(k))
    return RayObs(kind=kind, namespace=meta.get("namespace", ""), name=meta.get("name", ""),
                  labels=dict(meta.get("labels") or {}), state=state, job_status=status.get("jobStatus") or "",
                  cluster=cluster, ready_workers=None if ready is None else int(ready),
                  desired_workers=None if desired is None else int(desired), message=message[:300],
                  reconciled=bool(status))


# --------------------------------------------------------------------------- reading clusters


def _pages(fetch: Callable[..., Any]) -> Iterator[dict]:
    """Every item of a paginated list call made with `_preload_content=False` (raw JSON)."""
    token = None
    while True:
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "_preload_content": False,
                                  "_request_timeout": (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)}
        if token:
            kwargs["_continue"] = token
        body = json.loads(fetch(**kwargs).data)
        yield from body.get("items") or []
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return


def _api_client(kubeconfig: Path, context: str):
    from kubernetes import client, config
    from urllib3.util.retry import Retry

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), context=context, client_configuration=cfg,
                            persist_config=False)
    cfg.retries = Retry(total=1, connect=1, read=0, backoff_factor=0.2)   # an unreachable cluster fails fast
    return client.ApiClient(cfg)


def observe_cluster(kubeconfig: Path, site: str, context: str) -> ClusterObservation:
    """Everything `hybridml status` needs from one cluster; unreachable -> reachable=False with the error."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    t0 = time.monotonic()
    obs = ClusterObservation(site=site, context=context, reachable=False)
    try:
        api = _api_client(kubeconfig, context)
    except Exception as exc:   # noqa: BLE001 - a bad context/kubeconfig is reported, not raised
        obs.error = f"kubeconfig {kubeconfig}: context {context!r}: {_short(exc)}"
        obs.fetch_seconds = time.monotonic() - t0
        return obs
    try:
        core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
        obs.nodes = [node_from_dict(n) for n in _pages(core.list_node)]
        obs.pods = [pod_from_dict(p) for p in _pages(core.list_pod_for_all_namespaces)]
        obs.workloads = [workload_from_dict("Deployment", d) for d in _pages(apps.list_deployment_for_all_namespaces)]
        obs.workloads += [workload_from_dict("StatefulSet", d)
                          for d in _pages(apps.list_stateful_set_for_all_namespaces)]
        for kind, group, version, plural in (LWS_API, ISVC_API):
            def fetch(group=group, version=version, plural=plural, **kw):
                return custom.list_cluster_custom_object(group, version, plural, **kw)
            try:
                items = list(_pages(fetch))
            except ApiException as exc:
                if exc.status == 404:        # the CRD is not installed on this cluster
                    continue
                raise
            obs.apis.append(kind)
            obs.workloads += [workload_from_dict(kind, d) for d in items]
        for kind, group, version, plural in RAY_APIS:
            def fetch_ray(group=group, version=version, plural=plural, **kw):
                return custom.list_cluster_custom_object(group, version, plural, **kw)
            try:
                obs.ray += [ray_from_dict(kind, d) for d in _pages(fetch_ray)]
                obs.apis.append(kind)
            except ApiException as exc:
                if exc.status != 404:        # 404: KubeRay's CRDs are not installed here
                    raise
        obs.reachable = True
    except Exception as exc:   # noqa: BLE001 - connection refused, TLS, auth, timeouts: a finding
        obs.error = _short(exc)
        obs.nodes, obs.pods, obs.workloads, obs.ray = [], [], [], []
    finally:
        api.close()
    obs.fetch_seconds = time.monotonic() - t0
    return obs


def _short(exc: Exception) -> str:
    """One line: 'cannot connect to HOST: [Errno 111] Connection refused', 'HTTP 403 Forbidden', ..."""
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:                                  # kubernetes ApiException
        return f"HTTP {status} {reason or ''}".strip()[:300]
    if reason is not None and not isinstance(reason, str):  # urllib3 MaxRetryError(reason=NewConnectionError...)
        inner = str(reason)
        m = re.search(r"\[Errno [^\]]+\][^\"')]*", inner)
        pool = getattr(exc, "pool", None)
        host = f"{pool.host}:{pool.port}" if pool else "the API server"
        return f"cannot connect to {host}: {m.group(0).strip() if m else type(reason).__name__}"[:300]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def observe_fleet(kubeconfig: Path, contexts: Mapping[str, str], *, max_workers: int = 8) -> FleetObservation:
    """Read every (site -> context) cluster concurrently (one thread each)."""
    import importlib

    importlib.import_module("kubernetes.client")   # imported once, before the clock starts (about 1 s)

    t0 = time.monotonic()
    sites = list(contexts)
    if not sites:
        return FleetObservation(clusters={}, fetch_seconds=0.0)
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(sites)))) as pool:
        results = list(pool.map(lambda s: observe_cluster(kubeconfig, s, contexts[s]), sites))
    return FleetObservation(clusters={r.site: r for r in results}, fetch_seconds=time.monotonic() - t0)
