"""data-flow-tier and mirror-target-tier (issue 18, parts 4-5): a plan that puts a reader below its data's tier, or a
shadow's target below its source's tier, fails `hybridml check` naming rule, resource and fix; the shipped plans pass;
a pipeline raised by what it reads is pinned, labelled and judged at its effective tier."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from hybridml.cli import app
from infra import labels as L
from infra.loader import load_environment
from policies.facts import context_for
from policies.placement import solve
from policies.rules import ALL_RULES, RULES_BY_NAME, ResourceView, evaluate
from policies.rules.dataflow import flows_checked
from tests.conftest import REPO

NEW = [RULES_BY_NAME["data-flow-tier"], RULES_BY_NAME["mirror-target-tier"]]


@pytest.fixture(scope="module")
def flows_spec(tmp_path_factory) -> str:
    """local, with recs-home declared internal (it still reads the pii view user-profile) and shadowing embed-text
    (public): both run at pii, in dc-local's pii zone."""
    spec = yaml.safe_load((REPO / "infra" / "environments" / "local.yaml").read_text())
    recs = next(p for p in spec["pipelines"] if p["name"] == "recs-home")
    recs["privacy_tier"] = "internal"
    recs["shadow"] = {"target": "embed-text", "percent": 10}
    path = tmp_path_factory.mktemp("flows") / "local-flows.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def flows_plan(flows_spec):
    env = load_environment(flows_spec)
    return env, solve(env)


def _forced_onto(plan, pipeline: str, site: str, tmp_path) -> str:
    """The plan with `pipeline`'s replicas moved to `site` (a hand-edited plan), as a file."""
    data = plan.model_dump()
    pp = next(p for p in data["pipelines"] if p["name"] == pipeline)
    pp["replicas"] = {site: sum(pp["replicas"].values())}
    pp["routing"] = {r: {site: 1.0} for r in pp["routing"]}
    pp["latency_ms"] = {r: {site: 60.0} for r in pp["routing"]}
    path = tmp_path / f"{pipeline}-on-{site}.json"
    path.write_text(json.dumps(data))
    return str(path)


def _check(spec: str, plan_file: str, tmp_path) -> tuple[int, str, list[dict]]:
    out = tmp_path / "findings.json"
    result = CliRunner().invoke(app, ["check", spec, "--plan", plan_file, "--json", str(out)])
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else []


def test_the_solved_plan_keeps_readers_and_mirror_targets_at_their_tier(flows_plan):
    env, plan = flows_plan
    assert {n: (plan.pipeline(n).privacy_tier, plan.pipeline(n).declared_privacy_tier) for n in ("recs-home", "embed-text")} == \
        {"recs-home": ("pii", "internal"), "embed-text": ("pii", "public")}
    assert set(plan.pipeline("recs-home").replicas) == set(plan.pipeline("embed-text").replicas) == {"dc-local"}
    ctx = context_for(env, plan)
    assert evaluate(NEW, [], ctx) == []
    flows, pairs = flows_checked(ctx)
    assert flows == 6 and pairs >= flows     # 4 reads + 2 shadows, each against every site its reader runs on


def test_a_reader_below_its_data_tier_fails_check(flows_spec, flows_plan, tmp_path):
    _, plan = flows_plan
    code, output, findings = _check(flows_spec, _forced_onto(plan, "recs-home", "aws-use1", tmp_path), tmp_path)
    assert code == 1, output
    assert "data-flow-tier" in output
    [f] = [f for f in findings if f["rule"] == "data-flow-tier"]
    assert f["mandatory"] and f["resource"] == "pipeline recs-home"
    assert f["message"] == ("reads pii feature_view 'user-profile' (pipelines[4].dependencies[0]) but runs on cloud site "
                            "aws-use1, which holds only public, internal")
    assert f["fix"].startswith("re-run placement (hybridml plan)") and "downgrade: {to: <tier>, reason: ...}" in f["fix"]


def test_a_mirror_target_on_a_lower_tier_site_fails_check(flows_spec, flows_plan, tmp_path):
    _, plan = flows_plan
    code, output, findings = _check(flows_spec, _forced_onto(plan, "embed-text", "aws-use1", tmp_path), tmp_path)
    assert code == 1, output
    assert "mirror-target-tier" in output
    [f] = [f for f in findings if f["rule"] == "mirror-target-tier"]
    assert f["mandatory"] and f["resource"] == "pipeline embed-text"
    assert f["message"] == ("receives mirrored pii requests from 'recs-home' (shadow) (pipelines[4].shadow.target) on "
                            "cloud site aws-use1, which holds only public, internal")
    assert "shadow a target placed where the source's tier may be held" in f["fix"]
    # embed-text's own read (help-docs, internal) is allowed on aws-use1: only the mirror is wrong there
    assert not [f for f in findings if f["rule"] == "data-flow-tier"]


def test_the_rules_are_in_the_one_rule_set_of_check_and_crossguard():
    assert all(r in ALL_RULES for r in NEW)
    assert all(r.stack_check is not None and r.group == "placement" for r in NEW)
    from policies.crossguard import policies

    assert {"data-flow-tier", "mirror-target-tier"} <= {p.name for p in policies()}


def test_dev_passes_check_with_the_data_flow_rules():
    result = CliRunner().invoke(app, ["check", "dev"])
    assert result.exit_code == 0, result.output
    assert "0 mandatory violation(s)" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_shipped_plans_pass_the_data_flow_rules(environment):
    env = load_environment(environment)
    ctx = context_for(env, solve(env))
    assert evaluate(NEW, [], ctx) == []
    flows, pairs = flows_checked(ctx)
    assert flows == {"dev": 12, "prod": 200}[environment] and pairs >= flows


# ---------------------------------------------------------------- pods: pinned and judged at the effective tier


def _rendered_recs(flows_spec) -> list[ResourceView]:
    from workloads.render import cpu
    from workloads.render.context import SiteContext

    env = load_environment(flows_spec)
    ctx = SiteContext(env_name=env.name, site="dc-local", site_kind="datacenter", domain="example.test",
                      privacy_zones=("internal", "pii"))
    return [ResourceView(f"kubernetes:{m['apiVersion']}:{m['kind']}", m["metadata"]["name"], m,
                         cluster="dc-local")
            for m in cpu.objects(ctx, env, env.pipeline("recs-home"), 2, "ml-internal", [], False) if m["kind"] == "Deployment"]


def test_a_raised_pipeline_is_pinned_to_its_effective_tier_home_zone(flows_spec):
    env = load_environment(flows_spec)
    [deploy] = _rendered_recs(flows_spec)
    template = deploy.props["spec"]["template"]
    assert template["metadata"]["labels"][L.PRIVACY_TIER] == "pii"
    assert template["metadata"]["labels"][L.DECLARED_PRIVACY_TIER] == "internal"
    terms = template["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == ["pii"]
    assert {"key": L.PRIVACY_TAINT_KEY, "operator": "Equal", "value": "pii", "effect": "NoSchedule"} in template["spec"]["tolerations"]
    ctx = context_for(env)
    assert evaluate([RULES_BY_NAME["privacy-home-zone-pinning"]], [deploy], ctx) == []
    # the same pods pinned by the declared tier (internal racks) are refused: the rule judges the effective tier
    for labels in (deploy.props["metadata"]["labels"], template["metadata"]["labels"]):
        labels[L.PRIVACY_TIER] = "internal"
    terms[0]["matchExpressions"][0]["values"] = ["internal"]
    template["spec"]["tolerations"] = []
    messages = [f.message for f in evaluate([RULES_BY_NAME["privacy-home-zone-pinning"]], [deploy], ctx)]
    assert any("a pii pod on dc-local must require node affinity" in m and "In [pii]" in m for m in messages), messages
    # and on a cloud cluster the pii pods are off their allowed sites
    cloud = ResourceView(deploy.type, deploy.name, deploy.props, cluster="aws-use1")
    assert [f.rule for f in evaluate([RULES_BY_NAME["privacy-tier-on-allowed-cluster"]], [cloud], ctx)] == \
        ["privacy-tier-on-allowed-cluster"]


@pytest.mark.parametrize("pipeline, rule", [("recs-home", "data-flow-tier"), ("embed-text", "mirror-target-tier")])
def test_crossguard_reports_the_broken_variants_from_the_stacks_own_spec_and_plan(flows_spec, flows_plan, tmp_path,
                                                                                  pipeline, rule):
    """The pack's own stack policy (policies/crossguard.py, what `pulumi preview --policy-pack` runs), given the stack
    config the engine hands it: the hand-edited plan is judged as `hybridml check --plan` judges it. (Through the real
    engine a plan like this never reaches the pack: the program refuses to render it first.)"""
    from types import SimpleNamespace

    from policies import crossguard

    _, plan = flows_plan
    tampered = _forced_onto(plan, pipeline, "aws-use1", tmp_path)
    policy = next(p for p in crossguard.policies() if p.name == rule)
    crossguard.record_stack("broken", {crossguard.SPEC_KEY: flows_spec, crossguard.PLAN_KEY: tampered})
    try:
        reported: list[str] = []
        policy.validate(SimpleNamespace(resources=[]), lambda message, urn=None: reported.append(message))
        crossguard.record_stack("solved", {crossguard.SPEC_KEY: flows_spec})
        clean: list[str] = []
        policy.validate(SimpleNamespace(resources=[]), lambda message, urn=None: clean.append(message))
    finally:
        crossguard._STACK.update(stack=None, config=None)
    assert len(reported) == 1 and reported[0].startswith(f"pipeline {pipeline}: "), reported
    assert "cloud site aws-use1, which holds only public, internal. Fix: " in reported[0]
    assert clean == []
