"""Synthetic observations of a deployed environment: the nodes `hybridml local up` would create for the
spec + plan (hybridml.local.fromspec) and, per planned replica, one Running+Ready pod labelled as
workloads/render labels them, placed on a node whose privacy zone (and GPU product) fits."""
from __future__ import annotations

import copy

from hybridml.local.fromspec import clusters_from_spec
from hybridml.ops.observe import ClusterObservation, FleetObservation, NodeObs, PodObs, WorkloadObs
from infra import labels as L
from infra.kube import quantity_value
from infra.spec import Environment
from policies.placement.plan import PlacementPlan
from workloads import planning


def node_obs(n) -> NodeObs:
    cap = n.capacity
    return NodeObs(name=n.name, labels=dict(n.labels), taints=tuple((t.key, t.value, t.effect) for t in n.taints),
                   cpu=quantity_value(cap.get("cpu")), memory_gib=quantity_value(cap.get("memory")) / 2**30,
                   gpus=int(quantity_value(cap.get(L.GPU_RESOURCE))))


def pod(site: str, pipeline: str, tier: str, node: str | None, i: int = 0, *, cpu: float = 1.0, gpus: int = 0,
        ready: bool = True, phase: str = "Running", labels: dict | None = None) -> PodObs:
    lbls = {"app.kubernetes.io/name": pipeline, L.SITE: site, L.PIPELINE: pipeline, L.PRIVACY_TIER: tier}
    return PodObs(namespace=L.namespace_for(tier), name=f"{pipeline}-{i}", labels={**lbls, **(labels or {})},
                  node=node, phase=phase, ready=ready, cpu=cpu, memory_gib=1.0, gpus=gpus)


def _fits(env: Environment, n: NodeObs, p) -> bool:
    if n.labels.get(L.PRIVACY_ZONE) not in L.zones_allowed_for(p.privacy_tier):
        return False
    if p.gpu:
        return n.labels.get(L.GPU_PRODUCT) == L.gpu_product(p.gpu.type)
    return not n.gpus


def healthy_fleet(env: Environment, plan: PlacementPlan) -> FleetObservation:
    clusters = {}
    for site, cdef in zip([s.name for s in env.sites], clusters_from_spec(env, plan), strict=False):
        nodes = [node_obs(n) for n in cdef.nodes]
        pods, works = [], []
        for name, n in plan.site(site).pipelines.items():
            p = env.pipeline(name)
            fits = [x for x in nodes if _fits(env, x, p)]
            assert fits, (site, name)
            group = planning.replica_group_size(env, site, p)
            gpus = (p.gpu.count // group) if p.gpu else 0
            for i in range(n):
                pods.append(pod(site, name, p.privacy_tier.value, fits[i % len(fits)].name, i,
                                cpu=p.resources.cpu, gpus=gpus))
            works.append(WorkloadObs("Deployment", L.namespace_for(p.privacy_tier), name,
                                     {L.PIPELINE: name, L.SITE: site}, n, n, True))
        clusters[site] = ClusterObservation(site=site, context=f"hybridml-{site}", reachable=True, nodes=nodes,
                                            pods=pods, workloads=works, apis=[], fetch_seconds=0.01)
    return FleetObservation(clusters=clusters, fetch_seconds=0.02)


def copy_fleet(fleet: FleetObservation) -> FleetObservation:
    return copy.deepcopy(fleet)
