from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import PlacementInfeasible
from infra.loader import load_environment, parse_environment
from policies.placement import solve
from policies.placement.greedy import greedy_baseline
from tests.conftest import dump
from tests.placement.invariants import assert_plan_valid


def test_small_spec_places_pii_on_prem_and_gpus_in_cloud(small_spec):
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    recs = plan.pipeline("recs")
    # pii demand from eu-west stays in the EU datacenter, from us-east in the US one
    assert recs.routing["eu-west"] == {"dc-ams": 1.0}
    assert recs.routing["us-east"] == {"dc-ash": 1.0}
    assert "aws-use1" in recs.explanation.rejected and "privacy" in recs.explanation.rejected["aws-use1"]
    chat = plan.pipeline("chat")
    assert set(chat.replicas) == {"aws-use1"}  # the only H100 site
    assert chat.total_replicas == 4  # ceil(25 rps / (10 * 0.7))
    assert plan.site("aws-use1").nodes["p5.48xlarge"] == 4
    # the pii feature view lives next to its reader, in both datacenters
    view = next(d for d in plan.data if d.name == "user-profile")
    assert view.sites == ["dc-ams", "dc-ash"]


def test_cpu_work_prefers_own_datacenters(small_spec):
    small_spec["pipelines"][1]["privacy_tier"] = "internal"
    small_spec["pipelines"][1]["dependencies"] = []
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert set(plan.pipeline("recs").replicas) <= {"dc-ash", "dc-ams"}
    assert "cost" in plan.pipeline("recs").explanation.rejected["aws-use1"]


def test_latency_infeasible_names_pipeline_region_and_sites(small_spec):
    small_spec["pipelines"][1]["demand_rps"]["eu-west"] = 200
    small_spec["sites"] = small_spec["sites"][:2]  # drop the EU datacenter
    small_spec["network"]["user_rtt_ms"] = {r: {s: v for s, v in row.items() if s != "dc-ams"}
                                            for r, row in small_spec["network"]["user_rtt_ms"].items()}
    small_spec["network"]["site_rtt_ms"] = {"aws-use1": {"dc-ash": 2}}
    env = parse_environment(dump(small_spec))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    reasons = info.value.reasons
    assert len(reasons) == 1
    r = reasons[0]
    assert r.pipeline == "recs"
    assert "no site allowed for pii within 60 ms of eu-west" in r.detail
    assert "aws-use1: privacy" in r.detail and "dc-ash: jurisdiction" in r.detail


def test_capacity_infeasible_names_site_and_limit(small_spec):
    small_spec["sites"][0]["vcpu_quotas"]["P"] = 192  # one p5 node: 8 GPUs, but 4 replicas x 8 are needed
    env = parse_environment(dump(small_spec))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    text = str(info.value)
    assert "aws-use1: on-demand P vCPU quota short by 576 vCPUs" in text
    assert "chat" in text


def test_gpu_type_without_site_in_tier_is_infeasible(small_spec):
    small_spec["pipelines"][0]["privacy_tier"] = "restricted"
    env = parse_environment(dump(small_spec))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    assert info.value.reasons[0].pipeline == "chat"
    assert "no site can hold restricted with 8xH100" in info.value.reasons[0].detail


def test_min_sites_and_variants_spread(small_spec):
    small_spec["pipelines"][1]["privacy_tier"] = "internal"
    small_spec["pipelines"][1]["dependencies"] = []
    small_spec["pipelines"][1]["spread"] = {"min_sites": 3, "min_replicas_per_site": 2}
    small_spec["pipelines"][1]["variants"] = [{"name": "a", "model": "m", "weight": 50},
                                              {"name": "b", "model": "m", "weight": 30},
                                              {"name": "c", "model": "m", "weight": 20}]
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    recs = plan.pipeline("recs")
    assert len(recs.replicas) == 3 and min(recs.replicas.values()) >= 3


def test_shadow_adds_mirrored_load_to_target(small_spec):
    target = json.loads(json.dumps(small_spec["pipelines"][1]))
    target.update(name="recs-v2", demand_rps={}, min_replicas=1)
    small_spec["pipelines"].append(target)
    small_spec["pipelines"][1]["shadow"] = {"target": "recs-v2", "percent": 50}
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    # half of the mirrored 300 + 200 rps, per jurisdiction, at 70 rps per replica
    assert plan.pipeline("recs-v2").replicas == {"dc-ash": 3, "dc-ams": 2}


def test_plan_is_deterministic(small_spec):
    env = parse_environment(dump(small_spec))
    assert solve(env).decisions() == solve(env).decisions()


def test_local_environment_plan_and_explanations():
    env = load_environment("local")
    plan = solve(env)
    assert_plan_valid(env, plan)
    for pp in plan.pipelines:
        assert pp.explanation.summary and pp.explanation.chosen
        assert set(pp.explanation.rejected) == {s.name for s in env.sites} - set(pp.replicas)
    assert plan.pipeline("recs-home").replicas.keys() == {"dc-local"}
    assert plan.gap_to_lp >= 0


def test_greedy_baseline_costs_at_least_optimal(small_spec):
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    base = greedy_baseline(env)
    assert base.feasible
    assert base.cost_usd_per_hour >= plan.cost_usd_per_hour - 1e-6


def test_cli_plan_json_and_explain(tmp_path):
    out = tmp_path / "plan.json"
    svg = tmp_path / "plan.svg"
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "local", "--json", str(out), "--svg", str(svg)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {p["name"] for p in data["pipelines"]} >= {"chat-small", "recs-home"}
    assert "dc-local" in result.output and "optimal/greedy" in result.output
    assert svg.read_text().startswith("<svg") and "dc-local" in svg.read_text()
    result = runner.invoke(app, ["plan", "local", "--explain", "recs-home"])
    assert result.exit_code == 0
    assert "rejected" in result.output and "aws-use1: privacy" in result.output
    result = runner.invoke(app, ["plan", "local", "--explain", "nope"])
    assert result.exit_code == 2


def test_cli_infeasible_exits_1(tmp_path, small_spec):
    small_spec["sites"][0]["vcpu_quotas"]["P"] = 0
    path = tmp_path / "env.yaml"
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 1
    assert "infeasible" in result.output and "quota" in result.output


def test_gpu_replicas_get_nodes_their_pods_fit_on(small_spec):
    """Found by the sim fleet: GPUs were pooled per type, so a 2xL4 replica with 8 cores and 64 GiB was
    'placed' on 1-GPU, 16 GiB g6.xlarge nodes and its pods stayed Pending. Pods must fit their nodes."""
    site = small_spec["sites"][0]
    site["instance_types"].append({"name": "g6.12xlarge", "vcpus": 48, "memory_gib": 192,
                                   "gpu": {"type": "L4", "count": 4, "memory_gib": 24}, "hourly_usd": 4.6})
    site["vcpu_quotas"]["G"] = 512
    small_spec["pipelines"].append(
        {"name": "moderation", "engine": {"kind": "vllm", "tensor_parallel": 2}, "model": "m/moderation",
         "resources": {"cpu": 8, "memory_gib": 64, "gpu": {"type": "L4", "count": 2}}, "capacity_rps": 10,
         "demand_rps": {"us-east": 30}, "latency": {"p99_ms": 2000, "service_ms": 1000}})
    small_spec["pipelines"].append(
        {"name": "classifier", "engine": {"kind": "triton", "model_format": "onnx"}, "model": "s3://m/c",
         "resources": {"cpu": 1, "memory_gib": 4, "gpu": {"type": "L4", "count": 1}}, "capacity_rps": 100,
         "demand_rps": {"us-east": 60}, "latency": {"p99_ms": 200, "service_ms": 40}})
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    nodes = plan.site("aws-use1").nodes
    moderation = plan.pipeline("moderation").replicas["aws-use1"]
    # every moderation pod (2 GPUs, 8 cores, 64 GiB) needs a g6.12xlarge; two fit on each
    assert nodes.get("g6.12xlarge", 0) * 2 >= moderation >= 5
    l4_gpus = nodes.get("g6.12xlarge", 0) * 4 + nodes.get("g6.xlarge", 0)
    assert l4_gpus >= 2 * moderation + plan.pipeline("classifier").replicas["aws-use1"]
    from policies.placement.candidates import fitting_types

    assert [it.name for it in fitting_types(env.pipeline("moderation"), env.site("aws-use1"))] == ["g6.12xlarge"]
    assert {it.name for it in fitting_types(env.pipeline("classifier"), env.site("aws-use1"))} == \
        {"g6.xlarge", "g6.12xlarge"}
    # without the big instance type no node fits the pods: the site is rejected with the reason. (With
    # 1-GPU nodes only, tensor_parallel 2 would cross nodes: the spec must opt in to even get that far.)
    site["instance_types"] = [it for it in site["instance_types"] if it["name"] != "g6.12xlarge"]
    small_spec["pipelines"][2]["engine"]["allow_cross_node_tensor_parallel"] = True
    env = parse_environment(dump(small_spec))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    assert any("fits a replica's pod (1xL4, 4 cores, 32 GiB on each of 2 nodes)" in r.detail
               and "the largest, g6.xlarge, keeps 1xL4, 3.6 cores, 14.4 GiB" in r.detail for r in info.value.reasons), info.value.reasons


def test_each_tier_counts_against_its_home_zone_only(small_spec):
    """dc-ash has one internal and one pii rack: internal (and public) work runs on the internal rack
    only, pii work on the pii rack, so internal demand beyond the internal rack goes elsewhere instead of
    taking the pii rack's room (which the kube-scheduler would then lack for pii pods)."""
    from policies.placement import candidates as cand

    env = parse_environment(dump(small_spec))
    ash = cand.datacenter_capacity(env.site("dc-ash"))
    ranks = {t: i for i, t in enumerate(("public", "internal", "pii", "restricted"))}
    assert ash.home == {0: ranks["internal"], 1: ranks["internal"], 2: ranks["pii"], 3: None}
    internal_cores = ash.by_zone[ranks["internal"]][0]
    assert internal_cores == pytest.approx(ash.total[0] / 2)

    small_spec["pipelines"][1].update(privacy_tier="internal", dependencies=[])
    small_spec["pipelines"][1]["demand_rps"] = {"us-east": 1800, "eu-west": 0}   # 18+ replicas x 4 cores
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    recs = plan.pipeline("recs")
    assert recs.replicas.get("dc-ash", 0) * 4 <= internal_cores + 1e-6
    assert sum(recs.replicas.values()) * 4 > internal_cores       # the rest went to another site


@pytest.mark.slow
@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_shipped_plans_are_valid_and_within_the_gap_of_a_proven_bound(environment):
    from policies.placement.solver import DEFAULT_MIP_GAP

    env = load_environment(environment)
    plan = solve(env)
    assert_plan_valid(env, plan)
    assert plan.status == "optimal"
    # the LP relaxation is a weaker bound than the whole-node one the search proves against
    assert plan.lp_bound_usd_per_hour <= plan.dual_bound_usd_per_hour
    assert plan.dual_bound_usd_per_hour <= plan.cost_usd_per_hour * (1 + 1e-6)
    assert (plan.cost_usd_per_hour - plan.dual_bound_usd_per_hour) / plan.cost_usd_per_hour <= DEFAULT_MIP_GAP
    assert "dive" in plan.solver


def test_search_bound_never_exceeds_the_exact_optimum(small_spec):
    """The bounds the search proves against are true lower bounds: an exact solve of the same
    model lands between the bound and the plan's objective."""
    from policies.placement import solver as S

    env = parse_environment(dump(small_spec))
    el = S.eligibility(env)
    m, v = S.build(env, el)
    exact = m.solve(mip_gap=1e-9)
    res, lp_bound, how = S._search(env, el, m, v, time_limit=30, mip_gap=0.005)
    assert exact.status == "optimal" and res.status == "optimal"
    assert lp_bound <= res.dual_bound + 1e-9 <= exact.objective + 1e-6
    assert exact.objective <= res.objective + 1e-6
    assert res.objective <= res.dual_bound * 1.005 + 1e-9


def test_search_falls_back_to_the_full_mip_when_the_dive_finds_nothing(small_spec, monkeypatch):
    from policies.placement.milp import Model

    real = Model.solve
    dives = []

    def no_dive(self, **kw):
        if kw.get("upper") is not None:  # the LP-guided dive
            dives.append(kw)
            return real(self, **{**kw, "upper": [0.0] * self.num_vars})  # infeasible: nothing may run
        return real(self, **kw)

    monkeypatch.setattr(Model, "solve", no_dive)
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert dives, "the dive was not attempted"
    assert_plan_valid(env, plan)
    assert "full MIP from the greedy start" in plan.solver
    monkeypatch.setattr(Model, "solve", real)
    # the small spec has one optimum: both paths find it
    again = solve(env)
    assert {pp.name: pp.replicas for pp in plan.pipelines} == {pp.name: pp.replicas for pp in again.pipelines}
    assert plan.cost_usd_per_hour == pytest.approx(again.cost_usd_per_hour)
