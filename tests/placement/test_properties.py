"""Property tests: on generated specs, every plan honours privacy, SLO, capacity, spread; infeasible specs are explained."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infra.errors import PlacementInfeasible, SpecError
from infra.loader import parse_environment
from infra.spec import PrivacyTier
from policies.facts import context_for
from policies.placement import candidates as cand
from policies.placement import solve
from policies.placement.eligibility import site_rejection
from policies.rules import RULES_BY_NAME, evaluate
from tests.conftest import dump
from tests.placement.invariants import assert_plan_valid

REGIONS = [("us-east", "US"), ("us-west", "US"), ("eu-west", "EU")]
TIERS = ["public", "internal", "pii", "restricted"]


@st.composite
def specs(draw):
    regions = REGIONS[: draw(st.integers(1, 3))]
    n_cloud = draw(st.integers(0, 2))
    n_dc = draw(st.integers(1 if n_cloud == 0 else 0, 2))
    sites = []
    for i in range(n_cloud):
        sites.append({
            "kind": "cloud", "name": f"cloud-{i}", "region": f"us-east-{i + 1}", "zones": [f"us-east-{i + 1}a"],
            "vpc_cidr": f"172.{16 + i}.0.0/16",   # each region its own range, apart from the datacenters' 10.x hosts
            "jurisdiction": draw(st.sampled_from(["US", "EU"])),
            "privacy_tiers": draw(st.sampled_from([["public", "internal"], ["public", "internal", "pii"]])),
            "instance_types": [
                {"name": "g6.xlarge", "vcpus": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1, "memory_gib": 24},
                 "hourly_usd": draw(st.sampled_from([0.8, 0.9])), "max_nodes": draw(st.sampled_from([None, 4, 20]))},
                {"name": "m7i.2xlarge", "vcpus": 8, "memory_gib": 32, "hourly_usd": 0.4},
            ],
            "vcpu_quotas": {"G": draw(st.sampled_from([16, 64, 400]))},
        })
    for i in range(n_dc):
        racks = []
        for r in range(draw(st.integers(1, 3))):
            racks.append({"name": f"r{r}", "privacy_zone": draw(st.sampled_from(TIERS)),
                          "host_pools": [{"count": draw(st.integers(1, 4)), "name_prefix": f"d{i}-r{r}-h",
                                          "first_address": f"10.{i}.{r}.10", "cores": draw(st.sampled_from([16, 32, 64])),
                                          "memory_gib": 128}]})
        sites.append({"kind": "datacenter", "name": f"dc-{i}", "jurisdiction": draw(st.sampled_from(["US", "EU"])),
                      "country": "US", "network_zone": "wan", "racks": racks})
    names = [s["name"] for s in sites]
    user_rtt = {r: {s: draw(st.integers(2, 150)) for s in names} for r, _ in regions}
    site_rtt = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            site_rtt.setdefault(a, {})[b] = draw(st.integers(1, 120))
    pipelines = []
    for k in range(draw(st.integers(1, 5))):
        gpu = draw(st.booleans()) and n_cloud > 0
        p = {"name": f"p{k}", "model": "m", "privacy_tier": draw(st.sampled_from(TIERS)),
             "capacity_rps": draw(st.sampled_from([5, 20, 100])),
             "demand_rps": {r: draw(st.sampled_from([0, 10, 60, 200])) for r, _ in regions},
             "latency": {"p99_ms": draw(st.sampled_from([60, 120, 400])), "service_ms": 30},
             "min_replicas": draw(st.integers(0, 3)),
             "spread": {"min_sites": draw(st.integers(1, 2)), "min_replicas_per_site": draw(st.integers(1, 2))}}
        if gpu:
            p["engine"] = {"kind": "triton"}
            p["resources"] = {"cpu": 2, "memory_gib": 8, "gpu": {"type": "L4", "count": 1}}
        else:
            p["engine"] = {"kind": "cpu", "image": "ghcr.io/x/svc:1.0"}
            p["resources"] = {"cpu": draw(st.sampled_from([1, 4, 8])), "memory_gib": 4}
        if sum(p["demand_rps"].values()) == 0 and p["min_replicas"] == 0:
            p["min_replicas"] = 1
        pipelines.append(p)
    # data flows (infra/dataflow.py): reads of views of any tier, some with a declared downgrade, and a shadow
    views = [{"name": f"v{k}", "entities": ["user_id"], "privacy_tier": draw(st.sampled_from(TIERS))}
             for k in range(draw(st.integers(0, 2)))]
    for p in pipelines:
        if views and draw(st.booleans()):
            view = draw(st.sampled_from(views))
            dep: dict = {"feature_view": view["name"], "latency_budget_ms": 200}
            lower = TIERS[:TIERS.index(view["privacy_tier"])]
            if lower and draw(st.booleans()):
                dep["downgrade"] = {"to": draw(st.sampled_from(lower)), "reason": "aggregates only"}
            p["dependencies"] = [dep]
    if len(pipelines) > 1 and pipelines[0]["engine"]["kind"] == pipelines[1]["engine"]["kind"] and draw(st.booleans()):
        pipelines[0]["shadow"] = {"target": pipelines[1]["name"], "percent": 50}
    return {"name": "gen", "user_regions": [{"name": r, "jurisdiction": j} for r, j in regions], "sites": sites,
            "network": {"user_rtt_ms": user_rtt, "site_rtt_ms": site_rtt}, "pipelines": pipelines, "feature_views": views}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_plans_hold_every_invariant_or_explain_why_not(spec):
    try:
        env = parse_environment(dump(spec), "gen.yaml")
    except SpecError as exc:  # generated specs may be invalid (e.g. zone naming): must still name a field
        assert all(i.path for i in exc.issues)
        return
    try:
        plan = solve(env, time_limit=20)
    except PlacementInfeasible as exc:
        assert exc.reasons
        for r in exc.reasons:
            assert r.constraint in {"eligibility", "latency/privacy", "spread", "capacity"}, r
            assert r.detail
            if r.constraint == "latency/privacy":
                # the claim is checkable: really no site within SLO for that pipeline/region
                p = env.pipeline(r.pipeline)
                region = r.detail.split(" of ")[1].split(" ")[0]
                for site in env.sites:
                    assert (site_rejection(env, p, site) is not None
                            or cand.route_rejection(env, p, region, site) is not None)
        return
    assert_plan_valid(env, plan)
    again = solve(env, time_limit=20)
    assert again.decisions() == plan.decisions()
    for pp in plan.pipelines:
        tier = PrivacyTier(pp.privacy_tier)
        if tier.is_sensitive:
            assert all(env.site_allows(env.site(s), tier) for s in pp.replicas)
    # the plan passes the data-flow rules it was placed by
    assert evaluate([RULES_BY_NAME["data-flow-tier"], RULES_BY_NAME["mirror-target-tier"]], [], context_for(env, plan)) == []


def test_generator_can_produce_feasible_specs():
    """Guard against a generator that only ever yields infeasible specs (the property would be vacuous)."""
    feasible = 0

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(specs())
    def count(spec):
        nonlocal feasible
        try:
            solve(parse_environment(dump(spec)), time_limit=20)
            feasible += 1
        except (PlacementInfeasible, SpecError):
            pass

    count()
    assert feasible >= 5, feasible


@pytest.mark.parametrize("seed", range(3))
def test_scaled_fleet_plan_is_valid(seed):
    from tools.generate import generate

    env = parse_environment(dump(generate("dev", 1, seed=seed)))
    assert_plan_valid(env, solve(env))
