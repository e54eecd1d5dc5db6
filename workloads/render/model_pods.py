"""Scheduling of model-server pods: GPU node selection, privacy zones, tolerations, topology spread."""
from __future__ import annotations

from infra import labels as L
from infra.dataflow import pipeline_tier
from infra.spec import Environment, Pipeline, PrivacyTier


def pod_tier(env: Environment, p: Pipeline) -> str:
    """The tier a pipeline's pods run at, are labelled with and are pinned by: its effective tier (infra.dataflow:
    raised by the feature views and collections it reads and by the requests mirrored to it), as placed."""
    return pipeline_tier(env, p).effective.value


def declared_tier_label(env: Environment, p: Pipeline) -> dict[str, str]:
    """`hybridml.io/declared-privacy-tier: <own tier>` where data flow raised the pipeline's tier, else nothing."""
    tier = pipeline_tier(env, p)
    return {L.DECLARED_PRIVACY_TIER: tier.declared.value} if tier.raised else {}


def zones_for(tier: str, site_zones: tuple[str, ...] = ()) -> list[str]:
    """Node privacy zones a workload of `tier` may run on: at a datacenter (`site_zones`: the zones of
    its racks) only its home zone (infra.labels.home_zone), as the placement counted it; elsewhere every
    zone that may hold the tier."""
    if site_zones:
        home = L.home_zone(PrivacyTier(tier), site_zones)
        return [home] if home else L.zones_allowed_for(PrivacyTier(tier))
    return L.zones_allowed_for(PrivacyTier(tier))


def placement_affinity(tier: str, site_zones: tuple[str, ...] = ()) -> dict:
    """Only nodes whose privacy zone may hold `tier` (zones_for)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": L.PRIVACY_ZONE, "operator": "In", "values": zones_for(tier, site_zones)}]}]}}}


def tolerations(tier: str, gpu: bool, site_zones: tuple[str, ...] = ()) -> list[dict]:
    """GPU nodes are tainted `nvidia.com/gpu`; pii/restricted nodes are tainted with their zone. A workload
    tolerates the zone taints of every zone it may use, and the GPU taint only if it requests GPUs."""
    out = []
    if gpu:
        out.append({"key": L.GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"})
    for zone in zones_for(tier, site_zones):
        if PrivacyTier(zone).is_sensitive:
            out.append({"key": L.PRIVACY_TAINT_KEY, "operator": "Equal", "value": zone, "effect": "NoSchedule"})
    return out


def node_selector(p: Pipeline) -> dict:
    return {L.GPU_PRODUCT: L.gpu_product(p.gpu.type)} if p.gpu else {}


def spread(site_kind: str, match_labels: dict, max_skew: int, *, hard: bool) -> list[dict]:
    """Spread replicas over zones (cloud) or racks (datacenter), and over hosts.

    GPU workloads use ScheduleAnyway: a scarce GPU type may exist in one zone only, and an unschedulable
    replica is worse than two in one zone. CPU services and data stores spread hard over failure domains.
    """
    domain = L.ZONE if site_kind == "cloud" else L.RACK
    when = "DoNotSchedule" if hard else "ScheduleAnyway"
    return [
        {"maxSkew": max_skew, "topologyKey": domain, "whenUnsatisfiable": when,
         "labelSelector": {"matchLabels": dict(match_labels)}},
        {"maxSkew": 1, "topologyKey": L.HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": dict(match_labels)}},
    ]
