"""Checks every valid plan must pass, shared by example tests and property tests."""
from __future__ import annotations

import math

from infra.dataflow import effective_tier, pipeline_tier
from infra.spec import CloudSite, Datacenter, Environment
from policies.placement import candidates as cand
from policies.placement.packing import packing_problems
from policies.placement.plan import PlacementPlan


def assert_plan_valid(env: Environment, plan: PlacementPlan) -> None:
    demand = cand.effective_demand(env)
    pieces = cand.data_pieces(env)
    for pp in plan.pipelines:
        p = env.pipeline(pp.name)
        tier = pipeline_tier(env, p)   # privacy follows the data: its own tier, raised by what it reads and mirrors
        assert pp.privacy_tier == tier.effective.value
        assert pp.declared_privacy_tier == (tier.declared.value if tier.raised else None)
        # privacy: every replica on a site that allows the tier, and the tier of every flow into it
        for s in pp.replicas:
            assert env.site_allows(env.site(s), p.privacy_tier), (p.name, s)
            assert env.site_allows(env.site(s), tier.effective), (p.name, s, tier.effective)
            for flow in tier.flows:
                assert env.site_allows(env.site(s), flow.counts_as), (p.name, s, flow)
            if p.pinned_sites is not None:
                assert s in p.pinned_sites
        # routing: each region with demand fully routed, only to sites with replicas, within SLO and jurisdiction
        assert set(pp.routing) == set(demand[p.name])
        for region, row in pp.routing.items():
            assert abs(sum(row.values()) - 1) < 1e-4, (p.name, region, row)
            for s, _share in row.items():
                assert s in pp.replicas
                assert env.user_rtt(region, s) + p.latency.service_ms <= p.latency.p99_ms + 1e-9
                if tier.effective.is_sensitive:
                    allowed = p.allowed_jurisdictions or [env.region(region).jurisdiction]
                    assert env.site(s).jurisdiction in allowed
        # capacity of replicas covers routed demand
        useful = p.capacity_rps * p.target_utilization
        for s, n in pp.replicas.items():
            routed = sum(demand[p.name][r] * row.get(s, 0.0) for r, row in pp.routing.items())
            # routing shares are rounded to 6 digits: allow that much of the routed demand
            assert n * useful >= routed * (1 - 2e-6) - 1e-4, (p.name, s, n, routed)
            assert n >= cand.per_site_minimum(p)
        assert pp.total_replicas >= p.min_replicas
        assert len(pp.replicas) >= p.spread.min_sites
        # dependencies within budget
        for dep in p.dependencies:
            key = f"{dep.kind}:{dep.target}"
            data = next(d for d in plan.data if f"{d.kind}:{d.name}" == key)
            for s in pp.replicas:
                assert any(env.site_rtt(s, d) <= dep.latency_budget_ms + 1e-9 for d in data.sites), (p.name, s, key)
    for d in plan.data:
        for s in d.sites:
            assert env.site_allows(env.site(s), pieces[f"{d.kind}:{d.name}"].tier)
    # capacity per site
    for sp in plan.sites:
        site = env.site(sp.name)
        if isinstance(site, CloudSite):
            for gtype, used in sp.gpus_used.items():
                have = sum(it.gpu.count * sp.nodes.get(it.name, 0) for it in site.instance_types
                           if it.gpu and it.gpu.type == gtype)
                assert used <= have, (sp.name, gtype, used, have)
            for it in site.instance_types:
                if it.max_nodes is not None:
                    assert sp.nodes.get(it.name, 0) <= it.max_nodes
            for family, quota in site.vcpu_quotas.items():
                used = sum(it.vcpus * sp.nodes.get(it.name, 0) for it in site.instance_types if it.quota_family == family)
                assert used <= quota, (sp.name, family, used, quota)
        else:
            assert isinstance(site, Datacenter)
            capacity = cand.datacenter_capacity(site)
            for zone, (cores, mem, gpus) in capacity.by_zone.items():
                # each tier's work counts against its home zone only (the racks its pods are pinned to)
                used_c = used_m = 0.0
                used_g: dict[str, int] = {}
                for pp in plan.pipelines:
                    p = env.pipeline(pp.name)
                    n = pp.replicas.get(sp.name, 0)
                    if n and capacity.home[effective_tier(env, p).rank] == zone:
                        used_c += p.resources.cpu * n
                        used_m += p.resources.memory_gib * n
                        if p.gpu:
                            used_g[p.gpu.type] = used_g.get(p.gpu.type, 0) + p.gpu.count * n
                for key in sp.data:
                    if capacity.home[pieces[key].tier.rank] == zone:
                        used_c += pieces[key].cpu
                        used_m += pieces[key].memory_gib
                assert used_c <= cores + 1e-6 and used_m <= mem + 1e-6, (sp.name, zone)
                assert all(n <= gpus.get(g, 0) for g, n in used_g.items()), (sp.name, zone, used_g, gpus)
    assert math.isfinite(plan.cost_usd_per_hour)
    # whole pods on whole nodes: every node group packs by first-fit decreasing into the nodes it has
    assert packing_problems(env, plan) == []
