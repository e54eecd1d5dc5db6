"""Which sites each pipeline and data piece may use at all, before any optimisation.

Static decisions shared by the solver, its explanations and the greedy baseline: privacy, jurisdiction,
GPU types, pinned sites, latency SLOs per demand region and dependency budgets. Pure: spec in, sets out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from infra.errors import InfeasibleReason
from infra.spec import CloudSite, Environment
from policies.placement import candidates as cand
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


def eligibility(env: Environment) -> Eligibility:
    el = Eligibility(demand=cand.effective_demand(env))
    pieces = data_pieces(env)
    for key, piece in pieces.items():
        el.data_sites[key] = [s.name for s in env.sites if cand.data_rejection(env, piece.tier, s) is None
                              and not (isinstance(s, CloudSite) and not any(not it.gpu for it in s.instance_types))]
    for p in env.pipelines:
        ok, rejected = [], {}
        for site in env.sites:
            why = cand.site_rejection(env, p, site)
            if why is None:
                for dep in p.dependencies:
                    key = dep_key(dep)
                    near = [d for d in el.data_sites[key] if env.site_rtt(site.name, d) <= dep.latency_budget_ms + 1e-9]
                    if not near:
                        why = (f"dependency: no site allowed for {pieces[key].tier.value} {dep.kind} {dep.target!r} "
                               f"within {dep.latency_budget_ms:g} ms")
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


def static_infeasibility(env: Environment, el: Eligibility) -> list[InfeasibleReason]:
    """Per-pipeline contradictions that no amount of capacity can fix."""
    reasons = []
    for p in env.pipelines:
        need = f" with {cand.gpu_label(p.gpu.count, p.gpu.type)}" if p.gpu else ""
        if not el.sites[p.name]:
            detail = "; ".join(f"{s}: {why}" for s, why in el.rejected[p.name].items())
            reasons.append(InfeasibleReason(p.name, "eligibility", f"no site can hold {p.privacy_tier.value}{need}: {detail}",
                                            "allow the tier on a site, offer the GPU type, or relax pinned_sites"))
            continue
        for r in el.demand[p.name]:
            if not el.routes[(p.name, r)]:
                whys = []
                for s in env.sites:
                    why = el.rejected[p.name].get(s.name) or cand.route_rejection(env, p, r, s)
                    whys.append(f"{s.name}: {why}")
                reasons.append(InfeasibleReason(
                    p.name, "latency/privacy",
                    f"no site allowed for {p.privacy_tier.value} within {p.latency.network_budget_ms:g} ms of {r}{need} "
                    f"(SLO {p.latency.p99_ms:g} ms - service {p.latency.service_ms:g} ms): " + "; ".join(whys),
                    "raise latency.p99_ms, add a closer allowed site, or drop demand_rps for that region"))
        if len(el.sites[p.name]) < p.spread.min_sites:
            reasons.append(InfeasibleReason(
                p.name, "spread", f"spread.min_sites={p.spread.min_sites} but only {len(el.sites[p.name])} site(s) "
                f"are eligible: {', '.join(el.sites[p.name])}", "lower spread.min_sites"))
    return reasons
