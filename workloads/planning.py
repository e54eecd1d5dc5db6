"""Decisions of the serving stack, as pure functions of the spec and the placement plan (no Pulumi).

The components in workloads/ only turn these into Kubernetes objects. Everything here is deterministic
(sorted inputs, integer splits by largest remainder) so the same spec and plan give the same objects.

- gateway: which site is each user region's entry point, the weighted and prioritised backends of
  every (pipeline, region) route, token budgets per tenant split over the entry gateways, shadow mirrors;
- model servers: replicas per A/B variant, autoscaling bounds and thresholds, whether a replica spans
  nodes (LeaderWorkerSet), model cache size;
- data: which data site each pipeline site reads, which sites read a data site (cross-site exposure),
  the network ranges of each site (for NetworkPolicies).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from infra.bounds import site_networks
from infra.dataflow import effective_tier
from infra.objectstore import ObjectStore
from infra.spec import CloudSite, Datacenter, Environment, Pipeline, PrivacyTier
from policies.placement.candidates import effective_demand
from policies.placement.plan import PipelinePlacement, PlacementPlan

WEIGHT_TOTAL = 1000
"""Backend weights of one route's primary (priority 0) backends add up to this (0.1 % resolution)."""

LLM_TOKEN_METADATA_NAMESPACE = "io.envoy.ai_gateway"
LLM_TOKEN_COSTS = (("llm_input_token", "InputToken"), ("llm_output_token", "OutputToken"),
                   ("llm_total_token", "TotalToken"))
TENANT_HEADER = "x-hybridml-tenant"
MODEL_HEADER = "x-ai-eg-model"


# --------------------------------------------------------------------------- integer splits


def split_integer(total: int, weights: Mapping[str, float], *, at_least_one: bool = False) -> dict[str, int]:
    """Split `total` over keys in proportion to `weights` (largest remainder, ties by key).

    With `at_least_one`, every key with a positive weight gets >= 1 (taken from the largest shares),
    provided total >= number of such keys. The result always sums to `total` (0 when weights are all 0).
    """
    keys = sorted(k for k, w in weights.items() if w > 0)
    wsum = sum(weights[k] for k in keys)
    if not keys or total <= 0 or wsum <= 0:
        return {k: 0 for k in sorted(weights)}
    exact = {k: total * weights[k] / wsum for k in keys}
    out = {k: int(math.floor(exact[k] + 1e-9)) for k in keys}
    rest = total - sum(out.values())
    for k in sorted(keys, key=lambda k: (-(exact[k] - out[k]), k))[:rest]:
        out[k] += 1
    if at_least_one and total >= len(keys):
        for k in keys:
            while out[k] == 0:
                donor = max(keys, key=lambda d: (out[d], d))
                out[donor] -= 1
                out[k] += 1
    out.update({k: 0 for k in weights if k not in out})
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- sites


def site_kind(env: Environment, site: str) -> str:
    return "cloud" if isinstance(env.site(site), CloudSite) else "datacenter"


def privacy_zones(env: Environment, site: str) -> tuple[str, ...]:
    """The privacy zones of a datacenter's racks, least sensitive first; () for a cloud site."""
    s = env.site(site)
    if isinstance(s, CloudSite):
        return ()
    return tuple(t.value for t in sorted({r.privacy_zone for r in s.racks}, key=lambda t: t.rank))


def gpu_node_shape(env: Environment, site: str, gpu_type: str) -> tuple[int, float]:
    """(GPUs per node, GiB per GPU) of the largest node of `site` offering `gpu_type`; (0, 0) if none."""
    s = env.site(site)
    shapes: list[tuple[int, float]] = []
    if isinstance(s, CloudSite):
        shapes = [(it.gpu.count, it.gpu.memory_gib) for it in s.instance_types if it.gpu and it.gpu.type == gpu_type]
    else:
        shapes = [(h.gpu.count, h.gpu.memory_gib) for _, h in s.all_hosts() if h.gpu and h.gpu.type == gpu_type]
    return max(shapes, default=(0, 0.0))


def replica_group_size(env: Environment, site: str, p: Pipeline) -> int:
    """Nodes one replica spans: 1 when its GPUs fit one node, else ceil(GPUs / GPUs per node) (LeaderWorkerSet)."""
    if not p.gpu:
        return 1
    per_node, _ = gpu_node_shape(env, site, p.gpu.type)
    if per_node == 0 or p.gpu.count <= per_node:
        return 1
    return math.ceil(p.gpu.count / per_node)


def model_cache_gib(env: Environment, site: str, p: Pipeline) -> int:
    """Model cache volume per pod: the weights fit in the GPUs' memory, plus room for a draft model and
    tokenizer files; at least 20 GiB. Rounded up to 10 GiB."""
    if not p.gpu:
        return 20
    _, mem = gpu_node_shape(env, site, p.gpu.type)
    per_pod = p.gpu.count / replica_group_size(env, site, p)
    need = per_pod * (mem or 80) * 1.1 + 10
    return int(max(20, math.ceil(need / 10) * 10))


def object_store(env: Environment, site: str) -> ObjectStore | None:
    """A datacenter's own object store (where the Flink state of its pii/restricted views goes); None elsewhere."""
    s = env.site(site)
    return s.object_store if isinstance(s, Datacenter) else None


def site_cidrs(env: Environment) -> dict[str, list[str]]:
    """Source ranges of traffic from each site (infra.bounds.site_networks, which the spec keeps disjoint): the VPC
    of a cloud site (pods get VPC addresses), the /24s of a datacenter's hosts, collapsed (pod traffic leaving an
    on-prem cluster is SNATed to the node address)."""
    return site_networks(env)


# --------------------------------------------------------------------------- model servers


def variant_replicas(p: Pipeline, replicas: int) -> dict[str, int]:
    """Replicas per A/B variant on one site (weights of the spec; every weighted variant keeps >= 1).

    A pipeline without variants has one unnamed variant "" with all replicas.
    """
    if not p.variants:
        return {"": replicas}
    return split_integer(replicas, {v.name: v.weight for v in p.variants}, at_least_one=True)


@dataclass(frozen=True)
class Scaling:
    min_replicas: int
    max_replicas: int
    queue_threshold: int
    """vLLM: requests waiting per replica before KEDA adds one (`autoscaling.target_queue_depth`)."""
    rps_threshold: float
    """CPU/Triton: requests/s per replica that KEDA keeps (capacity x target utilisation)."""
    scale_to_zero: bool


def scaling(p: Pipeline, replicas: int) -> Scaling:
    """Planned replicas are the floor (the plan sized them for peak within SLO); the ceiling is
    `max_replicas_factor` x planned. Scale to zero only where the spec allows it."""
    zero = p.autoscaling.scale_to_zero
    floor = 0 if zero else replicas
    ceiling = max(1, math.ceil(replicas * p.autoscaling.max_replicas_factor - 1e-9), replicas)
    return Scaling(min_replicas=floor, max_replicas=ceiling, queue_threshold=p.autoscaling.target_queue_depth,
                   rps_threshold=round(p.capacity_rps * p.target_utilization, 3), scale_to_zero=zero)


def speculative_config(p: Pipeline) -> dict | None:
    """vLLM `--speculative-config`: a draft model, or n-gram prompt lookup when the spec says `[ngram]`."""
    engine = p.engine
    spec = getattr(engine, "speculative", None)
    if spec is None:
        return None
    if spec.model.strip("[]").lower() == "ngram":
        return {"method": "ngram", "num_speculative_tokens": spec.num_speculative_tokens, "prompt_lookup_max": 4}
    return {"model": spec.model, "num_speculative_tokens": spec.num_speculative_tokens}


def served_model_name(p: Pipeline) -> str:
    return getattr(p.engine, "served_model_name", None) or p.name


# --------------------------------------------------------------------------- gateway


STANDARD = "standard"
"""Entry class of public and internal pipelines; pii/restricted pipelines have an entry class per tier."""


def entry_class(tier: PrivacyTier | str) -> str:
    t = PrivacyTier(tier)
    return t.value if t.is_sensitive else STANDARD


def listener_name(region: str, cls: str) -> str:
    return region if cls == STANDARD else f"{region}-{cls}"


def entry_sites(env: Environment, sites: list[str]) -> dict[str, dict[str, str]]:
    """region -> entry class -> the gateway site where that region's requests enter the fleet.

    Standard (public/internal) traffic enters at the region's nearest site (lowest RTT, ties by name).
    pii/restricted traffic is never decrypted on a site that may not hold it: it enters at the nearest
    site that allows the tier, in the region's jurisdiction when there is one. DNS: `<region>.<domain>`
    and `<region>.<tier>.<domain>` point at these gateways.
    """
    classes = [STANDARD] + sorted({t.value for p in env.pipelines if (t := effective_tier(env, p)).is_sensitive})
    out: dict[str, dict[str, str]] = {}
    for r in env.user_regions:
        for cls in classes:
            cands = list(sites)
            if cls != STANDARD:
                allowed = [s for s in sites if env.site_allows(env.site(s), PrivacyTier(cls))]
                local = [s for s in allowed if env.site(s).jurisdiction == r.jurisdiction]
                cands = local or allowed
            if cands:
                out.setdefault(r.name, {})[cls] = min(cands, key=lambda s: (env.user_rtt(r.name, s), s))
    return out


def entry_of(entries: Mapping[str, Mapping[str, str]], region: str, tier: PrivacyTier | str) -> str | None:
    return entries.get(region, {}).get(entry_class(tier))


def may_serve(env: Environment, p: Pipeline, region: str, site: str) -> bool:
    """Privacy allows `site` to answer `region`'s requests for `p` (jurisdiction of pii/restricted, by the tier it
    runs at: its effective tier, infra.dataflow, as placement routes it)."""
    if not effective_tier(env, p).is_sensitive:
        return True
    allowed = p.allowed_jurisdictions or [env.region(region).jurisdiction]
    return env.site(site).jurisdiction in allowed


@dataclass(frozen=True)
class RouteBackend:
    site: str
    weight: int
    priority: int
    """0: takes the region's traffic (weight = share of it); 1, 2, ...: failover in RTT order."""
    rtt_ms: float


@dataclass(frozen=True)
class RegionRoute:
    pipeline: str
    region: str
    entry: str
    backends: tuple[RouteBackend, ...]

    @property
    def primaries(self) -> list[RouteBackend]:
        return [b for b in self.backends if b.priority == 0]

    @property
    def failover(self) -> list[RouteBackend]:
        return sorted((b for b in self.backends if b.priority > 0), key=lambda b: b.priority)


def region_route(env: Environment, p: Pipeline, pp: PipelinePlacement, region: str, entry: str) -> RegionRoute:
    """The backends of `p` for requests from `region`, as the entry gateway weighs them.

    Priority 0: the sites the plan routes this region to, weighted by the plan's split (sum WEIGHT_TOTAL,
    each >= 1). Then every other placed site the region may use (privacy), next-closest first (RTT):
    Envoy spills over to priority n+1 only when priority n is unhealthy.
    """
    shares = {s: x for s, x in pp.routing.get(region, {}).items() if x > 0 and s in pp.replicas}
    weights = split_integer(WEIGHT_TOTAL, shares, at_least_one=True)
    order = sorted((s for s in pp.replicas if may_serve(env, p, region, s)),
                   key=lambda s: (env.user_rtt(region, s), s))
    backends = [RouteBackend(s, weights[s], 0, env.user_rtt(region, s)) for s in order if s in shares]
    for i, s in enumerate(s for s in order if s not in shares):
        backends.append(RouteBackend(s, 1, i + 1, env.user_rtt(region, s)))
    return RegionRoute(p.name, region, entry, tuple(backends))


def region_routes(env: Environment, plan: PlacementPlan, entries: Mapping[str, Mapping[str, str]]) -> list[RegionRoute]:
    """One route per (pipeline, user region it serves): the regions with demand in the plan's routing."""
    out = []
    for pp in plan.pipelines:
        p = env.pipeline(pp.name)
        for region in sorted(pp.routing):
            entry = entry_of(entries, region, effective_tier(env, p))
            if entry and pp.routing[region]:
                out.append(region_route(env, p, pp, region, entry))
    return out


@dataclass(frozen=True)
class TenantBudget:
    tenant: str
    pipeline: str
    entry: str
    tokens_per_minute: int


def tenant_budgets(env: Environment, entries: Mapping[str, Mapping[str, str]]) -> list[TenantBudget]:
    """Token budgets per (tenant, pipeline) split over the entry gateways in proportion to the pipeline's
    peak demand entering at each (each entry's rate-limit service counts its own share; the shares add
    up to the spec's budget exactly). A pipeline without demand keeps its whole budget at every entry
    that fronts a region (nobody routes to it; failover only)."""
    demand = effective_demand(env)
    out: list[TenantBudget] = []
    for tenant in sorted(env.tenants, key=lambda t: t.name):
        for b in sorted(tenant.budgets, key=lambda b: b.pipeline):
            tier = effective_tier(env, b.pipeline)
            per_entry: dict[str, float] = {}
            for region, rps in demand.get(b.pipeline, {}).items():
                entry = entry_of(entries, region, tier)
                if entry:
                    per_entry[entry] = per_entry.get(entry, 0.0) + rps
            if not per_entry:
                per_entry = {e: 1.0 for r in entries if (e := entry_of(entries, r, tier))}
            split = split_integer(b.tokens_per_minute, per_entry, at_least_one=True)
            out.extend(TenantBudget(tenant.name, b.pipeline, e, n) for e, n in split.items() if n > 0)
    return out


@dataclass(frozen=True)
class Mirror:
    source: str
    target: str
    region: str
    entry: str
    target_site: str
    percent: float


def shadow_mirrors(env: Environment, plan: PlacementPlan, entries: Mapping[str, Mapping[str, str]]) -> list[Mirror]:
    """For each (shadowed pipeline, region it serves): mirror `percent` of requests to the shadow target's
    nearest placed site that may serve the region. LLM pipelines are left out (`unmirrored_shadows`):
    an AIGatewayRoute has no request-mirror filter."""
    out = []
    placed = {pp.name: pp for pp in plan.pipelines}
    for p in env.pipelines:
        if not p.shadow or p.name not in placed or p.shadow.target not in placed or p.is_llm:
            continue
        target = env.pipeline(p.shadow.target)
        for region in sorted(placed[p.name].routing):
            entry = entry_of(entries, region, effective_tier(env, p))
            if not entry:
                continue
            sites = sorted((s for s in placed[target.name].replicas if may_serve(env, target, region, s)),
                           key=lambda s: (env.user_rtt(region, s), s))
            if sites:
                out.append(Mirror(p.name, target.name, region, entry, sites[0], p.shadow.percent))
    return out


def unmirrored_shadows(env: Environment) -> list[str]:
    """Shadowed pipelines the gateway cannot mirror (LLMs: Envoy AI Gateway routes have no mirror filter)."""
    return sorted(p.name for p in env.pipelines if p.shadow and p.is_llm)


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataRead:
    kind: str          # feature_view | collection
    name: str
    data_site: str
    tier: str


def data_reads(env: Environment, plan: PlacementPlan, pipeline: str, site: str) -> list[DataRead]:
    """What `pipeline` running on `site` reads, and from which site (plan.data serves)."""
    out = []
    for d in plan.data:
        target = d.serves.get(pipeline, {}).get(site)
        if target:
            out.append(DataRead(d.kind, d.name, target, d.privacy_tier))
    return sorted(out, key=lambda r: (r.kind, r.name))


def data_readers(plan: PlacementPlan, kind: str, name: str, data_site: str) -> dict[str, set[str]]:
    """site -> pipelines on that site reading (`kind`, `name`) at `data_site`."""
    out: dict[str, set[str]] = {}
    for d in plan.data:
        if d.kind != kind or d.name != name:
            continue
        for pipeline, by_site in d.serves.items():
            for psite, dsite in by_site.items():
                if dsite == data_site:
                    out.setdefault(psite, set()).add(pipeline)
    return out


@dataclass(frozen=True)
class SiteWork:
    """What one site runs, by kind: the input of that site's components."""

    site: str
    pipelines: dict[str, int] = field(default_factory=dict)        # pipeline -> replicas
    feature_views: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)


def site_work(plan: PlacementPlan, site: str) -> SiteWork:
    pipelines = {pp.name: pp.replicas[site] for pp in plan.pipelines if pp.replicas.get(site, 0) > 0}
    fvs = sorted(d.name for d in plan.data if d.kind == "feature_view" and site in d.sites)
    cols = sorted(d.name for d in plan.data if d.kind == "collection" and site in d.sites)
    return SiteWork(site, dict(sorted(pipelines.items())), fvs, cols)


def is_cloud(env: Environment, site: str) -> bool:
    return isinstance(env.site(site), CloudSite)


def is_datacenter(env: Environment, site: str) -> bool:
    return isinstance(env.site(site), Datacenter)
