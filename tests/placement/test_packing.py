"""Whole replicas on whole nodes: every plan packs pod by pod (first-fit decreasing) into the nodes it buys or uses.

Property tests over generated fleets (tools/generate.py, random seeds) and hand-made specs with awkward shapes
(3-GPU replicas on 4-GPU nodes, 20-core replicas on 32-core hosts, data pods that fit some nodes only), the
first-fit checker itself, the slot rounding, and the explanations of a replica that fits no node.
"""
from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hybridml.cli import app
from infra.errors import PlacementInfeasible, SpecError
from infra.loader import parse_environment
from policies.placement import solve
from policies.placement.explain import node_groups, node_pods
from policies.placement.greedy import greedy_solution
from policies.placement.packing import Pods, first_fit_decreasing, group_problems, packing_problems
from policies.placement.plan import NodeGroup
from policies.placement.shapes import Need, NodeShape, divisible_chain, per_node, site_packing
from tests.conftest import dump
from tests.placement.invariants import assert_plan_valid

INSTANCE_TYPES = [
    {"name": "g6.xlarge", "vcpus": 4, "memory_gib": 16, "gpu": {"type": "L4", "count": 1, "memory_gib": 24}, "hourly_usd": 0.805},
    {"name": "g6.12xlarge", "vcpus": 48, "memory_gib": 192, "gpu": {"type": "L4", "count": 4, "memory_gib": 24}, "hourly_usd": 4.602},
    {"name": "g6.48xlarge", "vcpus": 192, "memory_gib": 768, "gpu": {"type": "L4", "count": 8, "memory_gib": 24}, "hourly_usd": 13.35},
    {"name": "m7i.2xlarge", "vcpus": 8, "memory_gib": 32, "hourly_usd": 0.4},
    {"name": "c7i.8xlarge", "vcpus": 32, "memory_gib": 64, "hourly_usd": 1.428},
    {"name": "r7i.8xlarge", "vcpus": 32, "memory_gib": 256, "hourly_usd": 2.117},
]


def _site(name: str, kind: str, **extra) -> dict:
    if kind == "cloud":
        return {"kind": "cloud", "name": name, "region": "us-east-1", "zones": ["us-east-1a"], "jurisdiction": "US",
                "vpc_cidr": "10.0.0.0/16", **extra}
    return {"kind": "datacenter", "name": name, "jurisdiction": "US", "country": "US", "network_zone": "wan", **extra}


def _spec(sites: list[dict], pipelines: list[dict], **extra) -> dict:
    names = [s["name"] for s in sites]
    site_rtt: dict[str, dict[str, int]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            site_rtt.setdefault(a, {})[b] = 3
    return {"name": "pack", "user_regions": [{"name": "us-east", "jurisdiction": "US"}], "sites": sites,
            "network": {"user_rtt_ms": {"us-east": {s: 5 for s in names}}, "site_rtt_ms": site_rtt},
            "pipelines": pipelines, **extra}


def _pipeline(name: str, cpu: float, mem: float, gpus: int = 0, demand: float = 100, rps: float = 10, **extra) -> dict:
    p = {"name": name, "model": "m", "capacity_rps": rps, "target_utilization": 1, "demand_rps": {"us-east": demand},
         "latency": {"p99_ms": 500, "service_ms": 50}, "resources": {"cpu": cpu, "memory_gib": mem}, **extra}
    if gpus:
        p["resources"]["gpu"] = {"type": "L4", "count": gpus}
        p.setdefault("engine", {"kind": "triton"})
    else:
        p.setdefault("engine", {"kind": "cpu", "image": "ghcr.io/x/svc:1.0"})
    return p


def _greedy_packs(env) -> list[str]:
    """The greedy baseline's placement, as node groups, must pack too (it uses the same slot tables)."""
    sol = greedy_solution(env)
    out = []
    for site in env.sites:
        replicas = {p: n for (p, s), n in sol.replicas.items() if s == site.name and n}
        data = sorted(d for d, s in sol.data if s == site.name)
        split = {(item, shape): n for (item, s, shape), n in sol.shapes.items() if s == site.name}
        nodes = {it: n for (s, it), n in sol.nodes.items() if s == site.name}
        on = node_pods(env, site, replicas, data, split)
        for group in node_groups(env, site, on, nodes):
            out.extend(group_problems(env, site, group))
    return out


# ---------------------------------------------------------------- the pieces


def test_first_fit_decreasing_packs_whole_pods_only():
    shape = NodeShape("s", "g6.12xlarge", None, None, "L4", Need(4, 43.2, 172.8))
    three = Pods("big", Need(3, 4, 16), 4)
    one = Pods("small", Need(1, 2, 8), 4)
    # four 3-GPU pods need four 4-GPU nodes, whatever the GPU total says (12 <= 3 x 4)
    assert first_fit_decreasing(shape, 3, [three]) == {"big": 1}
    assert first_fit_decreasing(shape, 4, [three, one]) == {}          # the 1-GPU pods fill the gaps
    assert first_fit_decreasing(shape, 4, [three, one, Pods("more", Need(1, 2, 8), 1)]) == {"small": 1}  # ties by name
    # cores bind as well as GPUs: 20-core pods on 28.8-core hosts, one per host
    host = NodeShape("dc", "32c-128GiB", None, 3, None, Need(0, 28.8, 115.2))
    assert first_fit_decreasing(host, 3, [Pods("wide", Need(0, 20, 8), 4)]) == {"wide": 1}


def test_fractional_slots_would_not_pack_so_the_model_rounds_onto_a_divisibility_chain():
    """1 x 15, 2 x 10 and 4 x 6 cores on two 30-core hosts: 59 <= 60 cores and 1/2 + 2/3 + 4/5 < 2 node-shares,
    yet no packing into two hosts exists. Rounded onto one chain, the shares say three hosts are needed."""
    host = NodeShape("dc", "30c", None, 2, None, Need(0, 30, 1000))
    pods = [Pods("a", Need(0, 15, 1), 1), Pods("b", Need(0, 10, 1), 2), Pods("c", Need(0, 6, 1), 4)]
    assert first_fit_decreasing(host, 2, pods) != {}
    ks = {name: per_node(host.allocatable, need) for name, need in (("a", pods[0].need), ("b", pods[1].need), ("c", pods[2].need))}
    assert ks == {"a": 2, "b": 3, "c": 5}
    chain = divisible_chain({2: 1.0, 3: 2.0, 5: 4.0})
    shares = 1 / chain[2] + 2 / chain[3] + 4 / chain[5]
    assert shares > 2


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(1, 300), st.floats(0.01, 100), min_size=1, max_size=8))
def test_divisible_chain_rounds_down_onto_one_chain(weights):
    chain = divisible_chain(weights)
    assert set(chain) == set(weights)
    values = sorted(set(chain.values()))
    assert all(1 <= chain[k] <= k for k in weights)
    assert all(b % a == 0 for a, b in itertools.pairwise(values))
    # nothing is lost when the ks already form a chain
    if all(b % a == 0 for a, b in itertools.pairwise(sorted(weights))):
        assert chain == {k: k for k in weights}


def test_pods_of_a_datacenter_gpu_host_split_between_gpu_and_other_pods(small_spec):
    small_spec["sites"][1]["racks"].append(
        {"name": "r3", "privacy_zone": "internal",
         "host_pools": [{"count": 2, "name_prefix": "ash-r3-h", "first_address": "10.1.3.10", "cores": 64, "memory_gib": 256,
                         "gpu": {"type": "L4", "count": 4, "memory_gib": 24}}]})
    small_spec["pipelines"].append(_pipeline("rank", 4, 16, gpus=1, demand=50))
    env = parse_environment(dump(small_spec))
    pack = site_packing(env, env.site("dc-ash"))
    gpu_host = next(s for s in pack.shapes if s.gpu_type == "L4")
    # GPU pods get the GPUs and 4 cores / 16 GiB per GPU; the other pods the rest of the host
    assert (gpu_host.gpu_cores, gpu_host.gpu_memory_gib) == (16, 64)
    assert gpu_host.part(False) == Need(0, 64 * 0.9 - 16, 256 * 0.9 - 64)
    plan = solve(env)
    assert_plan_valid(env, plan)


# ---------------------------------------------------------------- plans pack


def test_three_gpu_replicas_buy_a_whole_node_each():
    """The issue's example: 3-GPU replicas on 4-GPU nodes. Counting GPUs in total, 8 replicas (24 GPUs)
    fit 6 nodes; pod by pod they need 8."""
    cloud = _site("aws", "cloud", instance_types=[INSTANCE_TYPES[1], INSTANCE_TYPES[3]], vcpu_quotas={"G": 4096})
    env = parse_environment(dump(_spec([cloud], [_pipeline("tri", 8, 32, gpus=3, demand=80)])))
    plan = solve(env)
    assert_plan_valid(env, plan)
    assert plan.pipeline("tri").replicas == {"aws": 8}
    assert plan.site("aws").nodes == {"g6.12xlarge": 8}
    assert plan.cost_usd_per_hour == pytest.approx(8 * 4.602)
    group = plan.site("aws").node_groups[0]
    assert (group.shape, group.nodes, group.pods) == ("g6.12xlarge", 8, {"tri": 8})


def test_big_replicas_on_small_hosts_stay_where_they_fit():
    """20-core replicas on 32-core hosts (28.8 cores after the system reserve): one per host, not 1.44."""
    dc = _site("dc", "datacenter", racks=[{"name": "r1", "host_pools": [
        {"count": 4, "name_prefix": "h", "first_address": "10.200.0.10", "cores": 32, "memory_gib": 128}]}])
    cloud = _site("aws", "cloud", instance_types=[INSTANCE_TYPES[4]], vcpu_quotas={"standard": 4096})
    env = parse_environment(dump(_spec([dc, cloud], [_pipeline("wide", 20, 16, demand=60)])))
    plan = solve(env)
    assert_plan_valid(env, plan)
    assert plan.pipeline("wide").replicas == {"dc": 4, "aws": 2}    # 4 hosts hold 4; the other 2 on 32-vCPU nodes
    assert plan.site("aws").nodes == {"c7i.8xlarge": 2}


def test_data_pods_count_where_they_fit(small_spec):
    """A collection's replicas are pods of their own (here 3 x 40 GiB): they go only where a node holds one
    (not the 32 GiB cloud nodes), and every one of them is on a node group of its site."""
    from policies.placement.eligibility import eligibility

    small_spec["collections"] = [{"name": "docs", "dimensions": 8, "memory_gib": 40, "cpu": 2, "replication_factor": 3}]
    small_spec["pipelines"][1].update(privacy_tier="internal")
    small_spec["pipelines"][1]["dependencies"] = [{"collection": "docs", "latency_budget_ms": 5}]
    env = parse_environment(dump(small_spec))
    assert eligibility(env).data_sites["collection:docs"] == ["dc-ash", "dc-ams"]
    plan = solve(env)
    assert_plan_valid(env, plan)
    docs = next(d for d in plan.data if d.name == "docs")
    assert docs.sites
    for s in docs.sites:
        assert sum(g.pods.get("collection:docs", 0) for g in plan.site(s).node_groups) == 3


@st.composite
def awkward_specs(draw):
    """One region; a cloud site with 4-GPU L4 and big-memory CPU nodes plus a random subset of the others; often
    a datacenter with hosts of random (awkward) shapes; GPU replicas of 1 to 8 GPUs, CPU replicas of up to 26
    cores, data pieces whose pods fit some nodes only."""
    types = [dict(t) for t in INSTANCE_TYPES if t["name"] in ("g6.12xlarge", "r7i.8xlarge") or draw(st.booleans())]
    for t in types:
        t["max_nodes"] = draw(st.sampled_from([None, None, None, 4, 12]))
    sites = [_site("aws", "cloud", instance_types=types, vcpu_quotas={"G": draw(st.sampled_from([192, 4096, 4096])),
                                                                      "standard": draw(st.sampled_from([64, 4096, 4096]))})]
    zones = set()
    if draw(st.integers(0, 3)):
        racks = []
        for r in range(draw(st.integers(1, 2))):
            pool = {"count": draw(st.integers(1, 4)), "name_prefix": f"r{r}h", "first_address": f"10.200.{r}.10",
                    "cores": draw(st.sampled_from([16, 32, 64])), "memory_gib": draw(st.sampled_from([64, 128, 512]))}
            if draw(st.integers(0, 2)) == 0:
                pool["gpu"] = {"type": "L4", "count": draw(st.sampled_from([2, 4])), "memory_gib": 24}
            zones.add(draw(st.sampled_from(["internal", "pii"])))
            racks.append({"name": f"r{r}", "privacy_zone": sorted(zones)[-1], "host_pools": [pool]})
        sites.append(_site("dc", "datacenter", racks=racks))
    views = [{"name": f"v{i}", "entities": ["id"], "online_memory_gib": draw(st.sampled_from([4, 16, 40])),
              "online_cpu": draw(st.sampled_from([1, 2]))} for i in range(draw(st.integers(0, 2)))]
    cols = [{"name": f"c{i}", "dimensions": 8, "memory_gib": draw(st.sampled_from([8, 48])), "cpu": draw(st.sampled_from([1, 4])),
             "replication_factor": draw(st.integers(1, 3))} for i in range(draw(st.integers(0, 1)))]
    pipelines = []
    for k in range(draw(st.integers(1, 5))):
        tier = draw(st.sampled_from(["internal", "internal", "pii"])) if "pii" in zones else "internal"
        if draw(st.booleans()):
            gpus = draw(st.sampled_from([1, 2, 3, 4, 8]))
            engine = {"kind": "vllm", "tensor_parallel": 1, "pipeline_parallel": gpus} if gpus > 4 else {"kind": "triton"}
            p = _pipeline(f"p{k}", draw(st.sampled_from([1, 4, 8, 20])), draw(st.sampled_from([4, 16, 64, 150])), gpus=gpus,
                          engine=engine, privacy_tier=tier)
        else:
            p = _pipeline(f"p{k}", draw(st.sampled_from([1, 3, 8, 20, 26])), draw(st.sampled_from([2, 8, 16, 60, 100])),
                          privacy_tier=tier)
        p["demand_rps"] = {"us-east": draw(st.sampled_from([0, 10, 45, 120]))}
        p["capacity_rps"] = 25
        p["min_replicas"] = draw(st.integers(1, 3))
        data = [{"feature_view": v["name"], "latency_budget_ms": 10} for v in views] + \
               [{"collection": c["name"], "latency_budget_ms": 10} for c in cols]
        if data and draw(st.booleans()):
            p["dependencies"] = [draw(st.sampled_from(data))]
        pipelines.append(p)
    return _spec(sites, pipelines, feature_views=views, collections=cols)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(awkward_specs())
def test_every_plan_of_an_awkward_spec_packs_by_first_fit_decreasing(spec):
    try:
        env = parse_environment(dump(spec), "awkward.yaml")
    except SpecError as exc:
        assert all(i.path for i in exc.issues)
        return
    try:
        plan = solve(env, time_limit=10)
    except PlacementInfeasible as exc:
        assert exc.reasons and all(r.detail for r in exc.reasons)
        return
    assert packing_problems(env, plan) == []
    assert_plan_valid(env, plan)
    assert _greedy_packs(env) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_every_plan_of_a_generated_fleet_packs_by_first_fit_decreasing(seed):
    from tools.generate import generate

    env = parse_environment(dump(generate("dev", 1, seed=seed)))
    plan = solve(env, time_limit=20)
    assert packing_problems(env, plan) == []
    assert _greedy_packs(env) == []


def test_the_checker_finds_a_plan_that_does_not_pack():
    cloud = _site("aws", "cloud", instance_types=[INSTANCE_TYPES[1]], vcpu_quotas={"G": 4096})
    env = parse_environment(dump(_spec([cloud], [_pipeline("tri", 8, 32, gpus=3, demand=40)])))
    plan = solve(env)
    assert packing_problems(env, plan) == []
    site = plan.site("aws")
    short = site.model_copy(update={"nodes": {"g6.12xlarge": 3},
                                    "node_groups": [NodeGroup(shape="g6.12xlarge", nodes=3, pods={"tri": 4})]})
    bad = plan.model_copy(update={"sites": [short]})
    assert packing_problems(env, bad) == ["aws/g6.12xlarge: 1 pod(s) of tri fit none of the 3 node(s) (first-fit decreasing)"]
    lost = plan.model_copy(update={"sites": [site.model_copy(update={"node_groups": []})]})
    assert "aws: tri has 4 pod(s) placed but 0 on its node groups" in packing_problems(env, lost)


# ---------------------------------------------------------------- explanations


def test_explain_names_the_need_and_the_largest_node(tmp_path, small_spec):
    """A replica that fits no node of a site is not placed there, and `--explain` says why: its pod's need
    and the largest node the site has for it."""
    small_spec["pipelines"][1].update(privacy_tier="internal", dependencies=[], resources={"cpu": 20, "memory_gib": 16})
    small_spec["pipelines"][1]["demand_rps"] = {"us-east": 100, "eu-west": 0}
    path = tmp_path / "env.yaml"
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["plan", str(path), "--explain", "recs"])
    assert result.exit_code == 0, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert ("- aws-use1: no CPU instance type fits a replica's pod (20 cores, 16 GiB); the largest, m7i.2xlarge, "
            "keeps 7.2 cores, 28.8 GiB per node for such pods") in text
    assert "+ dc-ash: 2 replica(s)" in text                     # one per 28.8-core host
    # 30 cores fit no node anywhere: infeasible, and the reason names each site's largest node
    small_spec["pipelines"][1]["resources"] = {"cpu": 30, "memory_gib": 16}
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["plan", str(path), "--explain", "recs"])
    assert result.exit_code == 1, result.output
    text = re.sub(r"\s+", " ", result.output)
    assert "dc-ash: no host fits a replica's pod (30 cores, 16 GiB); the largest, 32c-128GiB, keeps 28.8 cores, 115.2 GiB" in text


def test_tensor_parallel_across_nodes_needs_an_opt_in(tmp_path, small_spec):
    small_spec["pipelines"][0]["engine"] = {"kind": "vllm", "tensor_parallel": 16}
    small_spec["pipelines"][0]["resources"]["gpu"]["count"] = 16
    with pytest.raises(SpecError) as info:
        parse_environment(dump(small_spec), "tp.yaml")
    issue = next(i for i in info.value.issues if i.path[-1] == "tensor_parallel")
    assert issue.path == ("pipelines", 0, "engine", "tensor_parallel")
    assert "exceeds the 8 H100 GPUs of the largest node" in issue.message
    assert "tensor_parallel: 8, pipeline_parallel: 2" in issue.message and "allow_cross_node_tensor_parallel" in issue.message
    path = tmp_path / "tp.yaml"
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert re.search(r"tp\.yaml:\d+: pipelines\[0\]\.engine\.tensor_parallel: tensor_parallel 16 exceeds", result.output)
    # pipeline parallel across nodes is the fix; the opt-in keeps tensor parallel across nodes
    small_spec["pipelines"][0]["engine"] = {"kind": "vllm", "tensor_parallel": 8, "pipeline_parallel": 2}
    env = parse_environment(dump(small_spec))
    assert env.pipeline("chat").engine.tensor_parallel == 8
    small_spec["pipelines"][0]["engine"] = {"kind": "vllm", "tensor_parallel": 16, "allow_cross_node_tensor_parallel": True}
    small_spec["sites"][0]["vcpu_quotas"]["P"] = 192 * 8
    env = parse_environment(dump(small_spec))
    plan = solve(env)
    assert_plan_valid(env, plan)
    assert plan.site("aws-use1").nodes["p5.48xlarge"] == 2 * plan.pipeline("chat").total_replicas   # 2 nodes per replica
