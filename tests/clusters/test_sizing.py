"""Pure planners: subnets, Karpenter pools, namespace quotas (no Pulumi)."""
from __future__ import annotations

import copy
import ipaddress
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusters import sizing
from infra import labels
from infra.errors import SpecError
from infra.loader import load_environment, parse_environment
from policies.placement import solve
from tests.conftest import SMALL_SPEC, dump


@pytest.fixture(scope="module")
def dev():
    env = load_environment("dev")
    return env, solve(env)


def _cloud(vpc: str, zones: list[str]):
    spec = copy.deepcopy(SMALL_SPEC)
    spec["sites"][0]["vpc_cidr"] = vpc
    spec["sites"][0]["zones"] = zones
    return parse_environment(dump(spec)).cloud_sites[0]


@settings(max_examples=60, deadline=None)
@given(prefix=st.integers(min_value=16, max_value=20), zones=st.integers(min_value=1, max_value=6))   # AWS VPCs: /16-/28
def test_subnets_disjoint_inside_the_vpc_one_pair_per_zone(prefix, zones):
    vpc = f"10.0.0.0/{prefix}"
    site = _cloud(vpc, [f"us-east-1{chr(97 + i)}" for i in range(zones)])
    plan = sizing.subnet_plan(site)
    assert [p.zone for p in plan] == site.zones
    nets = [ipaddress.ip_network(c) for p in plan for c in (p.private_cidr, p.public_cidr)]
    for n in nets:
        assert n.subnet_of(ipaddress.ip_network(vpc)), n
    for i, a in enumerate(nets):
        for b in nets[i + 1:]:
            assert not a.overlaps(b), (a, b)
    for p in plan:   # pods take VPC addresses: private subnets are the big ones
        assert ipaddress.ip_network(p.private_cidr).num_addresses > ipaddress.ip_network(p.public_cidr).num_addresses


def test_subnets_of_a_16_over_three_zones():
    plan = sizing.subnet_plan(_cloud("10.0.0.0/16", ["us-east-1a", "us-east-1b", "us-east-1c"]))
    assert [p.private_cidr for p in plan] == ["10.0.0.0/18", "10.0.64.0/18", "10.0.128.0/18"]
    assert [p.public_cidr for p in plan] == ["10.0.192.0/20", "10.0.208.0/20", "10.0.224.0/20"]


def test_too_small_vpc_names_the_field_and_the_fix():
    with pytest.raises(SpecError, match="too small") as info:
        sizing.subnet_plan(_cloud("10.0.0.0/26", ["us-east-1a", "us-east-1b"]))
    issue = info.value.issues[0]
    assert issue.path == ("sites", "aws-use1", "vpc_cidr")
    assert "/20 or larger" in issue.message


def test_node_pools_cover_the_plan_and_respect_family_quotas(dev):
    env, plan = dev
    for site in env.cloud_sites:
        sp = plan.site(site.name)
        pools = sizing.node_pools(env, site, sp)
        by_name = {it.name: it for it in site.instance_types}
        planned_types = {t for t, n in sp.nodes.items() if n}
        assert {t for p in pools for t in p.instance_types} == planned_types
        for pool in pools:
            its = [by_name[t] for t in pool.instance_types]
            planned_vcpus = sum(sp.nodes[t] * by_name[t].vcpus for t in pool.instance_types)
            assert pool.limit_cpu >= planned_vcpus, pool
            assert pool.max_nodes >= pool.planned_nodes
            if pool.gpu_type:
                assert pool.limit_gpus >= sum(sp.nodes[t] * by_name[t].gpu.count for t in pool.instance_types)
                assert (labels.GPU_TAINT_KEY, "true", "NoSchedule") in pool.taints
                assert pool.labels[labels.GPU_PRODUCT] == labels.gpu_product(pool.gpu_type)
                assert all(it.gpu and it.gpu.type == pool.gpu_type for it in its)
            else:
                assert all(it.gpu is None for it in its)
            assert pool.labels[labels.SITE] == site.name
        for fam, quota in site.vcpu_quotas.items():
            fam_pools = [p for p in pools if by_name[p.instance_types[0]].quota_family == fam]
            planned = sum(sp.nodes[t] * by_name[t].vcpus for p in fam_pools for t in p.instance_types)
            if planned <= quota:
                assert sum(p.limit_cpu for p in fam_pools) <= quota + len(fam_pools), (fam, quota)


def test_gpu_pool_grows_by_the_autoscaling_factor_capped_by_max_nodes():
    spec = copy.deepcopy(SMALL_SPEC)
    env = parse_environment(dump(spec))
    plan = solve(env)
    site = env.cloud_sites[0]
    pools = {p.name: p for p in sizing.node_pools(env, site, plan.site(site.name))}
    h100 = pools["gpu-h100"]
    planned = plan.site(site.name).nodes["p5.48xlarge"]
    assert planned <= h100.max_nodes <= 768 // 192   # grows with autoscaling, within the tiny spec's P quota
    assert h100.limit_cpu <= 768 and h100.limit_gpus == h100.max_nodes * 8


def test_quotas_hold_every_planned_replica_at_its_autoscaling_peak(dev):
    env, plan = dev
    for site in env.sites:
        quotas = {q.namespace: q for q in sizing.namespace_quotas(env, plan, site.name)}
        assert set(quotas) == {labels.namespace_for(t) for t in sizing.site_tiers(site)}
        for name, replicas in plan.site(site.name).pipelines.items():
            p = env.pipeline(name)
            q = quotas[labels.namespace_for(p.privacy_tier)]
            assert name in q.pipelines
            assert q.cpu >= math.ceil(replicas * p.autoscaling.max_replicas_factor) * p.resources.cpu
            if p.gpu:
                assert q.gpus >= replicas * p.gpu.count
        for q in quotas.values():
            hard = q.hard()
            assert set(hard) == {"requests.cpu", "requests.memory", "pods", "requests.nvidia.com/gpu"}


def test_privacy_taint_matches_the_ansible_inventory():
    from datacenter.inventory import node_taints

    for zone in ("public", "internal", "pii", "restricted"):
        ours = [f"{k}={v}:{e}" for k, v, e in sizing.privacy_taints(zone)]
        assert ours == node_taints(zone), zone
