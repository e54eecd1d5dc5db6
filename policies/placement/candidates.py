"""Which site may hold which pipeline, and which user region it may serve: static rules with reasons.

Pure functions over the spec. The solver only builds variables for eligible
pairs; the explainer and the infeasibility report reuse the same reasons.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

from infra.labels import home_zone
from infra.spec import CloudSite, Datacenter, Dependency, Environment, InstanceType, Pipeline, PrivacyTier

CLOUD_ALLOCATABLE = 0.9  # kubelet/system reserve on cloud nodes


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


def datacenter_capacity(dc: Datacenter) -> SiteCapacity:
    return _memo("capacity", dc, _datacenter_capacity)


def _host_shapes(dc: Datacenter) -> dict[int, set[tuple[float, float, str | None, int]]]:
    """Distinct host shapes (cores, memory, GPU type, GPU count) of each tier's home zone."""
    keep = 1 - dc.system_reserved_fraction
    home = datacenter_capacity(dc).home
    out: dict[int, set[tuple[float, float, str | None, int]]] = {level: set() for level in range(4)}
    for rack, host in dc.all_hosts():
        shape = (host.cores * keep, host.memory_gib * keep, host.gpu.type if host.gpu else None,
                 host.gpu.count if host.gpu else 0)
        for level in range(4):
            if home[level] == rack.privacy_zone.rank:
                out[level].add(shape)
    return out


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


def site_rejection(env: Environment, p: Pipeline, site: CloudSite | Datacenter) -> str | None:
    """Why `site` can never hold a replica of `p` (None when it can)."""
    if p.pinned_sites is not None and site.name not in p.pinned_sites:
        return f"not in the pipeline's pinned_sites {p.pinned_sites}"
    if not env.site_allows(site, p.privacy_tier):
        allowed = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
        return (f"privacy: site holds {', '.join(t.value for t in allowed)}; pipeline is {p.privacy_tier.value}")
    if isinstance(site, Datacenter):
        capacity = datacenter_capacity(site)
        cap = capacity.of_tier(p.privacy_tier.rank)
        shapes = _memo("shapes", site, _host_shapes)[p.privacy_tier.rank]
        home = capacity.home[p.privacy_tier.rank]
        if home is None:
            return f"no racks of a privacy zone that may hold {p.privacy_tier.value}"
        if p.gpu:
            if cap[2].get(p.gpu.type, 0) == 0:
                return (f"no {p.gpu.type} GPUs in the racks of privacy zone {list(PrivacyTier)[home].value} "
                        f"(where {p.privacy_tier.value} work runs here)")
            if not any(g == p.gpu.type and n >= p.gpu.count for _, _, g, n in shapes):
                return f"no host with {gpu_label(p.gpu.count, p.gpu.type)}"
        if not any(c >= p.resources.cpu and m >= p.resources.memory_gib for c, m, _, _ in shapes):
            return f"no host fits a replica ({p.resources.cpu} cores, {p.resources.memory_gib} GiB)"
    else:
        if p.gpu:
            types = [it for it in site.instance_types if it.gpu and it.gpu.type == p.gpu.type]
            if not types:
                return f"offers no {p.gpu.type} (has {', '.join(sorted(site.gpu_types)) or 'no GPUs'})"
            if p.engine.kind != "vllm" and not any(it.gpu is not None and it.gpu.count >= p.gpu.count for it in types):
                return f"no instance type with {gpu_label(p.gpu.count, p.gpu.type)} on one node"
            if not fitting_types(p, site):
                k = replica_nodes(p, site)
                return (f"no {p.gpu.type} instance type fits a replica's pod ({gpu_label(math.ceil(p.gpu.count / k), p.gpu.type)}, "
                        f"{p.resources.cpu / k:g} cores, {p.resources.memory_gib / k:g} GiB"
                        f"{f' on each of {k} nodes' if k > 1 else ''})")
        else:
            cpu_types = [it for it in site.instance_types if not it.gpu]
            if not any(it.vcpus * CLOUD_ALLOCATABLE >= p.resources.cpu and it.memory_gib * CLOUD_ALLOCATABLE >= p.resources.memory_gib
                       for it in cpu_types):
                return f"no CPU instance type fits a replica ({p.resources.cpu} cores, {p.resources.memory_gib} GiB)"
    return None


def route_rejection(env: Environment, p: Pipeline, region: str, site: CloudSite | Datacenter) -> str | None:
    """Why demand from `region` may not be served by `site` (site assumed eligible)."""
    reg = env.region(region)
    if p.privacy_tier.is_sensitive:
        allowed = p.allowed_jurisdictions or [reg.jurisdiction]
        if site.jurisdiction not in allowed:
            return f"jurisdiction: {p.privacy_tier.value} requests from {region} ({reg.jurisdiction}) stay in {', '.join(allowed)}; site is {site.jurisdiction}"
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


def cheapest_cloud_rates(site: CloudSite) -> tuple[dict[str, float], float, float]:
    """($/GPU-hour per GPU type, $/vCPU-hour, $/GiB-hour) from the cheapest instance types."""
    return _memo("rates", site, _cheapest_cloud_rates)


def _cheapest_cloud_rates(site: CloudSite) -> tuple[dict[str, float], float, float]:
    gpu_rate: dict[str, float] = {}
    for it in site.instance_types:
        if it.gpu:
            rate = it.hourly_usd / it.gpu.count
            gpu_rate[it.gpu.type] = min(gpu_rate.get(it.gpu.type, math.inf), rate)
    cpu_types = [it for it in site.instance_types if not it.gpu]
    cpu_rate = min((it.hourly_usd / (it.vcpus * CLOUD_ALLOCATABLE) for it in cpu_types), default=math.inf)
    mem_rate = min((it.hourly_usd / (it.memory_gib * CLOUD_ALLOCATABLE) for it in cpu_types), default=math.inf)
    return gpu_rate, cpu_rate, mem_rate


def replica_cost(p: Pipeline, site: CloudSite | Datacenter) -> float:
    """Approximate $/hour of one replica at a site (used for explanations and the greedy baseline)."""
    if isinstance(site, Datacenter):
        mc = site.marginal_cost
        cost = p.resources.cpu * mc.core_hour_usd + p.resources.memory_gib * mc.memory_gib_hour_usd
        if p.gpu:
            cost += p.gpu.count * mc.gpu_hour_usd.get(p.gpu.type, 0.0)
        return cost
    gpu_rate, cpu_rate, mem_rate = cheapest_cloud_rates(site)
    if p.gpu:
        fits = fitting_types(p, site)
        return p.gpu.count * min((it.hourly_usd / it.gpu.count for it in fits if it.gpu is not None), default=math.inf)
    return max(p.resources.cpu * cpu_rate, p.resources.memory_gib * mem_rate)


@dataclass(frozen=True)
class DataPiece:
    key: str          # "feature_view:<name>" | "collection:<name>"
    name: str
    kind: str
    tier: PrivacyTier
    cpu: float
    memory_gib: float


def data_pieces(env: Environment) -> dict[str, DataPiece]:
    out = {}
    for v in env.feature_views:
        out[f"feature_view:{v.name}"] = DataPiece(f"feature_view:{v.name}", v.name, "feature_view", v.privacy_tier,
                                                  v.online_cpu, v.online_memory_gib)
    for c in env.collections:
        out[f"collection:{c.name}"] = DataPiece(f"collection:{c.name}", c.name, "collection", c.privacy_tier,
                                                c.cpu * c.replication_factor, c.memory_gib * c.replication_factor)
    return out


def dep_key(dep: Dependency) -> str:
    return f"{dep.kind}:{dep.target}"
