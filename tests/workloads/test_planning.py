"""The serving stack's decisions (workloads.planning), tested as pure functions: examples and properties."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.loader import load_environment
from infra.spec import Environment
from policies.placement import solve
from policies.placement.plan import PipelinePlacement
from tests.conftest import SMALL_SPEC
from workloads import planning

# --------------------------------------------------------------------------- integer splits


@settings(max_examples=300, deadline=None)
@given(total=st.integers(0, 5000),
       weights=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.floats(0, 1000, allow_nan=False),
                               min_size=1, max_size=8),
       at_least_one=st.booleans())
def test_split_integer_sums_exactly_and_is_near_proportional(total, weights, at_least_one):
    out = planning.split_integer(total, weights, at_least_one=at_least_one)
    assert set(out) == set(weights)
    positive = [k for k, w in weights.items() if w > 0]
    if not positive:
        assert sum(out.values()) == 0
        return
    assert sum(out.values()) == total
    assert all(out[k] == 0 for k, w in weights.items() if w <= 0)
    wsum = sum(weights[k] for k in positive)
    if at_least_one and total >= len(positive):
        assert all(out[k] >= 1 for k in positive)
    else:
        for k in positive:  # largest remainder: within one unit of the exact share
            assert abs(out[k] - total * weights[k] / wsum) < 1 + 1e-6


def test_split_integer_example():
    assert planning.split_integer(1000, {"a": 0.958084, "b": 0.041916}) == {"a": 958, "b": 42}
    assert planning.split_integer(1000, {"a": 0.9999, "b": 0.0001}, at_least_one=True) == {"a": 999, "b": 1}
    assert planning.split_integer(3, {"stable": 90, "candidate": 10}, at_least_one=True) == {"candidate": 1, "stable": 2}


# --------------------------------------------------------------------------- small spec fixtures


@pytest.fixture(scope="module")
def small():
    env = Environment.model_validate(SMALL_SPEC)
    return env, solve(env)


def test_entry_site_is_the_nearest_used_site(small):
    env, plan = small
    entries = planning.entry_sites(env, plan.used_sites())
    for region, by_class in entries.items():
        site = by_class[planning.STANDARD]
        assert env.user_rtt(region, site) == min(env.user_rtt(region, s) for s in plan.used_sites())


def test_sensitive_traffic_enters_only_where_its_tier_may_be_held():
    env = Environment.model_validate(SMALL_SPEC)
    entries = planning.entry_sites(env, ["aws-use1", "dc-ash", "dc-ams"])
    # us-east's nearest site is dc-ash (6 ms) for everything; make the cloud site nearer and check again
    assert entries["us-east"] == {"standard": "dc-ash", "pii": "dc-ash"}
    spec = {**SMALL_SPEC, "network": {**SMALL_SPEC["network"], "user_rtt_ms": {
        "us-east": {"aws-use1": 2, "dc-ash": 6, "dc-ams": 85}, "eu-west": {"aws-use1": 78, "dc-ash": 80, "dc-ams": 10}}}}
    env = Environment.model_validate(spec)
    entries = planning.entry_sites(env, ["aws-use1", "dc-ash", "dc-ams"])
    assert entries["us-east"] == {"standard": "aws-use1", "pii": "dc-ash"}
    assert entries["eu-west"] == {"standard": "dc-ams", "pii": "dc-ams"}


def test_region_route_weights_and_failover_by_rtt():
    env = Environment.model_validate(SMALL_SPEC)
    p = env.pipeline("chat")
    pp = PipelinePlacement(name="chat", engine="vllm", privacy_tier="internal",
                           replicas={"aws-use1": 2, "dc-ash": 1, "dc-ams": 1},
                           routing={"us-east": {"aws-use1": 0.7, "dc-ash": 0.3}}, latency_ms={}, slo_p99_ms=2500,
                           failover={}, cost_usd_per_hour=1,
                           explanation={"summary": ""})
    route = planning.region_route(env, p, pp, "us-east", "dc-ash")
    assert [(b.site, b.weight, b.priority) for b in route.backends] == [
        ("dc-ash", 300, 0), ("aws-use1", 700, 0), ("dc-ams", 1, 1)]
    assert sum(b.weight for b in route.primaries) == planning.WEIGHT_TOTAL


def test_sensitive_pipelines_never_fail_over_to_another_jurisdiction():
    env = Environment.model_validate(SMALL_SPEC)
    p = env.pipeline("recs")  # pii
    pp = PipelinePlacement(name="recs", engine="cpu", privacy_tier="pii", replicas={"dc-ash": 2, "dc-ams": 2},
                           routing={"us-east": {"dc-ash": 1.0}, "eu-west": {"dc-ams": 1.0}}, latency_ms={},
                           slo_p99_ms=100, failover={"us-east": ["dc-ash", "dc-ams"]}, cost_usd_per_hour=1,
                           explanation={"summary": ""})
    assert [b.site for b in planning.region_route(env, p, pp, "us-east", "dc-ash").backends] == ["dc-ash"]
    assert [b.site for b in planning.region_route(env, p, pp, "eu-west", "dc-ams").backends] == ["dc-ams"]


def test_tenant_budgets_split_over_entries_add_up_to_the_spec():
    env = Environment.model_validate(SMALL_SPEC)
    entries = {"us-east": {"standard": "dc-ash"}, "eu-west": {"standard": "dc-ams"}}
    budgets = planning.tenant_budgets(env, entries)
    by_entry = {b.entry: b.tokens_per_minute for b in budgets if b.tenant == "t1" and b.pipeline == "chat"}
    # chat: 20 rps from us-east, 5 from eu-west -> 80 % / 20 % of 1000 tokens/min
    assert by_entry == {"dc-ash": 800, "dc-ams": 200}


def test_variant_replicas_follow_weights_and_keep_one_each():
    env = load_environment("local")
    p = env.pipeline("chat-small")  # base 90 / tuned 10
    assert planning.variant_replicas(p, 2) == {"base": 1, "tuned": 1}
    assert planning.variant_replicas(p, 10) == {"base": 9, "tuned": 1}
    assert planning.variant_replicas(env.pipeline("code-assist"), 3) == {"": 3}


def test_scaling_bounds():
    env = load_environment("local")
    code = env.pipeline("code-assist")          # scale_to_zero: true
    s = planning.scaling(code, 2)
    assert (s.min_replicas, s.max_replicas, s.scale_to_zero) == (0, 4, True)
    chat = env.pipeline("chat-small")
    s = planning.scaling(chat, 3)
    assert (s.min_replicas, s.max_replicas, s.queue_threshold) == (3, 6, chat.autoscaling.target_queue_depth)


def test_replica_spans_nodes_only_when_gpus_exceed_a_node():
    spec = {**SMALL_SPEC}
    env = Environment.model_validate(spec)
    chat = env.pipeline("chat")                 # 8 x H100; p5 has 8 per node
    assert planning.replica_group_size(env, "aws-use1", chat) == 1
    big = chat.model_copy(update={"resources": chat.resources.model_copy(
        update={"gpu": chat.resources.gpu.model_copy(update={"count": 16})})})
    assert planning.replica_group_size(env, "aws-use1", big) == 2
    assert planning.model_cache_gib(env, "aws-use1", big) >= 8 * 80


def test_speculative_config():
    env = load_environment("local")
    assert planning.speculative_config(env.pipeline("chat-small")) == {
        "method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    dev = load_environment("dev")
    assert planning.speculative_config(dev.pipeline("chat-70b-000")) == {
        "model": "meta-llama/Llama-3.2-1B-Instruct", "num_speculative_tokens": 5}
    assert planning.speculative_config(dev.pipeline("chat-8b-002")) is None


def test_site_cidrs():
    env = Environment.model_validate(SMALL_SPEC)
    cidrs = planning.site_cidrs(env)
    assert cidrs["aws-use1"] == ["10.0.0.0/16"]
    assert cidrs["dc-ash"] == ["10.1.1.0/24", "10.1.2.0/24"]


@pytest.mark.parametrize("name", ["local", "dev"])
def test_routes_of_shipped_plans(name):
    env = load_environment(name)
    plan = solve(env)
    entries = planning.entry_sites(env, plan.used_sites())
    routes = planning.region_routes(env, plan, entries)
    for pp in plan.pipelines:
        for region, shares in pp.routing.items():
            route = next(r for r in routes if r.pipeline == pp.name and r.region == region)
            assert {b.site for b in route.primaries} == {s for s, x in shares.items() if x > 0}
            assert sum(b.weight for b in route.primaries) == planning.WEIGHT_TOTAL
            rtts = [b.rtt_ms for b in route.failover]
            assert rtts == sorted(rtts)


def test_llm_shadows_are_reported_not_mirrored():
    spec = copy.deepcopy(SMALL_SPEC)
    spec["pipelines"].append({**copy.deepcopy(spec["pipelines"][0]), "name": "chat-v2", "demand_rps": {}})
    spec["pipelines"][0]["shadow"] = {"target": "chat-v2", "percent": 5}
    env = Environment.model_validate(spec)
    pp = PipelinePlacement(name="chat", engine="vllm", privacy_tier="internal", replicas={"aws-use1": 1},
                           routing={"us-east": {"aws-use1": 1.0}}, latency_ms={}, slo_p99_ms=2500, failover={},
                           cost_usd_per_hour=1, explanation={"summary": ""})
    target = pp.model_copy(update={"name": "chat-v2"})
    plan = solve(Environment.model_validate(SMALL_SPEC)).model_copy(update={"pipelines": [pp, target]})
    entries = {"us-east": {"standard": "aws-use1"}}
    assert planning.shadow_mirrors(env, plan, entries) == []
    assert planning.unmirrored_shadows(env) == ["chat"]


def test_a_pipeline_raised_by_what_it_reads_enters_at_its_effective_tier():
    """`recs` declared internal but reading the pii view runs as pii (infra.dataflow): its requests must be
    decrypted only where pii may be held, so it enters at the pii entry, not at the nearer standard one."""
    from tests.workloads.harness import render

    spec = copy.deepcopy(SMALL_SPEC)
    spec["pipelines"][1]["privacy_tier"] = "internal"
    spec["network"] = {**spec["network"], "user_rtt_ms": {
        "us-east": {"aws-use1": 2, "dc-ash": 6, "dc-ams": 85}, "eu-west": {"aws-use1": 78, "dc-ash": 80, "dc-ams": 10}}}
    env = Environment.model_validate(spec)
    plan = solve(env)
    entries = planning.entry_sites(env, plan.used_sites())
    assert entries["us-east"] == {"standard": "aws-use1", "pii": "dc-ash"}
    routes = {r.region: r for r in planning.region_routes(env, plan, entries) if r.pipeline == "recs"}
    assert {region: r.entry for region, r in routes.items()} == {"us-east": "dc-ash", "eu-west": "dc-ams"}

    rendered = render(env, plan)
    entry_routes = [o for o in rendered.k8s("HTTPRoute") if o.obj_name.startswith("recs-")
                    and o.manifest["metadata"]["labels"].get("hybridml.io/user-region") == "us-east"]
    assert [o.site for o in entry_routes] == ["dc-ash"]
    (route,) = entry_routes
    assert [p["sectionName"] for p in route.manifest["spec"]["parentRefs"]] == ["us-east-pii"]
    assert route.manifest["metadata"]["labels"]["hybridml.io/privacy-tier"] == "pii"
