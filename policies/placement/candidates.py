"""Per-site facts of the spec the placement builds on: datacenter zones, demand, replica shapes, data pieces,
and the reasons a user region may not be served from a site.

Pure functions over the spec. Node shapes and per-node packing are in `shapes`; whether a site may hold a
pipeline at all is `eligibility.site_rejection`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from infra.dataflow import pipeline_tier
from infra.labels import home_zone
from infra.spec import CloudSite, Datacenter, Dependency, Environment, InstanceType, Pipeline, PrivacyTier

CLOUD_ALLOCATABLE = 0.9  # kubelet/system reserve on cloud nodes
TIERS = tuple(PrivacyTier)  # by rank


@dataclass(frozen=True)
class SiteCapacity:
    """What a datacenter can hold, per privacy zone. A workload runs in its tier's home zone only
    (infra.labels.home_zone: the least sensitive zone present that may hold it), so the zones'
    capacities are disjoint: internal work never takes the room of pii racks."""

    # zone rank -> (cores, memory GiB, {gpu type: count}) of the racks of exactly that zone
    by_zone: dict[int, tuple[float, float, dict[str, int]]] = field(default_factory=dict)
    # tier rank -> rank of its home zone here (None: no rack may hold that tier)
    home: dict[int, int | None] = field(default_factory=dict)

    @property
    def total(self) -> tuple[float, float, dict[str, int]]:
        gpus: dict[str, int] = {}
        for _, _, g in self.by_zone.values():
            for k, n in g.items():
                gpus[k] = gpus.get(k, 0) + n
        return (sum(c for c, _, _ in self.by_zone.values()), sum(m for _, m, _ in self.by_zone.values()), gpus)

    def of_tier(self, tier_rank: int) -> tuple[float, float, dict[str, int]]:
        """The capacity a workload of this tier may use (its home zone's)."""
        zone = self.home.get(tier_rank)
        return self.by_zone[zone] if zone is not None else (0.0, 0.0, {})


_MEMO: dict[tuple[str, int], tuple[object, object]] = {}

_T = TypeVar("_T")
_R = TypeVar("_R")


def _memo(kind: str, obj: _T, compute: Callable[[_T], _R]) -> _R:
    """Per-object memo keyed by identity (spec models are immutable); keeps the object alive so ids stay unique."""
    hit = _MEMO.get((kind, id(obj)))
    if hit is not None and hit[0] is obj:
        return cast(_R, hit[1])
    value = compute(obj)
    _MEMO[(kind, id(obj))] = (obj, value)
    return value


def allowed_tiers(site: CloudSite | Datacenter) -> frozenset[PrivacyTier]:
    """The tiers a site may hold (Environment.site_allows, memoised: a datacenter's default scans its racks)."""
    return _memo("tiers", site, lambda s: frozenset(s.allowed_tiers if isinstance(s, Datacenter) else s.privacy_tiers))


def datacenter_capacity(dc: Datacenter) -> SiteCapacity:
    return _memo("capacity", dc, _datacenter_capacity)


def _datacenter_capacity(dc: Datacenter) -> SiteCapacity:
    keep = 1 - dc.system_reserved_fraction
    zones: dict[int, tuple[float, float, dict[str, int]]] = {}
    for rack in dc.racks:
        cores, mem, gpus = zones.get(rack.privacy_zone.rank, (0.0, 0.0, {}))
        gpus = dict(gpus)
        for host in rack.all_hosts():
            cores += host.cores * keep
            mem += host.memory_gib * keep
            if host.gpu:
                gpus[host.gpu.type] = gpus.get(host.gpu.type, 0) + host.gpu.count
        zones[rack.privacy_zone.rank] = (cores, mem, gpus)
    present = [r.privacy_zone for r in dc.racks]
    home = {}
    for tier in PrivacyTier:
        zone = home_zone(tier, present)
        home[tier.rank] = PrivacyTier(zone).rank if zone is not None else None
    return SiteCapacity(by_zone=zones, home=home)


def effective_demand(env: Environment) -> dict[str, dict[str, float]]:
    """Peak rps per pipeline and region, including mirrored (shadow) traffic on the shadow target."""
    demand = {p.name: {r: float(v) for r, v in p.demand_rps.items() if v > 0} for p in env.pipelines}
    for p in env.pipelines:
        if p.shadow:
            target = demand[p.shadow.target]
            for region, rps in p.demand_rps.items():
                if rps > 0:
                    target[region] = target.get(region, 0.0) + rps * p.shadow.percent / 100
    return demand


def replica_nodes(p: Pipeline, site: CloudSite) -> int:
    """Nodes one replica spans at a cloud site: 1 when its GPUs fit the largest node of its GPU type,
    else (vLLM only) ceil(GPUs / GPUs of that node), one pod per node (workloads/planning.py renders
    exactly this: a Deployment, or a LeaderWorkerSet group)."""
    assert p.gpu
    largest = max((it.gpu.count for it in site.instance_types if it.gpu and it.gpu.type == p.gpu.type), default=0)
    if largest == 0 or p.gpu.count <= largest or p.engine.kind != "vllm":
        return 1
    return math.ceil(p.gpu.count / largest)


def fitting_types(p: Pipeline, site: CloudSite) -> list[InstanceType]:
    """The instance types of `site` one pod of a replica of GPU pipeline `p` fits on: enough GPUs of its
    type, and its share of CPU and memory within the node's allocatable part. The solver ties a
    pipeline's GPUs to these types only (a 2-GPU, 64 GiB replica never lands on 1-GPU, 16 GiB nodes)."""
    assert p.gpu
    k = replica_nodes(p, site)
    gpus, cpu, mem = math.ceil(p.gpu.count / k), p.resources.cpu / k, p.resources.memory_gib / k
    return [it for it in site.instance_types
            if it.gpu and it.gpu.type == p.gpu.type and it.gpu.count >= gpus
            and it.vcpus * CLOUD_ALLOCATABLE >= cpu - 1e-9 and it.memory_gib * CLOUD_ALLOCATABLE >= mem - 1e-9]


def gpu_label(count: int, gtype: str) -> str:
    return f"{count}x{gtype}"


def route_rejection(env: Environment, p: Pipeline, region: str, site: CloudSite | Datacenter) -> str | None:
    """Why demand from `region` may not be served by `site` (site assumed eligible). The jurisdiction rule
    follows the pipeline's effective tier (infra.dataflow: raised by the data it reads)."""
    reg = env.region(region)
    tier = pipeline_tier(env, p)
    if tier.effective.is_sensitive:
        allowed = p.allowed_jurisdictions or [reg.jurisdiction]
        if site.jurisdiction not in allowed:
            why = f" ({tier.because()})" if tier.raised else ""
            return (f"jurisdiction: {tier.effective.value} requests from {region} ({reg.jurisdiction}) stay in "
                    f"{', '.join(allowed)}; site is {site.jurisdiction}{why}")
    rtt = env.user_rtt(region, site.name)
    budget = p.latency.network_budget_ms
    if rtt > budget + 1e-9:
        return f"latency: RTT {rtt:g} ms from {region} + {p.latency.service_ms:g} ms service = {rtt + p.latency.service_ms:g} ms > SLO {p.latency.p99_ms:g} ms"
    return None


def data_rejection(env: Environment, tier: PrivacyTier, site: CloudSite | Datacenter) -> str | None:
    if not env.site_allows(site, tier):
        return f"privacy: site does not hold {tier.value} data"
    return None


def replicas_upper_bound(p: Pipeline, demand: dict[str, float], per_site_min: int) -> int:
    need = math.ceil(sum(demand.values()) / (p.capacity_rps * p.target_utilization) - 1e-9) if demand else 0
    return max(need, p.min_replicas, per_site_min, 1)


def per_site_minimum(p: Pipeline) -> int:
    return max(p.spread.min_replicas_per_site, len(p.variants) or 1)


@dataclass(frozen=True)
class DataPiece:
    key: str          # "feature_view:<name>" | "collection:<name>"
    name: str
    kind: str
    tier: PrivacyTier
    cpu: float          # all its pods together
    memory_gib: float
    pods: int = 1       # a collection: one pod per replica (replication_factor); a feature view's store: one


def data_pieces(env: Environment) -> dict[str, DataPiece]:
    out = {}
    for v in env.feature_views:
        out[f"feature_view:{v.name}"] = DataPiece(f"feature_view:{v.name}", v.name, "feature_view", v.privacy_tier,
                                                  v.online_cpu, v.online_memory_gib)
    for c in env.collections:
        out[f"collection:{c.name}"] = DataPiece(f"collection:{c.name}", c.name, "collection", c.privacy_tier,
                                                c.cpu * c.replication_factor, c.memory_gib * c.replication_factor,
                                                c.replication_factor)
    return out


def dep_key(dep: Dependency) -> str:
    return f"{dep.kind}:{dep.target}"
