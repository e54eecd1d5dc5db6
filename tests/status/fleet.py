"""Synthetic observations of a deployed environment: the nodes `hybridml local up` would create for the
spec + plan (hybridml.local.fromspec) and, per planned replica, one Running+Ready pod labelled as
workloads/render labels them, placed on a node whose privacy zone (and GPU product) fits."""
from __future__ import annotations

import copy

from hybridml.local.fromspec import clusters_from_spec
from hybridml.ops.batch_status import BATCH_PIPELINE
from hybridml.ops.observe import ClusterObservation, FleetObservation, NodeObs, PodObs, RayObs, WorkloadObs
from infra import labels as L
from infra.dataflow import effective_tier
from infra.kube import quantity_value
from infra.spec import Environment, PrivacyTier
from policies.placement.plan import PlacementPlan
from workloads import planning


def node_obs(n) -> NodeObs:
    cap = n.capacity
    return NodeObs(name=n.name, labels=dict(n.labels), taints=tuple((t.key, t.value, t.effect) for t in n.taints),
                   cpu=quantity_value(cap.get("cpu")), memory_gib=quantity_value(cap.get("memory")) / 2**30,
                   gpus=int(quantity_value(cap.get(L.GPU_RESOURCE))))


def pod(site: str, pipeline: str, tier: str, node: str | None, i: int = 0, *, cpu: float = 1.0, gpus: int = 0,
        ready: bool = True, phase: str = "Running", labels: dict | None = None, namespace: str | None = None) -> PodObs:
    lbls = {"app.kubernetes.io/name": pipeline, L.SITE: site, L.PIPELINE: pipeline, L.PRIVACY_TIER: tier}
    return PodObs(namespace=namespace or L.namespace_for(tier), name=f"{pipeline}-{i}", labels={**lbls, **(labels or {})},
                  node=node, phase=phase, ready=ready, cpu=cpu, memory_gib=1.0, gpus=gpus)


def _fits(env: Environment, n: NodeObs, p) -> bool:
    if n.labels.get(L.PRIVACY_ZONE) not in L.zones_allowed_for(effective_tier(env, p)):
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
                # as rendered: labelled with the tier the data it reads gives it, in its declared tier's namespace
                pods.append(pod(site, name, effective_tier(env, p).value, fits[i % len(fits)].name, i,
                                cpu=p.resources.cpu, gpus=gpus, namespace=L.namespace_for(p.privacy_tier)))
            works.append(WorkloadObs("Deployment", L.namespace_for(p.privacy_tier), name,
                                     {L.PIPELINE: name, L.SITE: site}, n, n, True))
        rays = batch_objects(env, plan, site, nodes, pods)
        clusters[site] = ClusterObservation(site=site, context=f"hybridml-{site}", reachable=True, nodes=nodes,
                                            pods=pods, workloads=works, apis=[], fetch_seconds=0.01, ray=rays)
    return FleetObservation(clusters=clusters, fetch_seconds=0.02)


def batch_objects(env: Environment, plan: PlacementPlan, site: str, nodes: list[NodeObs], pods: list[PodObs]) -> list[RayObs]:
    """The plan's batch pipelines at `site` as a healthy fleet shows them: a RayJob running with every planned worker
    ready (its worker pods appended to `pods`), or a recurring pipeline's RayCluster idle between runs."""
    out = []
    site_zones = {n.labels.get(L.PRIVACY_ZONE) for n in nodes}
    for bp, share in (plan.batch.at(site) if plan.batch else []):
        b = env.batch.pipeline(bp.name)
        lbls = {BATCH_PIPELINE: b.name, L.SITE: site, L.PRIVACY_TIER: b.privacy_tier}
        if b.schedule:
            out.append(RayObs("RayCluster", L.namespace_for(b.privacy_tier), b.name, lbls, "ready", cluster=b.name,
                              ready_workers=0, desired_workers=0, reconciled=True))
            continue
        out.append(RayObs("RayJob", L.namespace_for(b.privacy_tier), b.name, lbls, "Running", "RUNNING", cluster=b.name,
                          reconciled=True))
        home = L.home_zone(PrivacyTier(b.privacy_tier), [z for z in site_zones if z]) if env.site(site).kind == "datacenter" else None
        gpu = b.resources.gpu
        fits = [n for n in nodes if (n.labels.get(L.PRIVACY_ZONE) == home if home else
                                     n.labels.get(L.PRIVACY_ZONE) in L.zones_allowed_for(PrivacyTier(b.privacy_tier)))
                and (n.labels.get(L.GPU_PRODUCT) == L.gpu_product(gpu.type) if gpu else not n.gpus)]
        assert fits, (site, b.name)
        for i in range(share.workers):
            pods.append(PodObs(namespace=L.namespace_for(b.privacy_tier), name=f"{b.name}-worker-{i}",
                               labels={**lbls, "app.kubernetes.io/component": "batch-worker"},
                               node=fits[i % len(fits)].name, phase="Running", ready=True, cpu=b.resources.cpu,
                               memory_gib=b.resources.memory_gib, gpus=gpu.count if gpu else 0))
    return out


def copy_fleet(fleet: FleetObservation) -> FleetObservation:
    return copy.deepcopy(fleet)
