"""plan-packs: `hybridml check` (and the pack) refuse a plan whose pods do not fit the nodes it buys."""
from __future__ import annotations

import pytest

from infra.loader import load_environment
from policies.facts import context_for
from policies.placement import solve
from policies.rules import RULES_BY_NAME, evaluate

RULE = RULES_BY_NAME["plan-packs"]


@pytest.fixture(scope="module")
def dev():
    env = load_environment("dev")
    return env, solve(env)


def test_a_solved_plan_packs(dev):
    env, plan = dev
    assert evaluate([RULE], [], context_for(env, plan)) == []


def test_a_plan_short_of_nodes_is_refused(dev):
    env, plan = dev
    site = next(s for s in plan.sites if s.kind == "cloud" and any(g.nodes > 1 and g.pods for g in s.node_groups))
    group = next(g for g in site.node_groups if g.nodes > 1 and g.pods)
    shrunk = group.model_copy(update={"nodes": 1})
    sites = [s.model_copy(update={"node_groups": [shrunk if g is group else g for g in s.node_groups]}) if s is site else s
             for s in plan.sites]
    findings = evaluate([RULE], [], context_for(env, plan.model_copy(update={"sites": sites})))
    assert findings and all(f.rule == "plan-packs" and f.mandatory for f in findings)
    assert any(site.name in f.message for f in findings), [f.message for f in findings]
