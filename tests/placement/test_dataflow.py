"""Privacy follows the data (issue 18, part 1): a pipeline runs at the tier of what it reads and of the requests
mirrored to it, unless a dependency declares a downgrade; placement, --explain and infeasibility say so."""
from __future__ import annotations

import copy

import pytest
from typer.testing import CliRunner

from hybridml.cli import app
from infra.dataflow import data_flows, effective_tier, pipeline_tier
from infra.errors import PlacementInfeasible
from infra.loader import parse_environment
from infra.spec import PrivacyTier
from policies.placement import solve
from policies.placement.eligibility import eligibility
from tests.conftest import dump
from tests.placement.invariants import assert_plan_valid

DOWNGRADE = {"to": "internal", "reason": "aggregated counts, no per-user values"}


def _reader(spec: dict, **dep: object) -> dict:
    """small_spec with `recs` declared internal, still reading the pii view `user-profile`."""
    spec["pipelines"][1]["privacy_tier"] = "internal"
    spec["pipelines"][1]["dependencies"][0].update(dep)
    return spec


def _mirror(spec: dict) -> dict:
    """small_spec plus `recs-v2`, a public copy of `recs` without demand or data that `recs` (pii) shadows."""
    target = copy.deepcopy(spec["pipelines"][1])
    target.update(name="recs-v2", privacy_tier="public", demand_rps={}, min_replicas=1, dependencies=[])
    spec["pipelines"].append(target)
    spec["pipelines"][1]["shadow"] = {"target": "recs-v2", "percent": 50}
    return spec


# ---------------------------------------------------------------- the pure function


def test_effective_tier_is_the_highest_of_own_reads_and_mirrors(small_spec):
    env = parse_environment(dump(_mirror(_reader(small_spec))))
    recs = pipeline_tier(env, "recs")
    assert (recs.declared, recs.effective, recs.raised) == (PrivacyTier.internal, PrivacyTier.pii, True)
    [flow] = recs.raised_by
    assert (flow.kind, flow.source, flow.tier, flow.counts_as) == ("feature_view", "user-profile", PrivacyTier.pii, PrivacyTier.pii)
    assert flow.field == "pipelines[1].dependencies[0]"
    assert recs.because() == "pii by data flow: reads pii feature_view 'user-profile' (pipelines[1].dependencies[0])"
    # the shadow's target gets the source's effective tier: mirrored requests carry the source's data
    mirror = pipeline_tier(env, "recs-v2")
    assert (mirror.declared, mirror.effective) == (PrivacyTier.public, PrivacyTier.pii)
    assert [f.describe() for f in mirror.raised_by] == ["mirrored pii requests from 'recs' (shadow)"]
    assert mirror.raised_by[0].field == "pipelines[1].shadow.target"
    # chat reads nothing and is mirrored nothing
    chat = pipeline_tier(env, "chat")
    assert (chat.effective, chat.flows, chat.because()) == (PrivacyTier.internal, (), "")


def test_a_declared_downgrade_counts_at_its_tier(small_spec):
    env = parse_environment(dump(_reader(small_spec, downgrade=DOWNGRADE)))
    recs = pipeline_tier(env, "recs")
    assert recs.effective is PrivacyTier.internal and not recs.raised and recs.raised_by == ()
    [flow] = recs.flows
    assert (flow.tier, flow.counts_as) == (PrivacyTier.pii, PrivacyTier.internal)
    assert flow.describe() == ("reads pii feature_view 'user-profile', counted internal by its declared downgrade "
                               "(aggregated counts, no per-user values)")
    # a downgrade never lowers a pipeline below its own tier
    small_spec["pipelines"][1]["privacy_tier"] = "pii"
    assert effective_tier(parse_environment(dump(small_spec)), "recs") is PrivacyTier.pii


def test_shadow_chains_and_circles_settle(small_spec):
    spec = _mirror(_reader(small_spec))
    third = copy.deepcopy(spec["pipelines"][2])
    third.update(name="recs-v3")
    spec["pipelines"].append(third)
    spec["pipelines"][2]["shadow"] = {"target": "recs-v3", "percent": 10}
    spec["pipelines"][3]["shadow"] = {"target": "recs", "percent": 10}       # back to the start: a circle
    env = parse_environment(dump(spec))
    flows = data_flows(env)
    assert {name: t.effective.value for name, t in flows.tiers.items()} == \
        {"chat": "internal", "recs": "pii", "recs-v2": "pii", "recs-v3": "pii"}
    assert sorted(t.name for t in flows.raised) == ["recs", "recs-v2", "recs-v3"]
    assert len(flows.flows) == 4    # one read, three shadows


# ---------------------------------------------------------------- the spec: downgrade validation


@pytest.mark.parametrize("downgrade, field, words", [
    ({"to": "pii", "reason": "x"}, "pipelines[1].dependencies[0].downgrade.to", "not below the pii tier of feature_view 'user-profile'"),
    ({"to": "restricted", "reason": "x"}, "pipelines[1].dependencies[0].downgrade.to", "'public', 'internal' or 'pii'"),
    ({"to": "internal", "reason": "  "}, "pipelines[1].dependencies[0].downgrade.reason", "a downgrade needs its reason"),
    ({"to": "internal"}, "pipelines[1].dependencies[0].downgrade.reason", "missing"),
    ({"to": "secret", "reason": "x"}, "pipelines[1].dependencies[0].downgrade.to", "'public', 'internal' or 'pii'"),
])
def test_a_bad_downgrade_is_a_spec_error_with_file_line_and_field(tmp_path, small_spec, downgrade, field, words):
    small_spec["pipelines"][1]["dependencies"][0]["downgrade"] = downgrade
    path = tmp_path / "bad.yaml"
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["plan", str(path)])
    assert result.exit_code == 2, result.output
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "downgrade" in text)
    hit = next((ln for ln in result.output.splitlines() if f"{field}:" in ln), "")
    assert f"bad.yaml:{line}" in hit or f"bad.yaml:{line + 1}" in hit or f"bad.yaml:{line + 2}" in hit, result.output
    assert words in result.output, result.output


# ---------------------------------------------------------------- placement: eligibility, explain, infeasibility


def test_a_reader_runs_where_its_data_may_be_and_explain_names_the_flow(tmp_path, small_spec):
    env = parse_environment(dump(_reader(small_spec)))
    el = eligibility(env)
    assert el.rejected["recs"]["aws-use1"] == (
        "data flow: reads pii feature_view 'user-profile' (declare a downgrade to read it from an internal site); "
        "site holds public, internal")
    plan = solve(env)
    assert_plan_valid(env, plan)
    recs = plan.pipeline("recs")
    assert (recs.privacy_tier, recs.declared_privacy_tier) == ("pii", "internal")
    assert set(recs.replicas) == {"dc-ash", "dc-ams"}
    assert recs.routing["eu-west"] == {"dc-ams": 1.0}            # pii requests stay in their jurisdiction
    assert recs.explanation.rejected["aws-use1"].startswith("data flow: reads pii feature_view 'user-profile'")
    assert "data flow: runs as pii (declared internal): reads pii feature_view 'user-profile'" in recs.explanation.binding
    path = tmp_path / "reader.yaml"
    path.write_text(dump(small_spec))
    result = CliRunner().invoke(app, ["plan", str(path), "--explain", "recs"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "aws-use1: data flow: reads pii feature_view 'user-profile'" in result.output


def test_with_a_downgrade_the_reader_may_use_an_internal_site(small_spec):
    small_spec["pipelines"][1]["demand_rps"] = {"us-east": 3000, "eu-west": 0}   # more than dc-ash's internal rack holds
    env = parse_environment(dump(_reader(small_spec, downgrade=DOWNGRADE)))
    plan = solve(env)
    assert_plan_valid(env, plan)
    recs = plan.pipeline("recs")
    assert (recs.privacy_tier, recs.declared_privacy_tier) == ("internal", None)
    assert "aws-use1" in recs.replicas
    assert any(b.startswith("data flow: reads pii feature_view 'user-profile', counted internal by its declared downgrade")
               for b in recs.explanation.binding)


def test_a_shadow_target_is_placed_at_its_source_tier(small_spec):
    env = parse_environment(dump(_mirror(small_spec)))
    assert eligibility(env).rejected["recs-v2"]["aws-use1"].startswith("data flow: mirrored pii requests from 'recs' (shadow)")
    plan = solve(env)
    assert_plan_valid(env, plan)
    target = plan.pipeline("recs-v2")
    assert (target.privacy_tier, target.declared_privacy_tier) == ("pii", "public")
    assert set(target.replicas) <= {"dc-ash", "dc-ams"}


def test_infeasible_spec_names_the_dependency_that_forced_the_tier(small_spec):
    small_spec["pipelines"][0]["dependencies"] = [{"feature_view": "user-profile", "latency_budget_ms": 200}]
    env = parse_environment(dump(small_spec))
    with pytest.raises(PlacementInfeasible) as info:
        solve(env)
    [reason] = [r for r in info.value.reasons if r.pipeline == "chat"]
    assert reason.detail.startswith("no site can hold pii with 8xH100 (declared internal; pii by data flow: reads pii "
                                    "feature_view 'user-profile' (pipelines[0].dependencies[0])): ")
    assert "aws-use1: data flow: reads pii feature_view 'user-profile'" in reason.detail
    assert "downgrade" in reason.hint
    # declared, the same read is fine: chat stays on the only H100 site
    small_spec["pipelines"][0]["dependencies"][0]["downgrade"] = DOWNGRADE
    plan = solve(parse_environment(dump(small_spec)))
    assert set(plan.pipeline("chat").replicas) == {"aws-use1"}

