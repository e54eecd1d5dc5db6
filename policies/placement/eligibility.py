"""Which sites each pipeline and data piece may use at all, before any optimisation.

Static decisions shared by the solver, its explanations and the greedy baseline: privacy and jurisdiction (by a
pipeline's effective tier, infra.dataflow: raised by what it reads and by the requests mirrored to it),
GPU types, per-node fit (a replica whose pods fit no node of a site is not placed there), tensor parallelism
within a node, pinned sites, latency SLOs per demand region and dependency budgets. Pure: spec in, sets out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from infra.dataflow import pipeline_tier
from infra.errors import InfeasibleReason
from infra.spec import CloudSite, Datacenter, Dependency, Environment, Pipeline, PrivacyTier
from policies.placement import candidates as cand
from policies.placement import shapes
from policies.placement.candidates import data_pieces, dep_key


@dataclass
class Eligibility:
    """Static decisions shared by the solver, the explainer and the baseline."""

    sites: dict[str, list[str]] = field(default_factory=dict)                   # p -> eligible sites
    routes: dict[tuple[str, str], list[str]] = field(default_factory=dict)      # (p, r) -> sites within SLO
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)           # p -> site -> reason
    data_sites: dict[str, list[str]] = field(default_factory=dict)              # data key -> sites allowed
    near: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)   # (p, dep key, s) -> data sites in budget
    demand: dict[str, dict[str, float]] = field(default_factory=dict)


def lookup_p99_ms(env: Environment, dep: Dependency) -> float:
    """Server-side p99 of one read of a dependency, spent beside the RTT: a feature view's `feature_lookup_p99_ms`
    (measured, scripts/bench_feast.py); collections: 0 (their budget is RTT only)."""
    if dep.feature_view is None:
        return 0.0
    return next((v.feature_lookup_p99_ms for v in env.feature_views if v.name == dep.feature_view), 0.0)


def eligibility(env: Environment) -> Eligibility:
    el = Eligibility(demand=cand.effective_demand(env))
    pieces = data_pieces(env)
    for key, piece in pieces.items():
        el.data_sites[key] = [s.name for s in env.sites if data_rejection(env, key, piece.tier, s) is None]
    for p in env.pipelines:
        ok, rejected = [], {}
        for site in env.sites:
            why = site_rejection(env, p, site)
            if why is None:
                for dep in p.dependencies:
                    key = dep_key(dep)
                    lookup = lookup_p99_ms(env, dep)   # the budget covers RTT + the lookup's own server-side p99
                    near = [d for d in el.data_sites[key] if env.site_rtt(site.name, d) + lookup <= dep.latency_budget_ms + 1e-9]
                    if not near:
                        why = (f"dependency: no site allowed for {pieces[key].tier.value} {dep.kind} {dep.target!r} "
                               f"within {dep.latency_budget_ms:g} ms" + (f" ({lookup:g} ms lookup p99 + RTT)" if lookup else ""))
                        break
                    el.near[(p.name, key, site.name)] = near
            if why is None and el.demand[p.name]:
                routable = [r for r in el.demand[p.name] if cand.route_rejection(env, p, r, site) is None]
                if not routable and p.spread.min_sites == 1 and p.min_replicas <= cand.per_site_minimum(p):
                    # Serving nobody within SLO, such a site could only add failover capacity; keep it
                    # out unless spread or min_replicas ask for more sites than the SLO allows.
                    why = "latency: " + "; ".join(str(cand.route_rejection(env, p, r, site)) for r in el.demand[p.name])
            if why is None:
                ok.append(site.name)
            else:
                rejected[site.name] = why
        el.sites[p.name] = ok
        el.rejected[p.name] = rejected
        for r in el.demand[p.name]:
            el.routes[(p.name, r)] = [s for s in ok if cand.route_rejection(env, p, r, env.site(s)) is None]
    return el


def site_rejection(env: Environment, p: Pipeline, site: CloudSite | Datacenter) -> str | None:
    """Why `site` can never hold a replica of `p` (None when it can): pinning, privacy, GPU type, tensor
    parallelism across nodes, and whether its pods fit any node of the site (per-node fit, `shapes`)."""
    if p.pinned_sites is not None and site.name not in p.pinned_sites:
        return f"not in the pipeline's pinned_sites {p.pinned_sites}"
    allowed = site.allowed_tiers if isinstance(site, Datacenter) else site.privacy_tiers
    if p.privacy_tier not in cand.allowed_tiers(site):
        return (f"privacy: site holds {', '.join(t.value for t in allowed)}; pipeline is {p.privacy_tier.value}")
    tier = pipeline_tier(env, p)     # privacy follows the data: raised by what it reads and what is mirrored to it
    if tier.effective not in cand.allowed_tiers(site):
        return "; ".join(tier.refusals(allowed)) + f"; site holds {', '.join(t.value for t in allowed)}"
    raised = f"; {tier.because()}" if tier.raised else ""
    zone: PrivacyTier | None = None
    if isinstance(site, Datacenter):
        home = cand.datacenter_capacity(site).home[tier.effective.rank]
        if home is None:
            return f"no racks of a privacy zone that may hold {tier.effective.value}{raised}"
        zone = cand.TIERS[home]
    pack = shapes.site_packing(env, site)
    if p.gpu:
        nodes = [s for s in pack.shapes if s.gpu_type == p.gpu.type and (zone is None or s.zone == zone)]
        if not nodes:
            if isinstance(site, CloudSite):
                return f"offers no {p.gpu.type} (has {', '.join(sorted(site.gpu_types)) or 'no GPUs'})"
            return (f"no {p.gpu.type} GPUs in the racks of privacy zone {zone.value if zone else '?'} "
                    f"(where {tier.effective.value} work runs here{raised})")
        widest = max(s.allocatable.gpus for s in nodes)
        if p.engine.kind == "vllm" and p.engine.tensor_parallel > widest and not p.engine.allow_cross_node_tensor_parallel:
            return (f"tensor_parallel {p.engine.tensor_parallel} > the {widest} {p.gpu.type} GPUs of its largest node here "
                    "(set engine.allow_cross_node_tensor_parallel, or use pipeline_parallel across nodes)")
        if p.gpu.count > widest and (p.engine.kind != "vllm" or zone is not None):
            return (f"no host with {cand.gpu_label(p.gpu.count, p.gpu.type)}" if zone is not None
                    else f"no instance type with {cand.gpu_label(p.gpu.count, p.gpu.type)} on one node")
    if p.name not in pack.fits:
        pods, need = pack.pods.get(p.name, shapes.pipeline_pod(p, site))
        what = "host" if zone is not None else (f"{p.gpu.type} instance type" if p.gpu else "CPU instance type")
        text = f"no {what} fits a replica's pod ({need.describe(p.gpu.type if p.gpu else None)}"
        text += f" on each of {pods} nodes)" if pods > 1 else ")"
        largest = shapes.largest_room(pack, need, p.gpu.type if p.gpu else None, zone)
        if largest is not None:
            shape, room = largest
            text += f"; the largest, {shape.name}, keeps {room.describe(shape.gpu_type)} per node for such pods"
        return text
    return None


def data_rejection(env: Environment, key: str, tier: PrivacyTier, site: CloudSite | Datacenter) -> str | None:
    """Why a data piece may not be kept at `site`: privacy, or its pods fit no node there."""
    why = cand.data_rejection(env, tier, site) if tier not in cand.allowed_tiers(site) else None
    if why is None and key not in shapes.site_packing(env, site).fits:
        return "no node fits its pods"
    return why


def static_infeasibility(env: Environment, el: Eligibility) -> list[InfeasibleReason]:
    """Per-pipeline contradictions that no amount of capacity can fix."""
    reasons = []
    for p in env.pipelines:
        need = f" with {cand.gpu_label(p.gpu.count, p.gpu.type)}" if p.gpu else ""
        tier = pipeline_tier(env, p)
        # a tier raised by data flow names the dependency (or shadow) that forced it, with its spec field
        forced = f" (declared {tier.declared.value}; {tier.because()})" if tier.raised else ""
        downgrade = "declare a downgrade on the dependency that raised it (dependencies[i].downgrade: {to, reason}), " \
            if any(not f.is_shadow for f in tier.raised_by) else ""
        if not el.sites[p.name]:
            detail = "; ".join(f"{s}: {why}" for s, why in el.rejected[p.name].items())
            reasons.append(InfeasibleReason(p.name, "eligibility", f"no site can hold {tier.effective.value}{need}{forced}: {detail}",
                                            f"{downgrade}allow the tier on a site, offer the GPU type, or relax pinned_sites"))
            continue
        for r in el.demand[p.name]:
            if not el.routes[(p.name, r)]:
                whys = []
                for s in env.sites:
                    why = el.rejected[p.name].get(s.name) or cand.route_rejection(env, p, r, s)
                    whys.append(f"{s.name}: {why}")
                reasons.append(InfeasibleReason(
                    p.name, "latency/privacy",
                    f"no site allowed for {tier.effective.value} within {p.latency.network_budget_ms:g} ms of {r}{need}{forced} "
                    f"(SLO {p.latency.p99_ms:g} ms - service {p.latency.service_ms:g} ms): " + "; ".join(whys),
                    f"{downgrade}raise latency.p99_ms, add a closer allowed site, or drop demand_rps for that region"))
        if len(el.sites[p.name]) < p.spread.min_sites:
            reasons.append(InfeasibleReason(
                p.name, "spread", f"spread.min_sites={p.spread.min_sites} but only {len(el.sites[p.name])} site(s) "
                f"are eligible: {', '.join(el.sites[p.name])}", "lower spread.min_sites"))
    return reasons
